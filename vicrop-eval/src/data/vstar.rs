//! V* Bench (Hugging Face dataset `craigwu/vstar_bench`, from GitHub `penghao-wu/vstar`):
//! `test_questions.jsonl` plus the per-image annotation JSONs beside the images.
//!
//! Each line of `test_questions.jsonl` is `{"image": "direct_attributes/sa_4690.jpg", "text":
//! "<question>\n(A) <option>\n(B) <option>...\nAnswer with the option's letter from the given
//! choices directly.", "category": "direct_attributes", "question_id": 0, "label": "A"}` (191
//! lines: `direct_attributes`, `relative_position`). Items: id = `question_id`, question =
//! `text` as written, labels = `[label]` (the correct letter), category = `category`,
//! short_question = the first line of `text` (the question without its options, for the map
//! passes), options = the lines of `text` between the first and the last, as written
//! (`"(A) red"`): exactly the candidates the reference's scorer (`get_score.py`,
//! `question.split('\n')[1:-1]`) matches a prediction against; they must read `(A) `, `(B) `,
//! ... in order.
//!
//! Each image `X.jpg` has an annotation `X.json` beside it: `{"target_object": [names],
//! "bbox": [[x, y, w, h], ...], "question": ..., "options": [the correct option first, ...]}`.
//! Its `bbox` list gives the item's answer boxes. A missing annotation is not an error (no
//! boxes); a malformed one is. Lines without `label` (the hub file gained labels in a later
//! revision) take it from the annotation: the letter of its first option.
//!
//! `--data`: `test_questions.jsonl`, or the benchmark folder holding it. Image root: the folder
//! of that file, or [`LoadOptions::images`].

use std::path::Path;

use serde_json::Value;

use super::json;
use super::{
    parent_of, resolve_file, xywh_to_corners, DataError, Dataset, Format, Item, ItemSink,
    LoadOptions,
};

/// The file looked for when `--data` is a folder.
pub const FILE_NAME: &str = "test_questions.jsonl";

/// Loads V* Bench (see the module docs).
pub fn load(data: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let file = resolve_file(data, &[FILE_NAME], Format::VStar)?;
    let image_root = options.images.clone().unwrap_or_else(|| parent_of(&file));
    let text = json::read_text(&file)?;
    let mut sink = ItemSink::new(&file);
    json::for_each_line(&file, &text, |at, value| {
        sink.push(at, record(&value, &image_root))
    })?;
    let items = sink.into_items();
    Ok(Dataset {
        format: Format::VStar,
        file,
        extra_files: Vec::new(),
        image_root,
        items,
    })
}

/// The option lines of a V* question: the lines between the first and the last, as the
/// reference's scorer takes them (`question.split('\n')[1:-1]`); empty for fewer than 3 lines.
pub fn option_lines(question: &str) -> Vec<String> {
    let lines: Vec<&str> = question.split('\n').collect();
    if lines.len() < 3 {
        return Vec::new();
    }
    lines[1..lines.len() - 1]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The letter of option `i` (`A` for 0).
fn letter(i: usize) -> Option<char> {
    u8::try_from(i)
        .ok()
        .filter(|&i| i < 26)
        .map(|i| char::from(b'A' + i))
}

/// The option text after its `(X) ` prefix.
fn option_text(line: &str) -> &str {
    line.get(4..).unwrap_or("").trim()
}

fn record(value: &Value, image_root: &Path) -> Result<Item, String> {
    let obj = json::object(value)?;
    let id = json::id(obj, "question_id")?;
    let image_rel = json::text(obj, "image")?;
    let question = json::text(obj, "text")?.to_string();
    let category = json::opt_string(obj, "category")?.map(str::to_string);

    let options = option_lines(&question);
    if options.len() < 2 {
        return Err(
            "field \"text\" must be the question, option lines \"(A) ...\", \"(B) ...\" and \
             an instruction line; it has fewer than two option lines"
                .into(),
        );
    }
    for (i, line) in options.iter().enumerate() {
        let expected = format!("({}) ", letter(i).unwrap_or('?'));
        if !line.starts_with(&expected) {
            return Err(format!(
                "field \"text\": option line {} is {line:?}, expected it to start with {expected:?}",
                i + 1
            ));
        }
    }
    let short_question = question
        .split('\n')
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);

    let image = image_root.join(image_rel);
    let annotation_path = image.with_extension("json");
    let annotation = if annotation_path.is_file() {
        Some(
            read_annotation(&annotation_path)
                .map_err(|e| format!("annotation {}: {e}", annotation_path.display()))?,
        )
    } else {
        None
    };

    let label = match json::opt_string(obj, "label")? {
        Some(l) => l.trim().to_string(),
        None => {
            let correct = annotation
                .as_ref()
                .and_then(|a| a.correct.as_deref())
                .ok_or_else(|| {
                    format!(
                        "field \"label\" is missing and there is no annotation {} whose first \
                         option names the answer: the item has no labels",
                        annotation_path.display()
                    )
                })?;
            let i = options
                .iter()
                .position(|line| option_text(line) == correct.trim())
                .ok_or_else(|| {
                    format!(
                        "field \"label\" is missing and the annotation's correct option \
                         {correct:?} is not among the question's options"
                    )
                })?;
            letter(i).map(String::from).unwrap_or_default()
        }
    };
    let valid = (0..options.len())
        .filter_map(letter)
        .any(|c| label == c.to_string());
    if !valid {
        return Err(format!(
            "field \"label\" is {label:?}, not one of the option letters A-{}",
            letter(options.len() - 1).unwrap_or('?')
        ));
    }

    Ok(Item {
        id,
        image,
        question,
        labels: vec![label],
        short_question,
        options: Some(options),
        boxes: annotation.map(|a| a.boxes).unwrap_or_default(),
        image_size: None,
        category,
    })
}

/// What an annotation JSON gives: the target boxes and the correct option's text.
struct Annotation {
    boxes: Vec<[f32; 4]>,
    correct: Option<String>,
}

fn read_annotation(path: &Path) -> Result<Annotation, String> {
    let text = json::read_text(path).map_err(|e| match e {
        DataError::Io { source, .. } => format!("cannot be read: {source}"),
        other => other.to_string(),
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = json::object(&value)?;
    let boxes = match obj.get("bbox") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let what = format!("field \"bbox\"[{i}]");
                json::four_numbers(b, &what)
                    .and_then(|b| xywh_to_corners(b).map_err(|e| format!("{what}: {e}")))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(format!(
                "field \"bbox\" must be a list of [x, y, w, h], found {}",
                json::kind(v)
            ))
        }
    };
    let correct = match obj.get("options") {
        None | Some(Value::Null) => None,
        Some(_) => json::string_list(obj, "options")?.into_iter().next(),
    };
    Ok(Annotation { boxes, correct })
}

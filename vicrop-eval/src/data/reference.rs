//! The ViCrop reference repo's unified `data.json` (GitHub `saccharomycetes/mllms_know`,
//! README "Dataset processing (to a unified format)", read by `run.py`), for any task.
//!
//! The file is a JSON list of records:
//!
//! | field | | |
//! |---|---|---|
//! | `id` | string or integer | the item id (the README writes the record's index zero-padded to 10 digits) |
//! | `question` | string | |
//! | `labels` | list of strings, or one string | the ground truth; one string (the reference's POPE `"yes"`/`"no"`, V* `"A"`) becomes a one-label list |
//! | `image_path` | string | relative to the image root (absolute paths stay absolute) |
//! | `image_id` | string or integer | used only without `image_path`: the image is `{image_id}.jpg`, as `run.py` does |
//! | `short_question` | string, optional | the question for the map passes |
//!
//! Extensions this project reads (absent from the reference's files): `options` (list of
//! strings) and `boxes` (list of `[x0, y0, x1, y1]` answer boxes in image pixels). The
//! reference's own output fields are ignored, in particular `bbox`, which `run.py` writes as
//! the *crop* box it chose, not an answer box (so a results file loads as its input).
//!
//! `--data`: the `data.json` file, or a folder holding it. Image root: `images/` next to
//! `data.json` (the reference's `./data/<task>/images` beside `./data/<task>/data.json`), or
//! [`LoadOptions::images`].

use std::path::Path;

use serde_json::{Map, Value};

use super::json::{self, Container};
use super::{parent_of, resolve_file, DataError, Dataset, Format, Item, ItemSink, LoadOptions};

/// The file looked for when `--data` is a folder.
pub const FILE_NAME: &str = "data.json";

/// Loads a reference `data.json` (see the module docs).
pub fn load(data: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let file = resolve_file(data, &[FILE_NAME], Format::Reference)?;
    let image_root = options
        .images
        .clone()
        .unwrap_or_else(|| parent_of(&file).join("images"));
    let text = json::read_text(&file)?;
    let mut sink = ItemSink::new(&file);
    json::for_each_record(&file, &text, Container::List, &[], |at, value| {
        sink.push(at, record(&value, &image_root))
    })?;
    let items = sink.into_items();
    Ok(Dataset {
        format: Format::Reference,
        file,
        extra_files: Vec::new(),
        image_root,
        items,
    })
}

fn record(value: &Value, image_root: &Path) -> Result<Item, String> {
    let obj = json::object(value)?;
    let id = json::id(obj, "id")?;
    let question = json::text(obj, "question")?.to_string();
    let labels = labels(obj)?;
    let image = match json::opt_string(obj, "image_path")? {
        Some(p) if !p.trim().is_empty() => image_root.join(p),
        Some(_) => return Err("field \"image_path\" is empty".into()),
        None => match obj.get("image_id") {
            None | Some(Value::Null) => {
                return Err("field \"image_path\" is missing (and there is no \"image_id\")".into())
            }
            Some(_) => image_root.join(format!("{}.jpg", json::id(obj, "image_id")?)),
        },
    };
    let short_question = json::opt_string(obj, "short_question")?.map(str::to_string);
    let options = match obj.get("options") {
        None | Some(Value::Null) => None,
        Some(_) => Some(json::string_list(obj, "options")?),
    };
    let boxes = match obj.get("boxes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, b)| corners(b, i))
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(format!(
                "field \"boxes\" must be a list of [x0, y0, x1, y1], found {}",
                json::kind(v)
            ))
        }
    };
    Ok(Item {
        id,
        image,
        question,
        labels,
        short_question,
        options,
        boxes,
        image_size: None,
        category: None,
    })
}

/// `labels`: a non-empty list of strings, or one non-empty string.
fn labels(obj: &Map<String, Value>) -> Result<Vec<String>, String> {
    match json::required(obj, "labels")? {
        Value::String(s) if s.trim().is_empty() => {
            Err("field \"labels\" is an empty string: the item has no labels".into())
        }
        Value::String(s) => Ok(vec![s.clone()]),
        _ => json::labels(obj, "labels"),
    }
}

/// One `[x0, y0, x1, y1]` of `boxes`.
fn corners(v: &Value, i: usize) -> Result<[f32; 4], String> {
    let what = format!("field \"boxes\"[{i}]");
    let [x0, y0, x1, y1] = json::four_numbers(v, &what)?;
    if !(x1 > x0 && y1 > y0) {
        return Err(format!(
            "{what} [{x0}, {y0}, {x1}, {y1}] is not [x0, y0, x1, y1] with x0 < x1 and y0 < y1"
        ));
    }
    Ok([x0 as f32, y0 as f32, x1 as f32, y1 as f32])
}

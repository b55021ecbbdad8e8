//! GQA balanced questions (<https://cs.stanford.edu/people/dorarad/gqa/download.html>,
//! `questions1.2.zip`), e.g. `testdev_balanced_questions.json`.
//!
//! The file is a JSON object mapping question ids to records with `imageId`, `question`,
//! `answer` (the label), `fullAnswer`, and fields not read here (`semantic`, `semanticStr`,
//! `entailed`, `equivalent`, `isBalanced`, `groups`, `annotations`, `types`). Items: id = the
//! key, labels = `[answer]` (the reference scores "the answer is contained in the
//! prediction"). The image is `images/{imageId}.jpg` (`images.zip`). The test and challenge
//! files carry no answers and are rejected (no labels).
//!
//! `--data`: the questions file, or a folder holding `testdev_balanced_questions.json`. Image
//! root: the folder of that file, or [`LoadOptions::images`] (the folder that holds `images/`).

use std::path::Path;

use serde_json::Value;

use super::json::{self, Container};
use super::{parent_of, resolve_file, DataError, Dataset, Format, Item, ItemSink, LoadOptions};

/// The file looked for when `--data` is a folder.
pub const FILE_NAME: &str = "testdev_balanced_questions.json";

/// Loads GQA (see the module docs).
pub fn load(data: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let file = resolve_file(data, &[FILE_NAME], Format::Gqa)?;
    let image_root = options.images.clone().unwrap_or_else(|| parent_of(&file));
    let text = json::read_text(&file)?;
    let mut sink = ItemSink::new(&file);
    json::for_each_record(&file, &text, Container::Map, &[], |at, value| {
        let super::Location::Key(id) = &at else {
            return Ok(());
        };
        let made = record(id, &value, &image_root);
        sink.push(at, made)
    })?;
    let items = sink.into_items();
    Ok(Dataset {
        format: Format::Gqa,
        file,
        extra_files: Vec::new(),
        image_root,
        items,
    })
}

fn record(id: &str, value: &Value, image_root: &Path) -> Result<Item, String> {
    let obj = json::object(value)?;
    let image_id = json::id(obj, "imageId")?;
    let question = json::text(obj, "question")?.to_string();
    let answer = match obj.get("answer") {
        None | Some(Value::Null) => {
            return Err("field \"answer\" is missing: the item has no labels \
                        (GQA's test and challenge files carry no answers)"
                .into())
        }
        Some(_) => json::string(obj, "answer")?,
    };
    if answer.trim().is_empty() {
        return Err("field \"answer\" is empty: the item has no labels".into());
    }
    Ok(Item {
        id: id.to_string(),
        image: image_root.join("images").join(format!("{image_id}.jpg")),
        question,
        labels: vec![answer.to_string()],
        short_question: None,
        options: None,
        boxes: Vec::new(),
        image_size: None,
        category: None,
    })
}

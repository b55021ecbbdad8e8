//! DocVQA, Task 1 "Single Page Document VQA" (<https://rrc.cvc.uab.es/?ch=17&com=downloads>):
//! `val/val_v1.0_withQT.json` (or `val_v1.0.json`) with the page images in `val/documents/`.
//!
//! The file is a JSON object (`dataset_name`, `dataset_split`, `dataset_version`) whose `data`
//! list holds records with `questionId` (integer), `question`, `image`
//! (`documents/pybv0228_81.png`, relative to the JSON's folder), `answers` (the accepted
//! answers, the labels), and fields not read here (`question_types`, `docId`,
//! `ucsf_document_id`, `ucsf_document_page_no`, `data_split`). The test file has no `answers`
//! and is rejected (no labels).
//!
//! `--data`: the file, or the folder holding `val_v1.0_withQT.json` or `val_v1.0.json`. Image
//! root: the folder of that file, or [`LoadOptions::images`].

use std::path::Path;

use serde_json::Value;

use super::json::{self, Container};
use super::{parent_of, resolve_file, DataError, Dataset, Format, Item, ItemSink, LoadOptions};

/// The files looked for, in order, when `--data` is a folder.
pub const FILE_NAMES: [&str; 2] = ["val_v1.0_withQT.json", "val_v1.0.json"];

/// Loads DocVQA (see the module docs).
pub fn load(data: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let file = resolve_file(data, &FILE_NAMES, Format::DocVqa)?;
    let image_root = options.images.clone().unwrap_or_else(|| parent_of(&file));
    let text = json::read_text(&file)?;
    let mut sink = ItemSink::new(&file);
    json::for_each_record(&file, &text, Container::ListAt("data"), &[], |at, value| {
        sink.push(at, record(&value, &image_root))
    })?;
    let items = sink.into_items();
    Ok(Dataset {
        format: Format::DocVqa,
        file,
        extra_files: Vec::new(),
        image_root,
        items,
    })
}

fn record(value: &Value, image_root: &Path) -> Result<Item, String> {
    let obj = json::object(value)?;
    let id = json::id(obj, "questionId")?;
    let question = json::text(obj, "question")?.to_string();
    let image = json::text(obj, "image")?;
    let labels = match obj.get("answers") {
        None | Some(Value::Null) => {
            return Err("field \"answers\" is missing: the item has no labels \
                        (the DocVQA test file carries none)"
                .into())
        }
        Some(_) => json::labels(obj, "answers")?,
    };
    Ok(Item {
        id,
        image: image_root.join(image),
        question,
        labels,
        short_question: None,
        options: None,
        boxes: Vec::new(),
        image_size: None,
        category: None,
    })
}

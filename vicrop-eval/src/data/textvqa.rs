//! TextVQA 0.5.1 (<https://textvqa.org/dataset/>): `TextVQA_0.5.1_val.json`, and optionally the
//! ViCrop authors' ground-truth answer boxes (Hugging Face dataset `jrzhang/TextVQA_GT_bbox`).
//!
//! The questions file is a JSON object whose `data` list holds records with `question_id`
//! (integer, the item id), `image_id` (string), `question`, `answers` (10 human answers, the
//! labels), `image_width`, `image_height`, `set_name` (`train`, `val`, `test`) and fields not
//! read here (`question_tokens`, `image_classes`, `flickr_original_url`, `flickr_300k_url`).
//! The image is `train_images/{image_id}.jpg` (validation images ship in `train_images/`
//! inside `train_val_images.zip`; `test_images/` for `set_name` `test`).
//!
//! The box set has one row per annotated validation question (4,370 of the 5,000): `dataset_id`
//! (the TextVQA `question_id`, as a string), `bbox` `[x, y, w, h]` in image pixels, `question`,
//! `answer` and the image. It is published as Parquet; export it without the images to JSON
//! lines once (`docs/evaluation.md`):
//! `load_dataset("jrzhang/TextVQA_GT_bbox")["train"].remove_columns("image").to_json("TextVQA_GT_bbox.jsonl")`.
//! This loader reads that file (JSON lines, or a JSON list), taking `dataset_id` and `bbox`;
//! several rows with one id give several boxes. Rows whose id is not a question of the
//! dataset are skipped with a warning.
//!
//! `--data`: `TextVQA_0.5.1_val.json`, or a folder holding it. Image root: the folder of that
//! file, or [`LoadOptions::images`]. Boxes: [`LoadOptions::boxes`], else
//! `TextVQA_GT_bbox.jsonl` (or `.json`) next to the questions file if there is one.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::json::{self, Container};
use super::{
    parent_of, resolve_file, xywh_to_corners, DataError, Dataset, Format, Item, ItemSink,
    LoadOptions, Location,
};

/// The file looked for when `--data` is a folder.
pub const FILE_NAME: &str = "TextVQA_0.5.1_val.json";
/// The box-set file names picked up next to the questions file.
pub const BOXES_FILE_NAMES: [&str; 2] = ["TextVQA_GT_bbox.jsonl", "TextVQA_GT_bbox.json"];

/// Loads TextVQA (see the module docs).
pub fn load(data: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let file = resolve_file(data, &[FILE_NAME], Format::TextVqa)?;
    let folder = parent_of(&file);
    let image_root = options.images.clone().unwrap_or_else(|| folder.clone());
    let text = json::read_text(&file)?;
    let mut sink = ItemSink::new(&file);
    json::for_each_record(&file, &text, Container::ListAt("data"), &[], |at, value| {
        sink.push(at, record(&value, &image_root))
    })?;
    let mut items = sink.into_items();

    let boxes_file = match &options.boxes {
        Some(path) => Some(path.clone()),
        None => BOXES_FILE_NAMES
            .iter()
            .map(|name| folder.join(name))
            .find(|p| p.is_file()),
    };
    let mut extra_files = Vec::new();
    if let Some(boxes_file) = boxes_file {
        let boxes = load_boxes(&boxes_file)?;
        attach_boxes(&mut items, boxes, &boxes_file);
        extra_files.push(boxes_file);
    }
    Ok(Dataset {
        format: Format::TextVqa,
        file,
        extra_files,
        image_root,
        items,
    })
}

fn record(value: &Value, image_root: &Path) -> Result<Item, String> {
    let obj = json::object(value)?;
    let id = json::id(obj, "question_id")?;
    let image_id = json::text(obj, "image_id")?;
    let question = json::text(obj, "question")?.to_string();
    let labels = json::labels(obj, "answers")?;
    let folder = match json::opt_string(obj, "set_name")? {
        Some("test") => "test_images",
        _ => "train_images",
    };
    let image_size = match (
        json::opt_u32(obj, "image_width")?,
        json::opt_u32(obj, "image_height")?,
    ) {
        (Some(w), Some(h)) => Some((w, h)),
        _ => None,
    };
    Ok(Item {
        id,
        image: image_root.join(folder).join(format!("{image_id}.jpg")),
        question,
        labels,
        short_question: None,
        options: None,
        boxes: Vec::new(),
        image_size,
        category: None,
    })
}

/// The boxes of a box-set file (JSON lines or a JSON list of rows with `dataset_id` and `bbox`
/// `[x, y, w, h]`) by question id, as `[x0, y0, x1, y1]`, in file order.
pub fn load_boxes(file: &Path) -> Result<HashMap<String, Vec<[f32; 4]>>, DataError> {
    let text = json::read_text(file)?;
    let mut boxes: HashMap<String, Vec<[f32; 4]>> = HashMap::new();
    let mut take = |at: Location, value: Value| -> Result<(), DataError> {
        let (id, b) = box_row(&value).map_err(|message| DataError::Record {
            file: file.to_path_buf(),
            at,
            message,
        })?;
        boxes.entry(id).or_default().push(b);
        Ok(())
    };
    if text.trim_start().starts_with('[') {
        json::for_each_record(file, &text, Container::List, &[], &mut take)?;
    } else {
        json::for_each_line(file, &text, &mut take)?;
    }
    Ok(boxes)
}

fn box_row(value: &Value) -> Result<(String, [f32; 4]), String> {
    let obj = json::object(value)?;
    let id = json::id(obj, "dataset_id")?;
    let b = json::four_numbers(json::required(obj, "bbox")?, "field \"bbox\"")?;
    Ok((id, xywh_to_corners(b)?))
}

/// Gives each item the boxes of its id; warns about box rows that match no item.
fn attach_boxes(items: &mut [Item], mut boxes: HashMap<String, Vec<[f32; 4]>>, file: &Path) {
    for item in items.iter_mut() {
        if let Some(b) = boxes.remove(&item.id) {
            item.boxes = b;
        }
    }
    if !boxes.is_empty() {
        tracing::warn!(
            "{}: {} box ids match no question of the dataset (e.g. {:?})",
            file.display(),
            boxes.len(),
            boxes.keys().next()
        );
    }
}

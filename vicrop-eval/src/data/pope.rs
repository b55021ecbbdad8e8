//! POPE (GitHub `AoiDragon/POPE`, `output/coco/coco_pope_{random,popular,adversarial}.json`).
//!
//! Despite the `.json` name, the COCO files are JSON lines: `{"question_id": 1, "image":
//! "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?", "label":
//! "yes"}`. (The repo's SEEM-built files under `output/seem/` are JSON lists of the same
//! records; both are read.) Items: id = `question_id`, question = `text`, labels = `[label]`,
//! which must be `yes` or `no`; category = the file's stem (`coco_pope_random`). The image is
//! `image` as written (a COCO val2014 file name for the COCO files).
//!
//! `--data`: one file, or a folder: then every `*.json`/`*.jsonl` file in it, in name order,
//! with ids `{stem}/{question_id}` (each file numbers its questions from 1). Image root: the
//! folder of the data, or [`LoadOptions::images`] (for the COCO files, COCO's `val2014/`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::json::{self, Container};
use super::{parent_of, DataError, Dataset, Format, Item, LoadOptions, Location, UniqueIds};

/// Loads POPE (see the module docs).
pub fn load(data: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let (files, folder, prefixed) = if data.is_dir() {
        let files = data_files(data)?;
        (files, data.to_path_buf(), true)
    } else if data.exists() {
        (vec![data.to_path_buf()], parent_of(data), false)
    } else {
        return Err(DataError::Layout(format!(
            "pope data {} does not exist",
            data.display()
        )));
    };
    let image_root = options.images.clone().unwrap_or(folder);
    let mut items = Vec::new();
    for file in &files {
        load_file(file, &image_root, prefixed, &mut items)?;
    }
    let mut files = files.into_iter();
    let file = files.next().unwrap_or_else(|| data.to_path_buf());
    Ok(Dataset {
        format: Format::Pope,
        file,
        extra_files: files.collect(),
        image_root,
        items,
    })
}

/// The `*.json` and `*.jsonl` files of a folder, sorted by name.
fn data_files(folder: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(folder).map_err(|source| DataError::Io {
        file: folder.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json" || e == "jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::Layout(format!(
            "{} holds no POPE *.json or *.jsonl file",
            folder.display()
        )));
    }
    Ok(files)
}

fn load_file(
    file: &Path,
    image_root: &Path,
    prefixed: bool,
    items: &mut Vec<Item>,
) -> Result<(), DataError> {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = json::read_text(file)?;
    let mut ids = UniqueIds::default();
    let mut take = |at: Location, value: Value| -> Result<(), DataError> {
        let mut item = record(&value, image_root).map_err(|message| DataError::Record {
            file: file.to_path_buf(),
            at: at.clone(),
            message,
        })?;
        ids.insert(file, &item.id, &at)?;
        if prefixed {
            item.id = format!("{stem}/{}", item.id);
        }
        item.category = Some(stem.clone());
        items.push(item);
        Ok(())
    };
    if text.trim_start().starts_with('[') {
        json::for_each_record(file, &text, Container::List, &[], &mut take)?;
    } else {
        json::for_each_line(file, &text, &mut take)?;
    }
    Ok(())
}

fn record(value: &Value, image_root: &Path) -> Result<Item, String> {
    let obj = json::object(value)?;
    let id = json::id(obj, "question_id")?;
    let image = json::text(obj, "image")?;
    let question = json::text(obj, "text")?.to_string();
    let label = match obj.get("label") {
        None | Some(Value::Null) => {
            return Err("field \"label\" is missing: the item has no labels".into())
        }
        Some(_) => json::string(obj, "label")?,
    };
    if label != "yes" && label != "no" {
        return Err(format!(
            "field \"label\" must be \"yes\" or \"no\", found {label:?}"
        ));
    }
    Ok(Item {
        id,
        image: image_root.join(image),
        question,
        labels: vec![label.to_string()],
        short_question: None,
        options: None,
        boxes: Vec::new(),
        image_size: None,
        category: None,
    })
}

//! A-OKVQA v1.0 (GitHub `allenai/aokvqa`, `aokvqa_v1p0.tar.gz`), e.g. `aokvqa_v1p0_val.json`,
//! as the repo's `load_aokvqa.py` reads it.
//!
//! The file is a JSON list of records with `split`, `image_id` (COCO 2017 id, integer),
//! `question_id` (string), `question`, `choices` (4 strings), `correct_choice_idx`,
//! `direct_answers` (10 strings), `difficult_direct_answer`, `rationales`. Items: id =
//! `question_id`, labels = `direct_answers` (the direct-answer setting the paper reports),
//! options = `choices`. The image is `{split}2017/{image_id:012}.jpg` (the repo's
//! `get_coco_path`); without `split` in the record, the split in the file name
//! (`aokvqa_v1p0_{split}.json`) is used. The test file has no `direct_answers` and is
//! rejected (no labels).
//!
//! `--data`: the file, or a folder holding `aokvqa_v1p0_val.json`. Image root: the folder of
//! that file, or [`LoadOptions::images`] (the COCO folder that holds `val2017/`).

use std::path::Path;

use serde_json::Value;

use super::json::{self, Container};
use super::{parent_of, resolve_file, DataError, Dataset, Format, Item, ItemSink, LoadOptions};

/// The file looked for when `--data` is a folder.
pub const FILE_NAME: &str = "aokvqa_v1p0_val.json";

/// Loads A-OKVQA (see the module docs).
pub fn load(data: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let file = resolve_file(data, &[FILE_NAME], Format::AOkVqa)?;
    let image_root = options.images.clone().unwrap_or_else(|| parent_of(&file));
    let file_split = split_from_name(&file);
    let text = json::read_text(&file)?;
    let mut sink = ItemSink::new(&file);
    json::for_each_record(&file, &text, Container::List, &[], |at, value| {
        sink.push(at, record(&value, &image_root, file_split.as_deref()))
    })?;
    let items = sink.into_items();
    Ok(Dataset {
        format: Format::AOkVqa,
        file,
        extra_files: Vec::new(),
        image_root,
        items,
    })
}

/// `val` from `aokvqa_v1p0_val.json`.
fn split_from_name(file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    let split = stem.rsplit('_').next()?;
    ["train", "val", "test"]
        .contains(&split)
        .then(|| split.to_string())
}

fn record(value: &Value, image_root: &Path, file_split: Option<&str>) -> Result<Item, String> {
    let obj = json::object(value)?;
    let id = json::id(obj, "question_id")?;
    let image_id = json::uint(obj, "image_id")?;
    let question = json::text(obj, "question")?.to_string();
    let labels = match obj.get("direct_answers") {
        None | Some(Value::Null) => {
            return Err(
                "field \"direct_answers\" is missing: the item has no labels \
                        (the A-OKVQA test file carries none)"
                    .into(),
            )
        }
        Some(_) => json::labels(obj, "direct_answers")?,
    };
    let choices = match obj.get("choices") {
        None | Some(Value::Null) => None,
        Some(_) => Some(json::string_list(obj, "choices")?),
    };
    if let (Some(choices), Some(_)) = (&choices, obj.get("correct_choice_idx")) {
        let idx = json::uint(obj, "correct_choice_idx")?;
        if idx >= choices.len() as u64 {
            return Err(format!(
                "field \"correct_choice_idx\" is {idx} but there are {} choices",
                choices.len()
            ));
        }
    }
    let split = match json::opt_string(obj, "split")? {
        Some(s) => s.to_string(),
        None => file_split.map(str::to_string).ok_or_else(|| {
            "field \"split\" is missing and the file name does not say the split".to_string()
        })?,
    };
    Ok(Item {
        id,
        image: image_root
            .join(format!("{split}2017"))
            .join(format!("{image_id:012}.jpg")),
        question,
        labels,
        short_question: None,
        options: choices,
        boxes: Vec::new(),
        image_size: None,
        category: None,
    })
}

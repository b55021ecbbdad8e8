//! VQAv2 (<https://visualqa.org/download.html>), the files the official API
//! (`GT-Vision-Lab/VQA`, `PythonHelperTools/vqaTools/vqa.py`) reads:
//!
//! - questions, `v2_OpenEnded_mscoco_val2014_questions.json`: an object with `data_subtype`
//!   (`val2014`) and a `questions` list of `{image_id, question, question_id}`;
//! - annotations, `v2_mscoco_val2014_annotations.json`: an object with an `annotations` list of
//!   `{question_id, image_id, answers: [{answer, answer_confidence, answer_id}] (10),
//!   multiple_choice_answer, question_type, answer_type}`.
//!
//! Items: id = `question_id`, labels = the 10 `answers[].answer` (the scorers normalise them),
//! category = `answer_type` (`yes/no`, `number`, `other`). Images are named as the API does:
//! `{data_subtype}/COCO_{data_subtype}_{image_id:012}.jpg` (e.g.
//! `val2014/COCO_val2014_000000000042.jpg`). Every question needs an annotation; annotations of
//! questions not in the questions file are skipped with a warning.
//!
//! `--data`: the questions file, or a folder holding exactly one `*_questions.json`. The
//! annotations file is the `v2_mscoco_{data_subtype}_annotations.json` next to it, else the only
//! `*_annotations.json` there. Image root: the folder of the questions file, or
//! [`LoadOptions::images`] (the folder that holds `val2014/`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::json::{self, Container};
use super::{parent_of, DataError, Dataset, Format, Item, LoadOptions, UniqueIds};

/// Loads VQAv2 (see the module docs).
pub fn load(data: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let questions_file = if data.is_dir() {
        only_file_ending(data, "_questions.json")?
    } else if data.exists() {
        data.to_path_buf()
    } else {
        return Err(DataError::Layout(format!(
            "vqav2 data {} does not exist",
            data.display()
        )));
    };
    let folder = parent_of(&questions_file);
    let image_root = options.images.clone().unwrap_or_else(|| folder.clone());

    // Questions, in file order.
    let text = json::read_text(&questions_file)?;
    let mut questions = Vec::new();
    let mut ids = UniqueIds::default();
    let kept = json::for_each_record(
        &questions_file,
        &text,
        Container::ListAt("questions"),
        &["data_subtype"],
        |at, value| {
            let q = question(&value).map_err(|message| DataError::Record {
                file: questions_file.clone(),
                at: at.clone(),
                message,
            })?;
            ids.insert(&questions_file, &q.id, &at)?;
            questions.push((at, q));
            Ok(())
        },
    )?;
    drop(text);
    let subtype = match kept.get("data_subtype") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(v) => {
            return Err(DataError::Json {
                file: questions_file,
                message: format!(
                    "the top-level \"data_subtype\" must be a string like \"val2014\", found {}",
                    json::kind(v)
                ),
            })
        }
        None => {
            return Err(DataError::Json {
                file: questions_file,
                message: "the top-level object has no \"data_subtype\" (like \"val2014\"), \
                          which names the images"
                    .into(),
            })
        }
    };

    // Annotations by question id.
    let annotations_file = annotations_file(&folder, &subtype)?;
    let text = json::read_text(&annotations_file)?;
    let mut answers: HashMap<String, Annotation> = HashMap::new();
    let mut seen = UniqueIds::default();
    json::for_each_record(
        &annotations_file,
        &text,
        Container::ListAt("annotations"),
        &[],
        |at, value| {
            let (id, a) = annotation(&value).map_err(|message| DataError::Record {
                file: annotations_file.clone(),
                at: at.clone(),
                message,
            })?;
            seen.insert(&annotations_file, &id, &at)?;
            answers.insert(id, a);
            Ok(())
        },
    )?;
    drop(text);

    let images = if subtype == "test-dev2015" {
        "test2015"
    } else {
        subtype.as_str()
    };
    let mut items = Vec::with_capacity(questions.len());
    for (at, q) in questions {
        let Some(a) = answers.remove(&q.id) else {
            return Err(DataError::Record {
                file: questions_file,
                at,
                message: format!(
                    "question_id {} has no annotation in {}",
                    q.id,
                    annotations_file.display()
                ),
            });
        };
        items.push(Item {
            image: image_root
                .join(images)
                .join(format!("COCO_{images}_{:012}.jpg", q.image_id)),
            id: q.id,
            question: q.question,
            labels: a.labels,
            short_question: None,
            options: None,
            boxes: Vec::new(),
            image_size: None,
            category: a.answer_type,
        });
    }
    if !answers.is_empty() {
        tracing::warn!(
            "{}: {} annotations have no question in {}",
            annotations_file.display(),
            answers.len(),
            questions_file.display()
        );
    }
    Ok(Dataset {
        format: Format::VqaV2,
        file: questions_file,
        extra_files: vec![annotations_file],
        image_root,
        items,
    })
}

struct Question {
    id: String,
    image_id: u64,
    question: String,
}

struct Annotation {
    labels: Vec<String>,
    answer_type: Option<String>,
}

fn question(value: &Value) -> Result<Question, String> {
    let obj = json::object(value)?;
    Ok(Question {
        id: json::id(obj, "question_id")?,
        image_id: json::uint(obj, "image_id")?,
        question: json::text(obj, "question")?.to_string(),
    })
}

fn annotation(value: &Value) -> Result<(String, Annotation), String> {
    let obj = json::object(value)?;
    let id = json::id(obj, "question_id")?;
    let v = json::required(obj, "answers")?;
    let list = v.as_array().ok_or_else(|| {
        format!(
            "field \"answers\" must be a list of {{\"answer\": ...}}, found {}",
            json::kind(v)
        )
    })?;
    if list.is_empty() {
        return Err("field \"answers\" is an empty list: the item has no labels".into());
    }
    let labels = list
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.as_object()
                .ok_or_else(|| format!("field \"answers\"[{i}] must be an object"))
                .and_then(|a| json::string(a, "answer").map(str::to_string))
                .map_err(|e| format!("answers[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let answer_type = json::opt_string(obj, "answer_type")?.map(str::to_string);
    Ok((
        id,
        Annotation {
            labels,
            answer_type,
        },
    ))
}

/// The one file in `folder` whose name ends with `suffix`.
fn only_file_ending(folder: &Path, suffix: &str) -> Result<PathBuf, DataError> {
    let found = files_ending(folder, suffix)?;
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(DataError::Layout(format!(
            "{} holds no *{suffix} file; pass the vqav2 questions file or its folder",
            folder.display()
        ))),
        many => Err(DataError::Layout(format!(
            "{} holds {} *{suffix} files ({}); pass the questions file itself",
            folder.display(),
            many.len(),
            names(many)
        ))),
    }
}

/// The annotations file for `subtype` in `folder` (see the module docs).
fn annotations_file(folder: &Path, subtype: &str) -> Result<PathBuf, DataError> {
    let official = folder.join(format!("v2_mscoco_{subtype}_annotations.json"));
    if official.is_file() {
        return Ok(official);
    }
    let found = files_ending(folder, "_annotations.json")?;
    let matching: Vec<&PathBuf> = found
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(subtype))
        })
        .collect();
    match (matching.as_slice(), found.as_slice()) {
        ([one], _) => Ok((*one).clone()),
        (_, [one]) => Ok(one.clone()),
        (_, []) => Err(DataError::Layout(format!(
            "{} holds no VQAv2 annotations file (v2_mscoco_{subtype}_annotations.json)",
            folder.display()
        ))),
        _ => Err(DataError::Layout(format!(
            "{} holds several annotations files ({}) and none is v2_mscoco_{subtype}_annotations.json",
            folder.display(),
            names(&found)
        ))),
    }
}

/// The files in `folder` whose name ends with `suffix`, sorted.
fn files_ending(folder: &Path, suffix: &str) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(folder).map_err(|source| DataError::Io {
        file: folder.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(suffix))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

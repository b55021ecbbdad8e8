//! Scorers, exactly as each benchmark's own evaluation code (and the ViCrop reference) scores.
//!
//! - [`normalize`]: VQAv2's `vqaEval.py` normaliser and the EvalAI answer processor TextVQA's
//!   evaluator uses (they differ in punctuation handling), plus Python's whitespace and digit
//!   classes they rely on.
//! - [`difflib`]: Python's `difflib.SequenceMatcher.ratio()`, which the reference uses to read
//!   POPE's yes/no and V*'s option out of a free-form answer.
//! - [`metrics`]: one function per metric and question, each naming the official code it
//!   follows.
//! - [`Task`], [`Metric`], [`score_task`]: a benchmark's metrics over a list of
//!   [`Prediction`]s; [`read_predictions`] and [`score_file`] for a predictions file (JSON
//!   lines `{"id", "prediction", "labels"[, "options"]}`), the input of `vicrop eval score`.
//!
//! ```
//! use vicrop_eval::score::{score_task, Metric, Prediction, Task};
//!
//! let preds = vec![Prediction::new("q1", "Two", ["2", "2", "two", "2", "2", "2", "2", "2", "2", "2"])];
//! let scores = score_task("vqav2".parse::<Task>()?, &preds)?;
//! assert_eq!(scores.get(Metric::VqaOfficial), Some(100.0));
//! # Ok::<(), vicrop_eval::score::ScoreError>(())
//! ```

pub mod difflib;
pub mod metrics;
pub mod normalize;
pub mod tasks;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use tasks::{score_task, Metric, Scores, Task};

/// One scored question: the model's answer and the ground truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    /// Question id, unique within a file.
    pub id: String,
    /// The model's answer, as generated.
    pub prediction: String,
    /// Ground-truth answers: the human answers (VQA tasks, 10 each), the answer (GQA), the
    /// accepted answers (DocVQA), `yes`/`no` (POPE), the correct option's letter (V*).
    pub labels: Vec<String>,
    /// V* only: the answer choices in order, as texts (`rubber`) or as the question's option
    /// lines (`(A) rubber`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

impl Prediction {
    /// A prediction without options.
    pub fn new<I, S>(id: impl Into<String>, prediction: impl Into<String>, labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            id: id.into(),
            prediction: prediction.into(),
            labels: labels.into_iter().map(Into::into).collect(),
            options: None,
        }
    }

    /// The same prediction with V*'s options.
    pub fn with_options<I, S>(mut self, options: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options = Some(options.into_iter().map(Into::into).collect());
        self
    }
}

/// Why predictions could not be read or scored.
#[derive(Debug)]
#[non_exhaustive]
pub enum ScoreError {
    /// A task name that is not one of [`Task::ALL`].
    UnknownTask {
        /// The name given.
        name: String,
    },
    /// The predictions file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line of the predictions file is malformed (not UTF-8, not JSON, a field missing or of
    /// the wrong type, an empty label list), or its prediction cannot be scored for the task.
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Two predictions share an id.
    DuplicateId {
        /// The file, when read from one (then `first`/`second` are 1-based line numbers;
        /// otherwise 1-based positions in the list).
        path: Option<PathBuf>,
        /// The repeated id.
        id: String,
        /// Where it first appears.
        first: usize,
        /// Where it appears again.
        second: usize,
    },
    /// Nothing to score.
    Empty {
        /// The file, when read from one.
        path: Option<PathBuf>,
    },
    /// A prediction that cannot be scored for the task (from [`score_task`]).
    Item {
        /// 0-based position in the list.
        index: usize,
        /// Its id.
        id: String,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for ScoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScoreError::UnknownTask { name } => {
                write!(f, "unknown task `{name}`; the tasks are {}", Task::names())
            }
            ScoreError::Io { path, source } => {
                write!(
                    f,
                    "cannot read the predictions {}: {source}",
                    path.display()
                )
            }
            ScoreError::Line {
                path,
                line,
                message,
            } => write!(f, "{}: line {line}: {message}", path.display()),
            ScoreError::DuplicateId {
                path: Some(path),
                id,
                first,
                second,
            } => write!(
                f,
                "{}: id `{id}` appears on line {first} and again on line {second}",
                path.display()
            ),
            ScoreError::DuplicateId {
                path: None,
                id,
                first,
                second,
            } => write!(
                f,
                "id `{id}` appears at prediction {first} and again at prediction {second}"
            ),
            ScoreError::Empty { path: Some(path) } => {
                write!(f, "{}: no predictions in the file", path.display())
            }
            ScoreError::Empty { path: None } => write!(f, "no predictions to score"),
            ScoreError::Item { index, id, message } => {
                write!(f, "prediction {} (id `{id}`): {message}", index + 1)
            }
        }
    }
}

impl std::error::Error for ScoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `serde_json`'s message without its " at line L column C" (the line is always 1 here).
fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let s = match s.rfind(" at line ") {
        Some(pos) => s[..pos].to_string(),
        None => s,
    };
    format!("not valid JSON ({s} at column {})", e.column())
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn string_list(field: &str, v: &serde_json::Value) -> Result<Vec<String>, String> {
    let serde_json::Value::Array(items) = v else {
        return Err(format!(
            "field `{field}` must be an array of strings, found {}",
            json_type(v)
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(k, item)| match item {
            serde_json::Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "field `{field}`: item {} must be a string, found {}",
                k + 1,
                json_type(other)
            )),
        })
        .collect()
}

/// Parses one JSON line into a prediction (without the file context).
fn parse_line(text: &str) -> Result<Prediction, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| json_message(&e))?;
    let serde_json::Value::Object(obj) = value else {
        return Err(format!(
            "expected a JSON object {{\"id\", \"prediction\", \"labels\"}}, found {}",
            json_type(&value)
        ));
    };
    let field = |name: &str| {
        obj.get(name)
            .ok_or_else(|| format!("missing field `{name}`"))
    };
    let id = match field("id")? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        other => {
            return Err(format!(
                "field `id` must be a string, found {}",
                json_type(other)
            ))
        }
    };
    let prediction = match field("prediction")? {
        serde_json::Value::String(s) => s.clone(),
        other => {
            return Err(format!(
                "field `prediction` must be a string, found {}",
                json_type(other)
            ))
        }
    };
    let labels = string_list("labels", field("labels")?)?;
    if labels.is_empty() {
        return Err("field `labels` is empty".to_string());
    }
    let options = match obj.get("options") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(string_list("options", v)?),
    };
    Ok(Prediction {
        id,
        prediction,
        labels,
        options,
    })
}

/// Predictions with the 1-based line each came from.
fn read_with_lines(path: &Path) -> Result<(Vec<Prediction>, Vec<usize>), ScoreError> {
    let bytes = std::fs::read(path).map_err(|source| ScoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let line_error = |line: usize, message: String| ScoreError::Line {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut predictions = Vec::new();
    let mut lines = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (k, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = k + 1;
        let raw = if k == 0 {
            raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(raw)
        } else {
            raw
        };
        let text = std::str::from_utf8(raw).map_err(|e| {
            line_error(
                line,
                format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
            )
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let p = parse_line(text).map_err(|m| line_error(line, m))?;
        if let Some(&first) = seen.get(&p.id) {
            return Err(ScoreError::DuplicateId {
                path: Some(path.to_path_buf()),
                id: p.id,
                first,
                second: line,
            });
        }
        seen.insert(p.id.clone(), line);
        predictions.push(p);
        lines.push(line);
    }
    if predictions.is_empty() {
        return Err(ScoreError::Empty {
            path: Some(path.to_path_buf()),
        });
    }
    Ok((predictions, lines))
}

/// Reads a predictions file: one JSON object per line,
/// `{"id": str, "prediction": str, "labels": [str], "options": [str]}` (`options` only for
/// V*; an integer id is taken as its decimal text; other fields are ignored; blank lines are
/// skipped). Errors name the file, the 1-based line and what is wrong: not UTF-8, not JSON,
/// a missing or mistyped field, an empty label list, an id already seen (with both lines),
/// no predictions at all.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, ScoreError> {
    read_with_lines(path).map(|(p, _)| p)
}

/// [`read_predictions`] then [`score_task`]; a prediction the task cannot score is reported
/// with its file and line.
pub fn score_file(task: Task, path: &Path) -> Result<Scores, ScoreError> {
    let (predictions, lines) = read_with_lines(path)?;
    score_task(task, &predictions).map_err(|e| match e {
        ScoreError::Item { index, id, message } => ScoreError::Line {
            path: path.to_path_buf(),
            line: lines.get(index).copied().unwrap_or(0),
            message: format!("id `{id}`: {message}"),
        },
        other => other,
    })
}

//! Reading a run folder: `manifest.json` and `results.jsonl`, as docs/evaluation.md ("The run
//! folder") lays them out. Only the fields the report needs are read; unknown fields are
//! ignored, so newer runners stay readable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ReportError;
use crate::score::Task;

/// The manifest fields a report reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ManifestIn {
    /// The checkpoint folder's name, or hub id: the row's model.
    pub model_name: String,
    /// A `score::Task` name.
    pub task: String,
    /// `baseline`, `rel-att`, `grad-att`, `pure-grad`, `oracle` (others are shown as given).
    pub method: String,
    /// Two-stage high-resolution mode.
    #[serde(default)]
    pub high_res: bool,
    /// The LLM layer given with `--layer` (`null`: the model's default).
    #[serde(default)]
    pub layer: Option<u64>,
    /// `whole-image` (the reference's, the default) or `map-region`.
    #[serde(default)]
    pub placement: Option<String>,
}

/// One answer of a results row.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AnswerIn {
    /// The generated text.
    pub text: String,
}

/// The fields of a results row a report reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RowIn {
    /// Question id, unique in the file.
    pub id: String,
    /// Ground-truth answers.
    pub labels: Vec<String>,
    /// V*: the answer choices.
    #[serde(default)]
    pub options: Option<Vec<String>>,
    /// Answer boxes `[x0, y0, x1, y1]` in original-image pixels.
    #[serde(default)]
    pub boxes: Option<Vec<[f64; 4]>>,
    /// `[w, h]` of the original image; `null` when it could not be read.
    #[serde(default)]
    pub image_size: Option<[f64; 2]>,
    /// The answer without the crop.
    #[serde(default)]
    pub baseline: Option<AnswerIn>,
    /// The answer with the crop (`null` for method `baseline`).
    #[serde(default)]
    pub crop: Option<AnswerIn>,
    /// Attention ratio per LLM layer.
    #[serde(default)]
    pub attention_ratio: Option<Vec<f64>>,
    /// Why the item failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// A run folder read from disk.
#[derive(Debug, Clone)]
pub(crate) struct RunInput {
    /// The folder as given.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: ManifestIn,
    /// The manifest's task, parsed.
    pub task: Task,
    /// `DIR/results.jsonl`.
    pub results: PathBuf,
    /// The rows with their 1-based line numbers.
    pub rows: Vec<(usize, RowIn)>,
}

/// `serde_json`'s message without its " at line L column C".
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(pos) => s[..pos].to_string(),
        None => s,
    }
}

/// `serde_json`'s message with the column only (the caller names the line).
fn json_message(e: &serde_json::Error) -> String {
    format!("{} (column {})", strip_position(e), e.column())
}

/// `results-K-of-N.jsonl` file names in `dir`, sorted.
fn shard_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix("results-")
                .and_then(|rest| rest.strip_suffix(".jsonl"))
                .and_then(|rest| rest.split_once("-of-"))
                .is_some_and(|(k, n)| {
                    !k.is_empty()
                        && !n.is_empty()
                        && k.bytes().all(|b| b.is_ascii_digit())
                        && n.bytes().all(|b| b.is_ascii_digit())
                })
        })
        .collect();
    names.sort();
    names
}

fn read_manifest(dir: &Path) -> Result<(ManifestIn, Task), ReportError> {
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    let bad = |message: String| ReportError::Manifest {
        path: path.clone(),
        message,
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| bad(format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1)))?;
    let manifest: ManifestIn =
        serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| {
            bad(format!(
                "not a run manifest: {} (line {}, column {})",
                strip_position(&e),
                e.line(),
                e.column()
            ))
        })?;
    let task: Task = manifest
        .task
        .parse()
        .map_err(|e| bad(format!("field `task`: {e}")))?;
    if manifest.model_name.trim().is_empty() {
        return Err(bad("field `model_name` is empty".to_string()));
    }
    if manifest.method.trim().is_empty() {
        return Err(bad("field `method` is empty".to_string()));
    }
    Ok((manifest, task))
}

/// Reads the rows of a results file. A last line without its newline that is not valid JSON
/// is skipped with a warning (a run still writing, or killed mid-line); any other bad line is
/// an error naming the file and line.
fn read_rows(path: &Path) -> Result<Vec<(usize, RowIn)>, ReportError> {
    let bytes = std::fs::read(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let line_error = |line: usize, message: String| ReportError::Results {
        path: path.to_path_buf(),
        line,
        message,
    };
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let last = pieces.len().saturating_sub(1);
    let mut rows = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (k, raw) in pieces.iter().enumerate() {
        let line = k + 1;
        let raw = if k == 0 {
            raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(raw)
        } else {
            raw
        };
        let unfinished = k == last && !ends_with_newline;
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(_) if unfinished => {
                tracing::warn!("{}: line {line} is unfinished; skipped", path.display());
                continue;
            }
            Err(e) => {
                return Err(line_error(
                    line,
                    format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
                ))
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let row: RowIn = match serde_json::from_str(text) {
            Ok(row) => row,
            Err(e) if unfinished && e.is_eof() => {
                tracing::warn!(
                    "{}: line {line} is unfinished (the run may still be writing); skipped",
                    path.display()
                );
                continue;
            }
            Err(e) => {
                return Err(line_error(
                    line,
                    format!("not a results row: {}", json_message(&e)),
                ))
            }
        };
        if let Some(&first) = seen.get(&row.id) {
            return Err(ReportError::DuplicateId {
                path: path.to_path_buf(),
                id: row.id,
                first,
                second: line,
            });
        }
        seen.insert(row.id.clone(), line);
        rows.push((line, row));
    }
    if rows.is_empty() {
        return Err(ReportError::EmptyResults {
            path: path.to_path_buf(),
        });
    }
    Ok(rows)
}

/// Reads one run folder: checks it is a folder with `manifest.json` and a merged
/// `results.jsonl`, then reads both.
pub(crate) fn read_run(dir: &Path) -> Result<RunInput, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::NotARunFolder {
            dir: dir.to_path_buf(),
            reason: if dir.exists() {
                "it is not a folder".to_string()
            } else {
                "it does not exist".to_string()
            },
        });
    }
    if !dir.join("manifest.json").is_file() {
        return Err(ReportError::NotARunFolder {
            dir: dir.to_path_buf(),
            reason: "it has no manifest.json (is it a `vicrop eval run --out` folder?)".to_string(),
        });
    }
    let results = dir.join("results.jsonl");
    if !results.is_file() {
        let shards = shard_files(dir);
        if !shards.is_empty() {
            return Err(ReportError::ShardsNotMerged {
                dir: dir.to_path_buf(),
                shards,
            });
        }
        return Err(ReportError::NotARunFolder {
            dir: dir.to_path_buf(),
            reason: "it has no results.jsonl (has the run written any result yet?)".to_string(),
        });
    }
    let (manifest, task) = read_manifest(dir)?;
    let rows = read_rows(&results)?;
    Ok(RunInput {
        dir: dir.to_path_buf(),
        manifest,
        task,
        results,
        rows,
    })
}

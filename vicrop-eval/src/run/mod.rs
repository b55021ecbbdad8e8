//! The batch runner behind `vicrop eval run` and `vicrop eval merge`: a benchmark, item by
//! item, into a run folder that survives kills, reruns and job schedulers.
//!
//! A run folder (`--out DIR`, layout in `docs/evaluation.md` "Running" and the contract the
//! report reads) holds:
//!
//! - `manifest.json`: the [`RunSpec`], written once; a rerun with other settings is refused,
//!   naming the differing fields ([`RunSpec::differences`]);
//! - `results.jsonl`, or `results-K-of-N.jsonl` per shard: one [`Row`] per finished item,
//!   appended and flushed (and synced) as soon as the item is done;
//! - for shards, `shard-K-of-N.json` ([`ShardState`]): that shard's copy of the manifest and
//!   how many items it covers, so [`merge`] can check that the shards agree and are complete;
//! - `*.lock`: empty files a running process holds an advisory lock on (one writer per
//!   results file; the lock dies with the process, so a kill never leaves a stale lock).
//!
//! Resuming: a rerun reads the rows already there (cutting off a torn last line, the item that
//! was in flight when the process died), checks that each row belongs to this dataset and
//! shard, and runs only the items without a row. So a kill loses at most the item in flight,
//! and no item ever gets two rows.
//!
//! Library use mirrors the CLI: build a [`RunSpec`] ([`RunSpec::new`], then set the options),
//! load the [`Dataset`] and the model, and call [`run`]; [`read_results`] and [`merge`] work on
//! the folder afterwards.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vicrop_core::pipeline::{Method, Question, ViCrop};
use vicrop_core::{
    load_image, AdaptiveWindow, AttentionRequest, AttentionSource, CropBox, Depth, GradientSource,
    LoadLimits, MapPlacement, Meter, PreparedImage, SaliencyMap, Stage, VisionLanguageModel,
};

use crate::data::{Dataset, Format, Item};
use crate::score::Task;

mod digest;
mod files;
mod job;
mod timed;

pub use digest::{checkpoint_digest, dataset_digest};
pub use files::{merge, read_results, MergeSummary, RunResults, ShardState};
pub use job::{native_format, RunRequest};

use files::{RunDir, RESULTS_FILE};
use timed::Timed;

/// What a run does: the plain answer, ViCrop with one map method, or the oracle crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RunMethod {
    /// The plain answer only (no crop): the "without ViCrop" column of the paper's tables.
    Baseline,
    /// ViCrop with relative attention.
    RelAtt,
    /// ViCrop with gradient-weighted attention.
    GradAtt,
    /// ViCrop with the input-gradient map.
    PureGrad,
    /// The human-crop oracle: the crop is the answer box's enclosing square (items need
    /// answer boxes).
    Oracle,
}

impl RunMethod {
    /// Every method, in the order of the docs.
    pub const ALL: [RunMethod; 5] = [
        RunMethod::Baseline,
        RunMethod::RelAtt,
        RunMethod::GradAtt,
        RunMethod::PureGrad,
        RunMethod::Oracle,
    ];

    /// The name in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RunMethod::Baseline => "baseline",
            RunMethod::RelAtt => "rel-att",
            RunMethod::GradAtt => "grad-att",
            RunMethod::PureGrad => "pure-grad",
            RunMethod::Oracle => "oracle",
        }
    }

    /// The ViCrop map method, for the three map methods.
    pub fn map_method(self) -> Option<Method> {
        match self {
            RunMethod::RelAtt => Some(Method::RelAtt),
            RunMethod::GradAtt => Some(Method::GradAtt),
            RunMethod::PureGrad => Some(Method::PureGrad),
            RunMethod::Baseline | RunMethod::Oracle => None,
        }
    }
}

impl fmt::Display for RunMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RunMethod {
    type Err = RunError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunMethod::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                RunError::Invalid(format!(
                    "unknown method {s:?}; valid methods: {}",
                    RunMethod::ALL.map(RunMethod::name).join(", ")
                ))
            })
    }
}

/// The model family, as manifests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// LLaVA-1.5.
    Llava,
    /// InstructBLIP.
    InstructBlip,
}

impl From<vicrop_models::Family> for ModelFamily {
    fn from(f: vicrop_models::Family) -> Self {
        match f {
            vicrop_models::Family::Llava => ModelFamily::Llava,
            vicrop_models::Family::InstructBlip => ModelFamily::InstructBlip,
        }
    }
}

/// One shard of a run: the items whose dataset index is `index` modulo `count` (`0/1`: all).
///
/// Modulo rather than contiguous blocks so that every shard gets a share of each part of the
/// dataset (benchmarks are often ordered by image or category) and `--limit` cuts all shards
/// alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// K, 0-based.
    pub index: usize,
    /// N, at least 1.
    pub count: usize,
}

impl Shard {
    /// The whole dataset (no `--shard`).
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// A shard, checked: `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, RunError> {
        if count == 0 {
            return Err(RunError::Shard(format!(
                "{index}/{count}: N must be at least 1 (K/N is shard K of N, K counted from 0)"
            )));
        }
        if index >= count {
            return Err(RunError::Shard(format!(
                "{index}/{count}: K must be below N (K counts from 0: the shards of {count} are \
                 0/{count} to {}/{count})",
                count - 1
            )));
        }
        Ok(Self { index, count })
    }

    /// Whether the dataset item at `index` belongs to this shard.
    pub fn contains(self, index: usize) -> bool {
        index % self.count == self.index
    }

    /// The results file: `results.jsonl` for the whole dataset, else `results-K-of-N.jsonl`.
    pub fn results_file_name(self) -> String {
        if self.count == 1 {
            RESULTS_FILE.to_string()
        } else {
            format!("results-{}-of-{}.jsonl", self.index, self.count)
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = RunError;

    /// `K/N` with `0 <= K < N`; anything else is an error saying what is wrong.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            RunError::Shard(format!(
                "{s:?} is not K/N (shard K of N, K counted from 0), e.g. 0/4 ... 3/4"
            ))
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        Shard::new(k, n)
    }
}

/// Everything that decides what a run computes, and `manifest.json`.
///
/// The fields are the contract of `manifest.json`, read by `vicrop eval report` (unknown
/// fields are ignored by readers; `dtype` and `dataset_digest` are this runner's additions).
/// A rerun into a folder is allowed only when every field that decides the rows' content is
/// equal ([`RunSpec::differences`]): the identity of the model (`checkpoint_digest`, `family`)
/// and of the data (`dataset_digest`, `task`, `format`), and every option. The paths `model`
/// and `data` and `vicrop_version` are recorded but only warned about, so a folder can be
/// resumed from another machine or a moved checkout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The version of vicrop that created the folder.
    pub vicrop_version: String,
    /// `--model` as given (a folder or a hub id).
    pub model: String,
    /// The checkpoint's folder name, or the hub id.
    pub model_name: String,
    /// The model family.
    pub family: ModelFamily,
    /// [`checkpoint_digest`] of the checkpoint folder.
    pub checkpoint_digest: String,
    /// The scoring task (`score::Task` name).
    #[serde(with = "task_name")]
    pub task: Task,
    /// The dataset format read.
    pub format: Format,
    /// `--data` as given.
    pub data: String,
    /// What is run per item.
    pub method: RunMethod,
    /// Tiled maps for large images (map methods only).
    pub high_res: bool,
    /// The language-model map layer; `None`: the model's default (rel-att and grad-att only).
    pub layer: Option<usize>,
    /// Where map cells lie on the image when choosing the box (map methods; `whole-image`
    /// otherwise).
    #[serde(with = "placement_name")]
    pub placement: MapPlacement,
    /// Most tokens generated per answer.
    pub max_new_tokens: usize,
    /// Whether each row carries the attention ratio at every language-model layer.
    pub attention_ratio: bool,
    /// N of `--shard K/N` (1 without sharding).
    pub shards: usize,
    /// Compute dtype: `f32`, `bf16` or `f16` (answers differ between dtypes).
    #[serde(default)]
    pub dtype: String,
    /// [`dataset_digest`] of the whole dataset (before `--limit`).
    #[serde(default)]
    pub dataset_digest: String,
    /// Whether each row of a map method carries the map the box was chosen from.
    #[serde(default)]
    pub save_maps: bool,
}

/// Fields of [`RunSpec`] that must be equal to resume a folder or merge shards.
const COMPARED: [&str; 15] = [
    "family",
    "checkpoint_digest",
    "task",
    "format",
    "dataset_digest",
    "method",
    "high_res",
    "layer",
    "placement",
    "max_new_tokens",
    "attention_ratio",
    "save_maps",
    "shards",
    "dtype",
    "model_name",
];

/// Fields only warned about when they differ.
const INFORMATIONAL: [&str; 3] = ["vicrop_version", "model", "data"];

/// A field of two [`RunSpec`]s that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    /// The field's name in `manifest.json`.
    pub field: &'static str,
    /// Its value in the folder (JSON).
    pub recorded: String,
    /// Its value now (JSON).
    pub requested: String,
}

impl fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: the folder has {}, this run {}",
            self.field, self.recorded, self.requested
        )
    }
}

impl RunSpec {
    /// A spec with the default options (no high-res, the model's layer, the reference's
    /// placement, 20 new tokens, no attention ratio, no shards, f32) for `method` on
    /// `dataset`, read from `data` and scored as `task`, with the checkpoint in `model_dir`
    /// (`model` as given on the command line). Reads the checkpoint's `config.json` for the
    /// family and hashes the checkpoint ([`checkpoint_digest`]).
    pub fn new(
        model: &str,
        model_dir: &Path,
        task: Task,
        dataset: &Dataset,
        data: &str,
        method: RunMethod,
    ) -> Result<Self, RunError> {
        let family =
            vicrop_models::detect_family(model_dir).map_err(|e| RunError::Model(e.to_string()))?;
        let model_name = if Path::new(model).is_dir() {
            model_dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| model.to_string())
        } else {
            model.to_string()
        };
        Ok(Self {
            vicrop_version: env!("CARGO_PKG_VERSION").to_string(),
            model: model.to_string(),
            model_name,
            family: family.into(),
            checkpoint_digest: checkpoint_digest(model_dir)?,
            task,
            format: dataset.format,
            data: data.to_string(),
            method,
            high_res: false,
            layer: None,
            placement: MapPlacement::WholeImage,
            max_new_tokens: 20,
            attention_ratio: false,
            shards: 1,
            dtype: "f32".to_string(),
            dataset_digest: dataset_digest(dataset),
            save_maps: false,
        })
    }

    /// Checks that the options fit the method: `high_res`, `layer` and a non-default
    /// `placement` need a map method (`layer` one that reads attention); at least one new
    /// token; at least one shard.
    pub fn validate(&self) -> Result<(), RunError> {
        let map = self.method.map_method();
        let bad = |m: String| Err(RunError::Invalid(m));
        if map.is_none() && self.high_res {
            return bad(format!(
                "--high-res applies to the map methods (rel-att, grad-att, pure-grad), not {}",
                self.method
            ));
        }
        if map.is_none() && self.placement != MapPlacement::WholeImage {
            return bad(format!(
                "--placement applies to the map methods (rel-att, grad-att, pure-grad), not {}",
                self.method
            ));
        }
        if self.layer.is_some() && !matches!(map, Some(Method::RelAtt | Method::GradAtt)) {
            return bad(format!(
                "--layer applies to rel-att and grad-att (the attention maps), not {} \
                 (--attention-ratio reads every layer anyway)",
                self.method
            ));
        }
        if self.max_new_tokens == 0 {
            return bad("--max-new-tokens must be at least 1".into());
        }
        if self.shards == 0 {
            return bad("shards must be at least 1".into());
        }
        Ok(())
    }

    /// The fields that decide the rows' content and differ between `self` (the folder's
    /// manifest) and `requested`.
    pub fn differences(&self, requested: &RunSpec) -> Vec<FieldDiff> {
        diff_fields(self, requested, &COMPARED)
    }

    /// The recorded-only fields (`vicrop_version`, `model`, `data`) that differ.
    pub fn informational_differences(&self, requested: &RunSpec) -> Vec<FieldDiff> {
        diff_fields(self, requested, &INFORMATIONAL)
    }
}

fn diff_fields(a: &RunSpec, b: &RunSpec, fields: &[&'static str]) -> Vec<FieldDiff> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return Vec::new();
    };
    let null = serde_json::Value::Null;
    fields
        .iter()
        .filter_map(|&field| {
            let (x, y) = (a.get(field).unwrap_or(&null), b.get(field).unwrap_or(&null));
            (x != y).then(|| FieldDiff {
                field,
                recorded: x.to_string(),
                requested: y.to_string(),
            })
        })
        .collect()
}

/// serde of [`Task`] by its name.
mod task_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::score::Task;

    pub fn serialize<S: Serializer>(task: &Task, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(task.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Task, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// serde of [`MapPlacement`] as `whole-image` / `map-region` (the CLI's names).
mod placement_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use vicrop_core::MapPlacement;

    pub fn serialize<S: Serializer>(p: &MapPlacement, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match p {
            MapPlacement::WholeImage => "whole-image",
            MapPlacement::MapRegion => "map-region",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MapPlacement, D::Error> {
        match String::deserialize(d)?.as_str() {
            "whole-image" => Ok(MapPlacement::WholeImage),
            "map-region" => Ok(MapPlacement::MapRegion),
            other => Err(serde::de::Error::custom(format!(
                "unknown placement {other:?} (whole-image or map-region)"
            ))),
        }
    }
}

/// An answer in a [`Row`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRow {
    /// The decoded answer.
    pub text: String,
    /// The generated token ids (end of sequence excluded).
    pub token_ids: Vec<u32>,
    /// Wall-clock seconds of this answer (see [`Row`]).
    pub seconds: f64,
}

/// The crop answer in a [`Row`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CropRow {
    /// The decoded answer given the image and the crop.
    pub text: String,
    /// The generated token ids.
    pub token_ids: Vec<u32>,
    /// The crop box `[x0, y0, x1, y1)` in original-image pixels.
    pub bbox: [u32; 4],
    /// Wall-clock seconds of everything after the plain answer: maps, box, crop answer.
    pub seconds: f64,
}

/// One line of a results file: one finished item (the contract `vicrop eval report` reads).
///
/// Timings: `baseline.seconds` is the plain answer (the model's answer call, including image
/// encoding when the model defers it to then); `crop.seconds` everything ViCrop adds after
/// it; `seconds` the whole item, image loading and the attention ratio included. `cost` counts
/// the work done for this item; work shared by consecutive questions on one image (encoding,
/// the general-description map) is charged to the first of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The item's id.
    pub id: String,
    /// Its position in the dataset (0-based, before sharding and `--limit`).
    pub index: usize,
    /// The image path read.
    pub image: String,
    /// The question asked.
    pub question: String,
    /// The ground-truth answers.
    pub labels: Vec<String>,
    /// Multiple-choice candidates, when the dataset has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// Answer boxes `[x0, y0, x1, y1]` in original-image pixels, when the dataset has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boxes: Option<Vec<[f32; 4]>>,
    /// The dataset's subset name (VQAv2 answer type, V* category, POPE file), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `[width, height]` of the image; `None` when it could not be read.
    pub image_size: Option<[u32; 2]>,
    /// The plain answer; `None` when the item failed.
    pub baseline: Option<AnswerRow>,
    /// The answer with the crop; `None` for `baseline` runs and failed items.
    pub crop: Option<CropRow>,
    /// Work done for this item; `None` when it failed.
    pub cost: Option<vicrop_core::Cost>,
    /// Wall-clock seconds of the whole item.
    pub seconds: f64,
    /// The attention ratio per language-model layer (when the run asks for it and the item
    /// has answer boxes): mean over the item's boxes of the map mass inside the box divided by
    /// the average mass of all same-sized windows (`SaliencyMap::attention_ratio`); `None`
    /// also where it is undefined (every box outside the region the encoder saw).
    pub attention_ratio: Option<Vec<f64>>,
    /// Why the item failed (the run went on); `None` when it did not.
    pub error: Option<String>,
    /// Where the item's ViCrop run spent its time (map methods and oracle: the plain answer's
    /// stages too); `None` when it failed, and in rows written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings_ms: Option<vicrop_core::Timings>,
    /// The map the box was chosen from, with `--save-maps` (map methods only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<SavedMap>,
}

/// A map as a results row and `vicrop crop --json` print it: `values[row][col]`, each f32
/// widened to f64, non-finite values as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedMap {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// The values, row by row.
    pub values: Vec<Vec<Option<f64>>>,
}

impl SavedMap {
    /// `map`'s values.
    pub fn new(map: &vicrop_core::SaliencyMap) -> Self {
        let values = map
            .to_rows()
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| v.is_finite().then(|| f64::from(v)))
                    .collect()
            })
            .collect();
        Self {
            rows: map.rows(),
            cols: map.cols(),
            values,
        }
    }
}

impl Row {
    /// A row for `item` with nothing computed yet.
    fn start(item: &Item, index: usize) -> Self {
        Self {
            id: item.id.clone(),
            index,
            image: item.image.to_string_lossy().into_owned(),
            question: item.question.clone(),
            labels: item.labels.clone(),
            options: item.options.clone(),
            boxes: (!item.boxes.is_empty()).then(|| item.boxes.clone()),
            category: item.category.clone(),
            image_size: None,
            baseline: None,
            crop: None,
            cost: None,
            seconds: 0.0,
            attention_ratio: None,
            error: None,
            timings_ms: None,
            map: None,
        }
    }
}

/// How [`run`] runs, beyond the [`RunSpec`]: none of these change a row, so none is in the
/// manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// The run folder.
    pub out: PathBuf,
    /// Which shard to run (its `count` must equal the spec's `shards`).
    pub shard: Shard,
    /// Only the first N dataset items (before sharding); a later run with a larger limit (or
    /// none) goes on where this one stopped.
    pub limit: Option<usize>,
    /// Run again the items whose row records an error (their rows are replaced).
    pub retry_errors: bool,
    /// Show a progress bar on stderr (a terminal), or a line a minute otherwise.
    pub progress: bool,
}

impl RunOptions {
    /// Options for the whole dataset into `out`, with progress.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            shard: Shard::WHOLE,
            limit: None,
            retry_errors: false,
            progress: true,
        }
    }
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The results file.
    pub results: PathBuf,
    /// Items this run covers (this shard's items within `--limit`).
    pub items: usize,
    /// Of those, items that had a row before this run.
    pub resumed: usize,
    /// Rows written by this run.
    pub written: usize,
    /// Of those, rows recording an error.
    pub errors: usize,
    /// What went wrong but did not stop the run (a torn line cut off, a differing path).
    pub warnings: Vec<String>,
}

/// Why a run, a merge or reading results failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The options do not fit together.
    #[error("{0}")]
    Invalid(String),
    /// A bad `--shard`.
    #[error("--shard {0}")]
    Shard(String),
    /// The folder was made with other settings.
    #[error(
        "{dir} holds a run with other settings; differing: {}. Use another --out folder, or \
         rerun with the folder's settings (see its manifest.json)",
        .fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Mismatch {
        /// The folder.
        dir: PathBuf,
        /// The differing fields.
        fields: Vec<FieldDiff>,
    },
    /// A file of the run folder is not what it should be.
    #[error("{}: {message}", path.display())]
    Corrupt {
        /// The file (with `:LINE` for a results row).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another process is writing the same results.
    #[error("{0}")]
    Busy(String),
    /// `merge` found shards that are not complete (and no `--allow-partial`).
    #[error("cannot merge {}: {}; run the missing shards (or rerun them to finish), or pass --allow-partial", dir.display(), missing.join("; "))]
    Incomplete {
        /// The folder.
        dir: PathBuf,
        /// One line per incomplete shard.
        missing: Vec<String>,
    },
    /// The model could not be found, read or loaded.
    #[error("{0}")]
    Model(String),
    /// The dataset could not be loaded.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl RunError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
        move |source| RunError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks, without writing anything, that `spec` may run `shard` into `dir`: `Ok` with
/// warnings for differing paths or versions when the folder's manifest agrees (or there is
/// none yet), else [`RunError::Mismatch`] (or [`RunError::Busy`] while another process writes
/// that shard). The CLI calls it before loading the model, so a wrong folder is refused in a
/// second rather than after a minute of loading; [`run`] checks again.
pub fn check_folder(dir: &Path, spec: &RunSpec, shard: Shard) -> Result<Vec<String>, RunError> {
    spec.validate()?;
    let warnings = files::check_manifest(dir, spec)?;
    files::check_not_busy(dir, shard)?;
    Ok(warnings)
}

/// Runs `spec` with `model` over `dataset` (this shard's items within the limit) into the run
/// folder of `options`, resuming what is there. Each finished item is appended as a [`Row`]
/// and synced before the next starts; an item that fails (unreadable image, model error or
/// panic, an oracle item without boxes) gets a row with its `error` and the run goes on.
/// Consecutive items on the same image share one prepared image (and its cached
/// general-description map).
///
/// Errors stop the run only for what no item can survive: a bad spec, a folder made with
/// other settings, a results file that is not this run's, a write that fails.
pub fn run<M: AttentionSource + GradientSource>(
    model: M,
    spec: &RunSpec,
    dataset: &Dataset,
    options: &RunOptions,
) -> Result<RunSummary, RunError> {
    spec.validate()?;
    if options.shard.count != spec.shards {
        return Err(RunError::Invalid(format!(
            "shard {} does not fit the spec's {} shards",
            options.shard, spec.shards
        )));
    }
    if dataset.format != spec.format || dataset_digest(dataset) != spec.dataset_digest {
        return Err(RunError::Invalid(
            "the spec was made for another dataset (format or dataset_digest differ); build it \
             with RunSpec::new from this dataset"
                .into(),
        ));
    }
    let covered = options.limit.unwrap_or(usize::MAX).min(dataset.items.len());
    let mut dir = RunDir::open(&options.out, spec, options.shard, covered, dataset)?;
    let mut warnings = std::mem::take(&mut dir.warnings);
    if options.retry_errors {
        let n = dir.drop_error_rows()?;
        if n > 0 {
            warnings.push(format!("retrying {n} items whose rows recorded an error"));
        }
    }
    let todo: Vec<usize> = (0..covered)
        .filter(|&i| options.shard.contains(i) && !dir.done.contains(&i))
        .collect();
    let items = (0..covered).filter(|&i| options.shard.contains(i)).count();
    let resumed = items - todo.len();
    for w in &warnings {
        tracing::warn!("{w}");
    }

    let pipeline = pipeline_for(Timed::new(model), spec);
    let mut runner = ItemRunner {
        pipeline: &pipeline,
        spec,
        cached: None,
    };
    let progress = Progress::new(options.progress, items, resumed);
    let (mut written, mut errors) = (0, 0);
    for index in todo {
        let item = &dataset.items[index];
        let row = runner.row(item, index);
        errors += usize::from(row.error.is_some());
        dir.append(&row)?;
        written += 1;
        progress.advance(errors);
    }
    progress.finish();
    Ok(RunSummary {
        results: dir.results_path().to_path_buf(),
        items,
        resumed,
        written,
        errors,
        warnings,
    })
}

/// The pipeline a spec asks for: its token limit and crop selector (side = the encoder's input
/// side, the spec's placement).
fn pipeline_for<M: AttentionSource + GradientSource>(model: M, spec: &RunSpec) -> ViCrop<M> {
    let side = model.geometry().input_side;
    let mut pipeline =
        ViCrop::new(model).with_selector(AdaptiveWindow::new(side).with_placement(spec.placement));
    pipeline.max_new_tokens = spec.max_new_tokens;
    pipeline
}

/// A prepared image: the pipeline's (map methods) or the model's own state (baseline, oracle)
/// with the cost of preparing it, charged to the first item that uses it.
enum Slot<M: VisionLanguageModel> {
    Pipeline(PreparedImage<M>),
    Plain {
        state: M::Image,
        pending: vicrop_core::Cost,
    },
}

impl<M: VisionLanguageModel> Slot<M> {
    fn state(&mut self) -> &mut M::Image {
        match self {
            Slot::Pipeline(p) => p.state(),
            Slot::Plain { state, .. } => state,
        }
    }
}

/// The prepared image of the previous item, reused when the next one asks about the same file.
struct Cached<M: VisionLanguageModel> {
    path: PathBuf,
    size: (u32, u32),
    slot: Slot<M>,
}

struct ItemRunner<'a, M: AttentionSource + GradientSource> {
    pipeline: &'a ViCrop<Timed<M>>,
    spec: &'a RunSpec,
    cached: Option<Cached<Timed<M>>>,
}

/// What one item produced.
struct Answers {
    baseline: AnswerRow,
    crop: Option<CropRow>,
    cost: vicrop_core::Cost,
    timings: vicrop_core::Timings,
    map: Option<SavedMap>,
}

impl<M: AttentionSource + GradientSource> ItemRunner<'_, M> {
    /// The finished row of one item; never fails (failures go into `error`).
    fn row(&mut self, item: &Item, index: usize) -> Row {
        let started = Instant::now();
        let mut row = Row::start(item, index);
        if let Err(e) = self.fill(item, &mut row) {
            row.error = Some(e);
            row.baseline = None;
            row.crop = None;
            row.cost = None;
            row.attention_ratio = None;
            row.timings_ms = None;
            row.map = None;
        }
        row.seconds = started.elapsed().as_secs_f64();
        row
    }

    fn fill(&mut self, item: &Item, row: &mut Row) -> Result<(), String> {
        if self.spec.method == RunMethod::Oracle && item.boxes.is_empty() {
            return Err("the item has no answer box, which --method oracle needs".into());
        }
        let size = self.prepare(item)?;
        row.image_size = Some([size.0, size.1]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let answers = self.answer(item, size)?;
            let ratio = if self.spec.attention_ratio && !item.boxes.is_empty() {
                self.attention_ratio(item, size)?
            } else {
                None
            };
            Ok::<_, String>((answers, ratio))
        }));
        let (answers, ratio) = match outcome {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                // The model state may be half-updated: prepare afresh next time.
                self.cached = None;
                return Err(format!("the model panicked: {}", panic_message(&panic)));
            }
        };
        row.baseline = Some(answers.baseline);
        row.crop = answers.crop;
        row.cost = Some(answers.cost);
        row.timings_ms = Some(answers.timings);
        row.map = answers.map;
        row.attention_ratio = ratio;
        Ok(())
    }

    /// Loads and prepares the item's image unless the previous item had the same one.
    fn prepare(&mut self, item: &Item) -> Result<(u32, u32), String> {
        if let Some(c) = self.cached.as_mut().filter(|c| c.path == item.image) {
            if let Slot::Pipeline(p) = &mut c.slot {
                p.forget_questions();
            }
            return Ok(c.size);
        }
        self.cached = None;
        let image = load_image(&item.image, &LoadLimits::default()).map_err(|e| e.to_string())?;
        let size = image.dimensions();
        let slot = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.spec.method.map_method().is_some() {
                self.pipeline
                    .prepare(&image)
                    .map(Slot::Pipeline)
                    .map_err(|e| format!("preparing the image: {e}"))
            } else {
                let model = self.pipeline.model();
                let mut meter = Meter::new(model.depth().llm_layers);
                model
                    .prepare(&image, &mut meter)
                    .map(|state| Slot::Plain {
                        state,
                        pending: meter.take(),
                    })
                    .map_err(|e| format!("preparing the image: {e}"))
            }
        }))
        .map_err(|panic| {
            format!(
                "the model panicked preparing the image: {}",
                panic_message(&panic)
            )
        })??;
        self.cached = Some(Cached {
            path: item.image.clone(),
            size,
            slot,
        });
        Ok(size)
    }

    fn answer(&mut self, item: &Item, size: (u32, u32)) -> Result<Answers, String> {
        let pipeline = self.pipeline;
        let spec = self.spec;
        let model = pipeline.model();
        let Some(cached) = self.cached.as_mut() else {
            return Err("internal: no prepared image".into());
        };
        let before = model.answer_seconds();
        let started = Instant::now();
        match (&mut cached.slot, spec.method.map_method()) {
            (Slot::Pipeline(prepared), Some(method)) => {
                let question = Question {
                    text: item.question.clone(),
                    short: item.short_question.clone(),
                    method,
                    layer: spec.layer,
                    connector_layer: None,
                    high_res: spec.high_res,
                };
                let out = pipeline
                    .run(prepared, &question)
                    .map_err(|e| e.to_string())?;
                let total = started.elapsed().as_secs_f64();
                let baseline_s = model.answer_seconds() - before;
                Ok(Answers {
                    baseline: AnswerRow {
                        text: out.answer.text,
                        token_ids: out.answer.token_ids,
                        seconds: baseline_s,
                    },
                    crop: Some(CropRow {
                        text: out.crop_answer.text,
                        token_ids: out.crop_answer.token_ids,
                        bbox: out.bbox.to_array(),
                        seconds: (total - baseline_s).max(0.0),
                    }),
                    cost: out.cost,
                    timings: out.timings,
                    map: spec.save_maps.then(|| SavedMap::new(&out.map)),
                })
            }
            (Slot::Plain { state, pending }, None) => {
                let mut meter = Meter::new(model.depth().llm_layers);
                let (answer, _) = model
                    .answer(state, &item.question, spec.max_new_tokens, None, &mut meter)
                    .map_err(|e| e.to_string())?;
                meter.lap(Stage::Decode);
                let baseline_s = started.elapsed().as_secs_f64();
                let crop = if spec.method == RunMethod::Oracle {
                    let crop_started = Instant::now();
                    let side = model.geometry().input_side;
                    let b = oracle_crop(&item.boxes, size, side)
                        .ok_or("the answer boxes lie outside the image")?;
                    let image = model.image(state);
                    let crop = image::imageops::crop_imm(image, b.x0, b.y0, b.width(), b.height())
                        .to_image();
                    meter.lap(Stage::Box);
                    let answer = model
                        .answer_with_crop(
                            state,
                            &crop,
                            &item.question,
                            spec.max_new_tokens,
                            &mut meter,
                        )
                        .map_err(|e| e.to_string())?;
                    meter.lap(Stage::FinalAnswer);
                    Some(CropRow {
                        text: answer.text,
                        token_ids: answer.token_ids,
                        bbox: b.to_array(),
                        seconds: crop_started.elapsed().as_secs_f64(),
                    })
                } else {
                    None
                };
                let mut cost = std::mem::take(pending);
                cost += meter.take();
                let timings = meter.take_timings(started.elapsed());
                Ok(Answers {
                    baseline: AnswerRow {
                        text: answer.text,
                        token_ids: answer.token_ids,
                        seconds: baseline_s,
                    },
                    crop,
                    cost,
                    timings,
                    map: None,
                })
            }
            _ => Err("internal: the prepared image does not fit the method".into()),
        }
    }

    /// Paper Fig. 1: at every language-model layer, the question's attention map (head mean,
    /// chained through the connector at its default layer; the short question when the item
    /// has one, as the map passes use) and its ratio for the item's boxes, averaged over the
    /// boxes where it is defined. `None` when it is undefined at some layer (every box outside
    /// the region the encoder saw, e.g. beside LLaVA's centre crop): the answers stand, the
    /// ratio is null. Not counted in `cost`: it is analysis, not the method.
    fn attention_ratio(
        &mut self,
        item: &Item,
        size: (u32, u32),
    ) -> Result<Option<Vec<f64>>, String> {
        let model = self.pipeline.model();
        let Some(cached) = self.cached.as_mut() else {
            return Err("internal: no prepared image".into());
        };
        let state = cached.slot.state();
        let depth: Depth = model.depth();
        let grid = model.geometry().grid;
        let region = model.region(state);
        let mut meter = Meter::new(depth.llm_layers);
        let mut ratios = Vec::with_capacity(depth.llm_layers);
        for layer in 0..depth.llm_layers {
            let request = AttentionRequest {
                layer,
                connector_layer: depth.default_connector_layer(),
                with_grad: false,
            };
            let signal = model
                .attention(state, item.map_question(), request, &mut meter)
                .map_err(|e| format!("attention ratio, layer {layer}: {e}"))?;
            let values = vicrop_core::method::attention_map(&signal, false)
                .map_err(|e| format!("attention ratio, layer {layer}: {e}"))?;
            let map = SaliencyMap::new(grid, grid, values)
                .map_err(|e| format!("attention ratio, layer {layer}: {e}"))?
                .with_region(region);
            let per_box: Vec<f64> = item
                .boxes
                .iter()
                .filter_map(|b| map.attention_ratio(b.map(f64::from), size))
                .collect();
            if per_box.is_empty() {
                return Ok(None);
            }
            ratios.push(per_box.iter().sum::<f64>() / per_box.len() as f64);
        }
        Ok(Some(ratios))
    }
}

/// The oracle crop: the square of side `side` around the union of the answer boxes (grown to
/// cover it, moved inside the image and clipped), as `vicrop scenes` makes it
/// ([`crate::scenes::oracle_box`]). `None` when the boxes miss the image.
pub fn oracle_crop(boxes: &[[f32; 4]], image: (u32, u32), side: u32) -> Option<CropBox> {
    let (w, h) = image;
    let mut union: Option<[f32; 4]> = None;
    for b in boxes {
        union = Some(match union {
            None => *b,
            Some(u) => [
                u[0].min(b[0]),
                u[1].min(b[1]),
                u[2].max(b[2]),
                u[3].max(b[3]),
            ],
        });
    }
    let [x0, y0, x1, y1] = union?;
    let clip = |v: f32, len: u32| (v.max(0.0) as u32).min(len);
    let target = [
        clip(x0.floor(), w),
        clip(y0.floor(), h),
        clip(x1.ceil(), w),
        clip(y1.ceil(), h),
    ];
    if target[2] <= target[0] || target[3] <= target[1] {
        return None;
    }
    Some(crate::scenes::oracle_box(target, image, side.max(1)))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// The progress bar (a terminal) or a line a minute (logs), starting at the resumed count.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: Option<std::cell::Cell<Instant>>,
    started: Instant,
    total: usize,
    resumed: usize,
    done: std::cell::Cell<usize>,
}

impl Progress {
    const PLAIN_EVERY: Duration = Duration::from_secs(60);

    fn new(enabled: bool, total: usize, resumed: usize) -> Self {
        let mut p = Self {
            bar: None,
            plain: None,
            started: Instant::now(),
            total,
            resumed,
            done: std::cell::Cell::new(resumed),
        };
        if !enabled {
            return p;
        }
        if indicatif::ProgressDrawTarget::stderr().is_hidden() {
            p.plain = Some(std::cell::Cell::new(Instant::now()));
            return p;
        }
        // Start at the resumed count, hidden until the estimator is reset, so the rate and
        // ETA count only this run's items.
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total as u64),
            indicatif::ProgressDrawTarget::hidden(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} items  {per_sec}  eta {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_position(resumed as u64);
        bar.reset_eta();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.tick();
        p.bar = Some(bar);
        p
    }

    fn advance(&self, errors: usize) {
        self.done.set(self.done.get() + 1);
        if let Some(bar) = &self.bar {
            if errors > 0 {
                bar.set_message(format!("{errors} failed"));
            }
            bar.inc(1);
        }
        if let Some(last) = &self.plain {
            if last.get().elapsed() >= Self::PLAIN_EVERY {
                last.set(Instant::now());
                eprintln!("{}", self.line(errors));
            }
        }
    }

    fn line(&self, errors: usize) -> String {
        let done = self.done.get();
        let new = done - self.resumed;
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { new as f64 / secs } else { 0.0 };
        let left = self.total.saturating_sub(done);
        let eta = if rate > 0.0 {
            format!("{:.0}s", left as f64 / rate)
        } else {
            "?".into()
        };
        format!(
            "{done}/{} items, {rate:.2} items/s, eta {eta}, {errors} failed",
            self.total
        )
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

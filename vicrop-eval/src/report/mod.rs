//! Reports over finished run folders (`vicrop eval run --out DIR`, merged): the paper's main
//! table, its Table 1 (accuracy by the relative size of the answer box) and its Figure 1 (the
//! attention ratio per layer), as markdown, CSV and PNG plots. `vicrop eval report DIR...` is
//! [`Report::from_dirs`] then [`Report::markdown`] (and [`Report::write`] with `--out`).
//!
//! - **Main table**: one row per model x method (the manifest's `model_name`; its `method`,
//!   with ` high-res`, ` map-region` and ` layer N` added for `high_res`, the `map-region`
//!   placement and an explicit `--layer`), two columns per task: the accuracy of the answer
//!   without the crop (each row's `baseline` answer) and with it (`crop`), in percent, by the
//!   task's primary metric ([`MetricSet::primary`]; the reference's scoring by default, as the
//!   paper). The CSV holds every metric of the task.
//! - **By answer-box size**: the same per [`SizeBin`] of the relative area of the answer box
//!   ([`relative_box_area`]: the bounding box of all the row's `boxes`, over the image area);
//!   rows without boxes or without `image_size` are left out. The oracle method is its own
//!   row.
//! - **Attention ratio**: per LLM layer, the mean of the rows' `attention_ratio` with its 95%
//!   confidence interval ([`mean_ci95`]: mean +- 1.96 sd / sqrt(n), sd the sample standard
//!   deviation), over all rows and split by whether the answer without the crop was right.
//!
//! A row with an `error` (or without the answer a column needs) counts as wrong, and the
//! number of such rows is reported per run ([`Run::failed`]).
//!
//! ```no_run
//! use std::path::PathBuf;
//! use vicrop_eval::report::Report;
//!
//! let report = Report::from_dirs(&[PathBuf::from("runs/llava-textvqa-rel-att")])?;
//! print!("{}", report.markdown());
//! report.write("runs/report".as_ref())?; // report.md, *.csv, *.png
//! # Ok::<(), vicrop_eval::report::ReportError>(())
//! ```

mod input;
mod plot;
mod render;
mod stats;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::score::{Metric, Scores, Task};

pub use stats::{mean_ci95, relative_box_area, MeanCi};

/// Upper bound (exclusive) of the relative box area of [`SizeBin::Small`]: 0.005.
pub const SMALL_MAX: f64 = 0.005;
/// Upper bound (exclusive) of the relative box area of [`SizeBin::Medium`]: 0.05.
pub const MEDIUM_MAX: f64 = 0.05;

/// The paper's answer-box size buckets (Table 1), by relative area `a` (box area over image
/// area): small `a < 0.005`, medium `0.005 <= a < 0.05`, large `a >= 0.05`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SizeBin {
    /// `a < 0.005`.
    Small,
    /// `0.005 <= a < 0.05`.
    Medium,
    /// `a >= 0.05`.
    Large,
}

impl SizeBin {
    /// The three bins, small to large.
    pub const ALL: [SizeBin; 3] = [SizeBin::Small, SizeBin::Medium, SizeBin::Large];

    /// The bin of a relative area.
    pub fn of_relative_area(area: f64) -> SizeBin {
        if area < SMALL_MAX {
            SizeBin::Small
        } else if area < MEDIUM_MAX {
            SizeBin::Medium
        } else {
            SizeBin::Large
        }
    }

    /// `small`, `medium` or `large` (the CSV's `size` column).
    pub fn name(self) -> &'static str {
        match self {
            SizeBin::Small => "small",
            SizeBin::Medium => "medium",
            SizeBin::Large => "large",
        }
    }

    /// The name with its range, for tables and plots: `small (< 0.5%)`.
    pub fn label(self) -> &'static str {
        match self {
            SizeBin::Small => "small (< 0.5%)",
            SizeBin::Medium => "medium (0.5-5%)",
            SizeBin::Large => "large (>= 5%)",
        }
    }
}

impl fmt::Display for SizeBin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which metric of a task the markdown table and the plots show (the CSVs hold them all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MetricSet {
    /// The ViCrop reference's `get_score.py`, which the paper's tables report:
    /// `vqa_reference` (TextVQA, VQAv2, A-OKVQA), `gqa_contains`, `docvqa_substring`,
    /// `pope_accuracy`, `vstar_option`.
    #[default]
    Reference,
    /// Each benchmark's own metric where it differs: `vqa_official` (TextVQA, VQAv2, A-OKVQA)
    /// and `anls` (DocVQA); the others as [`MetricSet::Reference`].
    Official,
}

impl MetricSet {
    /// The metric shown for a task.
    pub fn primary(self, task: Task) -> Metric {
        match (self, task) {
            (MetricSet::Reference, Task::TextVqa | Task::VqaV2 | Task::AOkVqa) => {
                Metric::VqaReference
            }
            (MetricSet::Official, Task::TextVqa | Task::VqaV2 | Task::AOkVqa) => {
                Metric::VqaOfficial
            }
            (MetricSet::Reference, Task::DocVqa) => Metric::DocvqaSubstring,
            (MetricSet::Official, Task::DocVqa) => Metric::Anls,
            (_, Task::Gqa) => Metric::GqaContains,
            (_, Task::Pope) => Metric::PopeAccuracy,
            (_, Task::Vstar) => Metric::VstarOption,
        }
    }

    /// `reference` or `official`.
    pub fn name(self) -> &'static str {
        match self {
            MetricSet::Reference => "reference",
            MetricSet::Official => "official",
        }
    }
}

/// The accuracy of one run on the items of one answer-box size bin.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeCell {
    /// The bin.
    pub bin: SizeBin,
    /// Items in the bin (failed ones included).
    pub n: usize,
    /// Of them, items that failed (counted wrong).
    pub failed: usize,
    /// Every metric of the task without the crop; `None` when the bin is empty.
    pub no_crop: Option<Scores>,
    /// With the crop; `None` when the bin is empty or the run has no crop answers.
    pub crop: Option<Scores>,
}

/// The attention ratio of one run, per LLM layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    /// Rows that carry an `attention_ratio`.
    pub n: usize,
    /// Per layer (index into the rows' `attention_ratio` arrays), over all those rows.
    pub all: Vec<MeanCi>,
    /// The same over the rows whose answer without the crop was right (primary metric at
    /// least 50% for the item); `None` when there is none.
    pub correct: Option<Vec<MeanCi>>,
    /// The same over the rows whose answer without the crop was wrong, failed rows included;
    /// `None` when there is none.
    pub incorrect: Option<Vec<MeanCi>>,
}

/// One run folder, scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The folder.
    pub dir: PathBuf,
    /// The manifest's `model_name`.
    pub model: String,
    /// The manifest's `method` as given (`rel-att`, `oracle`, ...).
    pub method: String,
    /// The row label: `method`, then ` high-res` when `high_res`, ` map-region` for that
    /// placement, ` layer N` for an explicit `--layer`.
    pub label: String,
    /// The manifest's `high_res`.
    pub high_res: bool,
    /// The task.
    pub task: Task,
    /// Rows in `results.jsonl`.
    pub n: usize,
    /// Rows with an `error` or without an answer the table needs; they count as wrong.
    pub failed: usize,
    /// Every metric of the task on the answers without the crop, over all rows.
    pub no_crop: Scores,
    /// The same with the crop; `None` for method `baseline`.
    pub crop: Option<Scores>,
    /// Per [`SizeBin`], small to large (always three cells).
    pub by_size: Vec<SizeCell>,
    /// Rows left out of the size table: no `boxes`, or no `image_size`.
    pub without_box: usize,
    /// The attention ratio, when rows carry one.
    pub attention: Option<Attention>,
}

impl Run {
    /// Whether this run has crop answers (every method but `baseline`).
    pub fn has_crop(&self) -> bool {
        self.crop.is_some()
    }
}

/// Why a report could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReportError {
    /// No run folder was given.
    NoRuns,
    /// The path is not a usable run folder: missing, not a folder, no manifest, no results.
    NotARunFolder {
        /// The folder given.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A sharded run whose shards were not merged yet.
    ShardsNotMerged {
        /// The folder given.
        dir: PathBuf,
        /// The `results-K-of-N.jsonl` files found.
        shards: Vec<String>,
    },
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `manifest.json` is malformed.
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A line of `results.jsonl` is malformed, or cannot be scored for the task.
    Results {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Two rows of a results file share an id.
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// The id.
        id: String,
        /// 1-based line of its first row.
        first: usize,
        /// 1-based line of the repeat.
        second: usize,
    },
    /// A results file without rows.
    EmptyResults {
        /// The file.
        path: PathBuf,
    },
    /// Two folders hold the same model x method x task.
    DuplicateRun {
        /// The model.
        model: String,
        /// The method label.
        method: String,
        /// The task.
        task: Task,
        /// The first folder.
        first: PathBuf,
        /// The second folder.
        second: PathBuf,
    },
    /// A plot could not be drawn.
    Plot {
        /// The PNG it was for.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::NoRuns => write!(f, "no run folder given"),
            ReportError::NotARunFolder { dir, reason } => {
                write!(f, "{} is not a run folder: {reason}", dir.display())
            }
            ReportError::ShardsNotMerged { dir, shards } => write!(
                f,
                "{} holds shard results ({}) but no results.jsonl: run `vicrop eval merge {}` first",
                dir.display(),
                shards.join(", "),
                dir.display()
            ),
            ReportError::Io { path, source } => {
                write!(f, "cannot access {}: {source}", path.display())
            }
            ReportError::Manifest { path, message } => write!(f, "{}: {message}", path.display()),
            ReportError::Results {
                path,
                line,
                message,
            } => write!(f, "{}: line {line}: {message}", path.display()),
            ReportError::DuplicateId {
                path,
                id,
                first,
                second,
            } => write!(
                f,
                "{}: id `{id}` appears on line {first} and again on line {second}",
                path.display()
            ),
            ReportError::EmptyResults { path } => {
                write!(f, "{}: no results in the file", path.display())
            }
            ReportError::DuplicateRun {
                model,
                method,
                task,
                first,
                second,
            } => write!(
                f,
                "{} and {} both hold model `{model}`, method `{method}`, task `{task}`; \
                 give one of them (or merge their shards into one folder)",
                first.display(),
                second.display()
            ),
            ReportError::Plot { path, message } => {
                write!(f, "cannot draw {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Order of the methods in the tables: no crop first, the paper's three maps, the oracle last.
fn method_rank(method: &str) -> usize {
    match method {
        "baseline" => 0,
        "rel-att" => 1,
        "grad-att" => 2,
        "pure-grad" => 3,
        "oracle" => 5,
        _ => 4,
    }
}

/// The report over a set of run folders. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Report {
    runs: Vec<Run>,
    metric_set: MetricSet,
}

impl Report {
    /// Reads and scores run folders with the reference's metrics ([`MetricSet::Reference`]).
    ///
    /// Errors: no folder; a folder that does not exist, has no `manifest.json` or no
    /// `results.jsonl` (shard files only: [`ReportError::ShardsNotMerged`], run
    /// `vicrop eval merge`); a malformed manifest or results line (file and line named); a
    /// repeated id; a row the task cannot score (a POPE label other than yes/no, a V* row
    /// without options); rows with attention ratios of different lengths; two folders with
    /// the same model x method x task (both named).
    pub fn from_dirs(dirs: &[PathBuf]) -> Result<Report, ReportError> {
        Self::from_dirs_with(dirs, MetricSet::Reference)
    }

    /// [`Report::from_dirs`] with the primary metrics of `metric_set` (for the markdown table,
    /// the plots and the correct/incorrect split of the attention ratio).
    pub fn from_dirs_with(dirs: &[PathBuf], metric_set: MetricSet) -> Result<Report, ReportError> {
        if dirs.is_empty() {
            return Err(ReportError::NoRuns);
        }
        let mut seen: HashMap<(String, String, Task), PathBuf> = HashMap::new();
        let mut runs = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let input = input::read_run(dir)?;
            let run = stats::score_run(&input, metric_set)?;
            let key = (run.model.clone(), run.label.clone(), run.task);
            if let Some(first) = seen.get(&key) {
                return Err(ReportError::DuplicateRun {
                    model: run.model,
                    method: run.label,
                    task: run.task,
                    first: first.clone(),
                    second: run.dir,
                });
            }
            seen.insert(key, run.dir.clone());
            runs.push(run);
        }
        runs.sort_by(|a, b| {
            let key = |r: &Run| {
                (
                    r.model.clone(),
                    r.method == "oracle",
                    r.high_res,
                    method_rank(&r.method),
                    r.label.clone(),
                    Task::ALL.iter().position(|&t| t == r.task),
                )
            };
            key(a).cmp(&key(b))
        });
        Ok(Report { runs, metric_set })
    }

    /// The runs, sorted by model, then method (baseline, rel-att, grad-att, pure-grad, the
    /// high-res runs, oracle), then task.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// The run of a model, method label ([`Run::label`]) and task.
    pub fn run(&self, model: &str, label: &str, task: Task) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.model == model && r.label == label && r.task == task)
    }

    /// The metric set of the markdown table and the plots.
    pub fn metric_set(&self) -> MetricSet {
        self.metric_set
    }

    /// The tasks present, in [`Task::ALL`] order (the table's columns).
    pub fn tasks(&self) -> Vec<Task> {
        Task::ALL
            .into_iter()
            .filter(|t| self.runs.iter().any(|r| r.task == *t))
            .collect()
    }

    /// The (model, method label) rows of the main table, in order.
    pub fn rows(&self) -> Vec<(&str, &str)> {
        let mut rows: Vec<(&str, &str)> = Vec::new();
        for r in &self.runs {
            if !rows.iter().any(|&(m, l)| m == r.model && l == r.label) {
                rows.push((&r.model, &r.label));
            }
        }
        rows
    }

    /// The report as markdown: the main table, the runs (items, failed items, folders), the
    /// accuracy by answer-box size per task with boxes, the attention ratio per layer per task
    /// with attention ratios. What `vicrop eval report` prints.
    pub fn markdown(&self) -> String {
        render::markdown(self, None)
    }

    /// `main.csv`: one line per run and metric:
    /// `model,method,task,metric,primary,n,failed,no_crop,crop,folder` (accuracies in percent,
    /// unrounded; `crop` empty for method baseline).
    pub fn main_csv(&self) -> String {
        render::main_csv(self)
    }

    /// `by_size.csv`: one line per run, size bin and metric:
    /// `model,method,task,size,metric,primary,n,failed,no_crop,crop` (empty bins left out).
    pub fn by_size_csv(&self) -> String {
        render::by_size_csv(self)
    }

    /// `attention_ratio.csv`: one line per run, subset (`all`, `correct`, `incorrect`) and
    /// layer: `model,method,task,subset,layer,n,mean,sd,ci95_low,ci95_high` (`sd` and the
    /// interval empty when n < 2).
    pub fn attention_csv(&self) -> String {
        render::attention_csv(self)
    }

    /// Writes into `out_dir` (created if missing): `report.md` (the markdown with the plots
    /// linked), `main.csv`, `by_size.csv`, `attention_ratio.csv`, and the PNG plots
    /// `by_size-<task>.png` (grouped bars, per task with answer boxes) and
    /// `attention_ratio-<task>.png` (lines with 95% bands, per task with attention ratios).
    /// Returns the files written.
    pub fn write(&self, out_dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
            path: out_dir.to_path_buf(),
            source,
        })?;
        let mut written = Vec::new();
        let mut plots: Vec<(String, String)> = Vec::new();
        for task in self.tasks() {
            if self.has_sizes(task) {
                let name = format!("by_size-{task}.png");
                let path = out_dir.join(&name);
                plot::size_plot(self, task, &path)?;
                written.push(path);
                plots.push((format!("Accuracy by answer-box size, {task}"), name));
            }
            if self.has_attention(task) {
                let name = format!("attention_ratio-{task}.png");
                let path = out_dir.join(&name);
                plot::attention_plot(self, task, &path)?;
                written.push(path);
                plots.push((format!("Attention ratio per layer, {task}"), name));
            }
        }
        let files = [
            ("report.md", render::markdown(self, Some(&plots))),
            ("main.csv", self.main_csv()),
            ("by_size.csv", self.by_size_csv()),
            ("attention_ratio.csv", self.attention_csv()),
        ];
        for (name, text) in files {
            let path = out_dir.join(name);
            std::fs::write(&path, text).map_err(|source| ReportError::Io {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
        Ok(written)
    }

    /// Whether some run of `task` has items in a size bin.
    pub(crate) fn has_sizes(&self, task: Task) -> bool {
        self.runs
            .iter()
            .any(|r| r.task == task && r.by_size.iter().any(|c| c.n > 0))
    }

    /// Whether some run of `task` has attention ratios.
    pub(crate) fn has_attention(&self, task: Task) -> bool {
        self.runs
            .iter()
            .any(|r| r.task == task && r.attention.is_some())
    }
}

//! Benchmark datasets: one loader per format, all giving the same [`Item`]s.
//!
//! A dataset is read from a `--data PATH` (a file, or the folder that holds it; see each
//! format's module for what it expects) with [`Dataset::load`]. Formats:
//!
//! | [`Format`] | module | reads |
//! |---|---|---|
//! | `reference` | [`reference`](mod@reference) | the ViCrop reference repo's `data.json` (any task) |
//! | `textvqa` | [`textvqa`] | `TextVQA_0.5.1_val.json` (+ the authors' answer boxes) |
//! | `vqav2` | [`vqav2`] | VQAv2 questions + annotations JSON |
//! | `gqa` | [`gqa`] | GQA balanced questions JSON |
//! | `aokvqa` | [`aokvqa`] | A-OKVQA `aokvqa_v1p0_val.json` |
//! | `pope` | [`pope`] | POPE JSONL (`coco_pope_random.json`, ...) |
//! | `vstar` | [`vstar`] | V* Bench `test_questions.jsonl` + per-image annotation JSONs |
//! | `docvqa` | [`docvqa`] | DocVQA (Task 1) `val_v1.0_withQT.json` |
//!
//! Loading never panics on user data. A malformed record is a [`DataError`] naming the file,
//! the line (JSONL) or the index/key (JSON) and what is wrong; duplicate ids name both places;
//! an item without labels is an error (every format here is scored against its labels); text
//! that is not UTF-8 is an error naming the file and where. A missing image is *not* a load
//! error: the runner records it per item ([`Item::check_image`], [`Dataset::missing_images`]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod aokvqa;
pub mod docvqa;
pub mod gqa;
mod json;
pub mod pope;
pub mod reference;
pub mod textvqa;
pub mod vqav2;
pub mod vstar;

/// One question of a benchmark, in the form every loader gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The benchmark's question id as a string (unique within a [`Dataset`]).
    pub id: String,
    /// Where the image should be: the image root joined with the record's image path. Not
    /// checked at load time (see [`Item::check_image`]).
    pub image: PathBuf,
    /// The question as the model is asked it (for V*, with its option lines and instruction).
    pub question: String,
    /// Ground-truth answers, at least one: the human answers (VQA-style, TextVQA, A-OKVQA
    /// direct answers), the answer (GQA, POPE `yes`/`no`), the correct option letter (V*), or
    /// the accepted answers (DocVQA).
    pub labels: Vec<String>,
    /// A shorter question for the map passes (method.md section 2); `None`: use `question`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_question: Option<String>,
    /// The candidates a multiple-choice scorer compares a prediction against: A-OKVQA's
    /// `choices`; V*'s option lines as they appear in the question (`"(A) red"`, the lines the
    /// reference's scorer matches against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// Ground-truth answer boxes `[x0, y0, x1, y1]` in original image pixels (TextVQA with the
    /// authors' box set, V* target objects); empty when the format gives none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boxes: Vec<[f32; 4]>,
    /// The image size `(width, height)` in pixels when the format states it (TextVQA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<(u32, u32)>,
    /// A subset name when the format has one: VQAv2 `answer_type`, V* `category`, POPE the
    /// file's stem (`coco_pope_random`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

impl Item {
    /// The question for the map passes: `short_question` if set, else `question`.
    pub fn map_question(&self) -> &str {
        self.short_question.as_deref().unwrap_or(&self.question)
    }

    /// Whether the image file exists and is a readable regular file (its content is not
    /// decoded). The runner records the error per item and goes on.
    pub fn check_image(&self) -> Result<(), ImageProblem> {
        let problem = |reason: String| ImageProblem {
            id: self.id.clone(),
            path: self.image.clone(),
            reason,
        };
        match std::fs::metadata(&self.image) {
            Ok(m) if m.is_file() => match std::fs::File::open(&self.image) {
                Ok(_) => Ok(()),
                Err(e) => Err(problem(format!("cannot be opened: {e}"))),
            },
            Ok(_) => Err(problem("is not a file".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(problem("does not exist".into()))
            }
            Err(e) => Err(problem(format!("cannot be read: {e}"))),
        }
    }
}

/// An item whose image is missing or unreadable ([`Item::check_image`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageProblem {
    /// The item's id.
    pub id: String,
    /// The image path it names.
    pub path: PathBuf,
    /// What is wrong (`does not exist`, `is not a file`, ...).
    pub reason: String,
}

impl fmt::Display for ImageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "item {:?}: image {} {}",
            self.id,
            self.path.display(),
            self.reason
        )
    }
}

impl std::error::Error for ImageProblem {}

/// A dataset format, chosen by name (`--task`/`--format` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The ViCrop reference repo's `data.json` ([`reference`](mod@reference)).
    Reference,
    /// TextVQA 0.5.1 ([`textvqa`]).
    TextVqa,
    /// VQAv2 ([`vqav2`]).
    VqaV2,
    /// GQA balanced questions ([`gqa`]).
    Gqa,
    /// A-OKVQA ([`aokvqa`]).
    AOkVqa,
    /// POPE ([`pope`]).
    Pope,
    /// V* Bench ([`vstar`]).
    VStar,
    /// DocVQA Task 1 ([`docvqa`]).
    DocVqa,
}

impl Format {
    /// Every format, in the order of [`Format::name`]s listed in errors.
    pub const ALL: [Format; 8] = [
        Format::Reference,
        Format::TextVqa,
        Format::VqaV2,
        Format::Gqa,
        Format::AOkVqa,
        Format::Pope,
        Format::VStar,
        Format::DocVqa,
    ];

    /// The format's name: `reference`, `textvqa`, `vqav2`, `gqa`, `aokvqa`, `pope`, `vstar`,
    /// `docvqa` (the native formats' names are also the scorers' task names).
    pub fn name(self) -> &'static str {
        match self {
            Format::Reference => "reference",
            Format::TextVqa => "textvqa",
            Format::VqaV2 => "vqav2",
            Format::Gqa => "gqa",
            Format::AOkVqa => "aokvqa",
            Format::Pope => "pope",
            Format::VStar => "vstar",
            Format::DocVqa => "docvqa",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown format name given to [`Format::from_str`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFormatError(pub String);

impl fmt::Display for ParseFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        write!(
            f,
            "unknown dataset format {:?}; valid formats: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for ParseFormatError {}

impl FromStr for Format {
    type Err = ParseFormatError;

    /// Case-insensitive [`Format::name`]; `a-okvqa` and `v*` are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let alias = match lower.as_str() {
            "a-okvqa" => "aokvqa",
            "v*" | "vstar_bench" => "vstar",
            other => other,
        };
        Format::ALL
            .into_iter()
            .find(|f| f.name() == alias)
            .ok_or_else(|| ParseFormatError(s.to_string()))
    }
}

/// Options of [`Dataset::load`] beyond the `--data` path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The folder image paths are relative to, replacing the format's default (see each
    /// format's module; usually the folder of the data file).
    pub images: Option<PathBuf>,
    /// TextVQA only: the authors' ground-truth box set (`jrzhang/TextVQA_GT_bbox` exported to
    /// JSON lines, see [`textvqa`]). Without it a `TextVQA_GT_bbox.jsonl` next to the data file
    /// is used if present.
    pub boxes: Option<PathBuf>,
}

/// A loaded dataset: its items in file order and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The format it was read as.
    pub format: Format,
    /// The data file read (VQAv2: the questions file; POPE folder: the first file).
    pub file: PathBuf,
    /// Other files read: VQAv2's annotations file, TextVQA's box set, POPE's further files
    /// (folder mode). V*'s per-image annotation JSONs are not listed.
    pub extra_files: Vec<PathBuf>,
    /// The folder the items' image paths were joined to.
    pub image_root: PathBuf,
    /// The items, in file order.
    pub items: Vec<Item>,
}

impl Dataset {
    /// Reads a dataset of `format` from `data` (a file, or a folder holding the format's
    /// default file name; see the format's module).
    pub fn load(format: Format, data: &Path, options: &LoadOptions) -> Result<Self, DataError> {
        if options.boxes.is_some() && format != Format::TextVqa {
            return Err(DataError::Layout(format!(
                "an answer-box file is only read for textvqa, not for {format}"
            )));
        }
        let dataset = match format {
            Format::Reference => reference::load(data, options),
            Format::TextVqa => textvqa::load(data, options),
            Format::VqaV2 => vqav2::load(data, options),
            Format::Gqa => gqa::load(data, options),
            Format::AOkVqa => aokvqa::load(data, options),
            Format::Pope => pope::load(data, options),
            Format::VStar => vstar::load(data, options),
            Format::DocVqa => docvqa::load(data, options),
        }?;
        if dataset.items.is_empty() {
            return Err(DataError::Layout(format!(
                "{} holds no items",
                dataset.file.display()
            )));
        }
        Ok(dataset)
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items (never true for a loaded dataset).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items whose image is missing or unreadable, in item order.
    pub fn missing_images(&self) -> Vec<ImageProblem> {
        self.items
            .iter()
            .filter_map(|item| item.check_image().err())
            .collect()
    }
}

/// Loads `format` from `data`: [`Dataset::load`].
pub fn load(format: Format, data: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    Dataset::load(format, data, options)
}

/// Where in a file a record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A line of a JSONL file (1-based).
    Line(usize),
    /// An element of a JSON list: `list` is the key holding it (`None` for a top-level list),
    /// `index` 0-based.
    Index {
        /// The key of the list (`data`, `questions`, ...), `None` at top level.
        list: Option<String>,
        /// 0-based position in the list.
        index: usize,
    },
    /// An entry of a JSON object keyed by id (GQA).
    Key(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Index { list: None, index } => write!(f, "record [{index}]"),
            Location::Index {
                list: Some(l),
                index,
            } => write!(f, "{l}[{index}]"),
            Location::Key(k) => write!(f, "record {k:?}"),
        }
    }
}

/// Why a dataset could not be loaded. Every variant names the file.
#[derive(Debug)]
pub enum DataError {
    /// A file could not be read.
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not UTF-8 text.
    NotUtf8 {
        /// The file.
        file: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based byte column of the first invalid byte in that line.
        column: usize,
    },
    /// A JSON file does not parse (`not valid JSON: ...`), or its top level is not the
    /// expected shape (`not the expected layout: ...`).
    Json {
        /// The file.
        file: PathBuf,
        /// What is wrong; serde_json's messages end with its line and column.
        message: String,
    },
    /// One record is malformed.
    Record {
        /// The file.
        file: PathBuf,
        /// Where the record is.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// Two records have the same id.
    Duplicate {
        /// The file.
        file: PathBuf,
        /// The id.
        id: String,
        /// The first record with it.
        first: Location,
        /// The second record with it.
        second: Location,
    },
    /// A folder lacks the expected file, a file is ambiguous, or an option does not apply.
    Layout(String),
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io { file, source } => write!(f, "cannot read {}: {source}", file.display()),
            DataError::NotUtf8 { file, line, column } => write!(
                f,
                "{}: not UTF-8 text (invalid byte at line {line}, column {column}); \
                 convert the file to UTF-8",
                file.display()
            ),
            DataError::Json { file, message } => write!(f, "{}: {message}", file.display()),
            DataError::Record { file, at, message } => {
                write!(f, "{}, {at}: {message}", file.display())
            }
            DataError::Duplicate {
                file,
                id,
                first,
                second,
            } => write!(
                f,
                "{}: duplicate id {id:?}: {first} and {second}",
                file.display()
            ),
            DataError::Layout(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Tracks ids seen so far and rejects a repeat, naming both places.
#[derive(Debug, Default)]
pub(crate) struct UniqueIds {
    seen: HashMap<String, Location>,
}

impl UniqueIds {
    /// Records `id` at `at`; a [`DataError::Duplicate`] if it was seen before.
    pub(crate) fn insert(&mut self, file: &Path, id: &str, at: &Location) -> Result<(), DataError> {
        if let Some(first) = self.seen.get(id) {
            return Err(DataError::Duplicate {
                file: file.to_path_buf(),
                id: id.to_string(),
                first: first.clone(),
                second: at.clone(),
            });
        }
        self.seen.insert(id.to_string(), at.clone());
        Ok(())
    }
}

/// The items a loader makes of one file's records, in order: a record's message becomes a
/// [`DataError::Record`] naming the file and where the record is, a repeated id a
/// [`DataError::Duplicate`] naming both places.
pub(crate) struct ItemSink<'f> {
    file: &'f Path,
    items: Vec<Item>,
    ids: UniqueIds,
}

impl<'f> ItemSink<'f> {
    /// An empty sink for the records of `file`.
    pub(crate) fn new(file: &'f Path) -> Self {
        Self {
            file,
            items: Vec::new(),
            ids: UniqueIds::default(),
        }
    }

    /// Takes the item made of the record at `at`, or the reason it could not be made.
    pub(crate) fn push(
        &mut self,
        at: Location,
        made: Result<Item, String>,
    ) -> Result<(), DataError> {
        let item = made.map_err(|message| DataError::Record {
            file: self.file.to_path_buf(),
            at: at.clone(),
            message,
        })?;
        self.ids.insert(self.file, &item.id, &at)?;
        self.items.push(item);
        Ok(())
    }

    /// The items, in the order of their records.
    pub(crate) fn into_items(self) -> Vec<Item> {
        self.items
    }
}

/// `data` itself when it is a file; for a folder, the first of `names` it holds. The error
/// says what was looked for.
pub(crate) fn resolve_file(
    data: &Path,
    names: &[&str],
    format: Format,
) -> Result<PathBuf, DataError> {
    if data.is_dir() {
        for name in names {
            let candidate = data.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        return Err(DataError::Layout(format!(
            "{} is a folder without {}; pass the {format} data file itself or a folder holding it",
            data.display(),
            names.join(" or ")
        )));
    }
    if !data.exists() {
        return Err(DataError::Layout(format!(
            "{format} data {} does not exist",
            data.display()
        )));
    }
    Ok(data.to_path_buf())
}

/// The folder of `file` (`.` for a bare file name).
pub(crate) fn parent_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `[x, y, w, h]` (the box convention of TextVQA's box set and V*) as `[x0, y0, x1, y1]`;
/// the message says what is wrong with a non-finite or empty box.
pub(crate) fn xywh_to_corners(b: [f64; 4]) -> Result<[f32; 4], String> {
    let [x, y, w, h] = b;
    if !b.iter().all(|v| v.is_finite()) {
        return Err(format!("box {b:?} has a non-finite value"));
    }
    if w <= 0.0 || h <= 0.0 {
        return Err(format!("box {b:?} ([x, y, w, h]) has no area"));
    }
    Ok([x as f32, y as f32, (x + w) as f32, (y + h) as f32])
}

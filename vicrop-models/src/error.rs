//! Typed errors of the model layer.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
///
/// Every variant names the file, tensor or field at fault, so that the message alone tells a
/// user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file or folder that must exist does not.
    #[error("{what} not found: {path}")]
    NotFound {
        /// What was looked for ("model folder", "config.json", ...).
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is malformed or a field has the wrong type.
    #[error("invalid {path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde's message, with the path of the offending field.
        message: String,
    },
    /// A configuration is well-formed JSON but describes something we cannot run.
    #[error("unsupported configuration in {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A safetensors file is damaged (truncated, bad header, ...).
    #[error("invalid safetensors file {path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("missing tensor `{name}` in the checkpoint at {dir}")]
    MissingTensor {
        /// The tensor name as transformers writes it.
        name: String,
        /// The checkpoint folder.
        dir: PathBuf,
    },
    /// The checkpoint holds tensors this architecture does not have.
    #[error(
        "unexpected tensor(s) in the checkpoint at {dir} (is it another architecture?): {names}"
    )]
    UnexpectedTensors {
        /// The first few unexpected names, comma separated.
        names: String,
        /// The checkpoint folder.
        dir: PathBuf,
    },
    /// A tensor has a shape other than the configuration implies.
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?} (from the config)")]
    ShapeMismatch {
        /// The tensor name.
        name: String,
        /// Shape in the file.
        actual: Vec<usize>,
        /// Shape the config implies.
        expected: Vec<usize>,
    },
    /// A tensor is stored in a dtype we do not load.
    #[error("tensor `{name}` has unsupported dtype {dtype} (expected F32, F16 or BF16)")]
    UnsupportedDtype {
        /// The tensor name.
        name: String,
        /// The dtype as safetensors names it.
        dtype: String,
    },
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer error ({path}): {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An image could not be loaded.
    #[error(transparent)]
    Image(#[from] vicrop_core::ImageLoadError),
    /// Input given to the model is unusable (empty question, token/feature count mismatch, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

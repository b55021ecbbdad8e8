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
    /// A hub id could not be found in the cache or downloaded (see [`crate::hub`]).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The compute device failed while running queued work (a GPU error, a lost device).
    #[error("the device failed: {0}")]
    Device(String),
}

/// What can go wrong while finding or downloading a model on the Hugging Face hub.
///
/// Whatever the variant, no incomplete file is left where the cache keeps finished files:
/// a download in progress lives in `blobs/<etag>.incomplete` until it is complete and
/// verified, and the snapshot folder is filled only once every file is there.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Downloads are off (`--offline`, `HF_HUB_OFFLINE=1`) and the model is not in the cache.
    #[error(
        "`{model}` (revision {revision}) is not in the local Hugging Face cache (looked in: \
         {looked_in}) and downloads are off (--offline or HF_HUB_OFFLINE); run once online to \
         download it (without --offline, HF_HUB_OFFLINE unset), or `huggingface-cli download \
         {model}`, or pass the model folder"
    )]
    Offline {
        /// The hub id.
        model: String,
        /// The revision asked for.
        revision: String,
        /// The cache folders looked in, comma separated.
        looked_in: String,
    },
    /// The hub id or revision is not one the hub could hold.
    #[error("invalid hub id or revision `{value}`: {reason}")]
    InvalidId {
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No cache folder to download into.
    #[error("no Hugging Face cache folder to download into: set HF_HUB_CACHE or HF_HOME")]
    NoCache,
    /// The hub does not know the repository (or hides it: private or gated, no token).
    #[error(
        "repository `{repo}` not found on {endpoint} (HTTP {status}); check the id (and that \
         no folder of that name was meant); if it is private or gated, set HF_TOKEN to a token \
         with access"
    )]
    RepoNotFound {
        /// The hub id.
        repo: String,
        /// The hub (`HF_ENDPOINT`).
        endpoint: String,
        /// The HTTP status (401 or 404).
        status: u16,
    },
    /// The repository is gated or private and the token (if any) has no access.
    #[error(
        "access to `{repo}` denied (HTTP {status}): it is gated or private; accept its terms \
         on {endpoint}/{repo} while logged in, then set HF_TOKEN to a token of that account"
    )]
    AccessDenied {
        /// The hub id.
        repo: String,
        /// The hub (`HF_ENDPOINT`).
        endpoint: String,
        /// The HTTP status (401 or 403).
        status: u16,
    },
    /// The repository has no such branch, tag or commit.
    #[error("revision `{revision}` not found in `{repo}` (give a branch, tag or commit with --revision)")]
    RevisionNotFound {
        /// The hub id.
        repo: String,
        /// The revision asked for.
        revision: String,
    },
    /// A file the model needs is not in the repository.
    #[error("`{file}` not found in `{repo}` at commit {commit} ({url})")]
    FileNotFound {
        /// The hub id.
        repo: String,
        /// The commit.
        commit: String,
        /// The file.
        file: String,
        /// The URL that answered 404 (or the listing that lacks the file).
        url: String,
    },
    /// The repository holds no weights vicrop can read.
    #[error(
        "`{repo}` at revision {revision} has no safetensors weights: vicrop reads \
         model.safetensors, or model.safetensors.index.json and its shards{found}"
    )]
    NoWeights {
        /// The hub id.
        repo: String,
        /// The revision.
        revision: String,
        /// The weight files it has instead ("; it has: pytorch_model.bin, ..."), or "".
        found: String,
    },
    /// The server kept failing (HTTP 5xx or 429) after a few tries.
    #[error("server error HTTP {status} for {url} (tried {attempts} times); try again later")]
    Server {
        /// The URL.
        url: String,
        /// The last status.
        status: u16,
        /// How many requests were made.
        attempts: u32,
    },
    /// Another HTTP error status.
    #[error("HTTP {status} for {url}")]
    Http {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The server could not be reached (DNS, refused connection, TLS, proxy, timeout).
    #[error("cannot reach {url}: {message}")]
    Connection {
        /// The URL.
        url: String,
        /// The transport error.
        message: String,
    },
    /// The transfer stopped before the end; the partial file is kept for the next run.
    #[error(
        "download of `{file}` interrupted after {done} of {total} bytes ({message}); the \
         partial file {} is kept: run again to resume",
        partial.display()
    )]
    Interrupted {
        /// The file in the repository.
        file: String,
        /// Bytes on disk.
        done: u64,
        /// Bytes expected.
        total: u64,
        /// The partial file (`blobs/<etag>.incomplete`).
        partial: PathBuf,
        /// What stopped it.
        message: String,
    },
    /// The downloaded bytes are not the file the hub announced (size or sha256).
    #[error(
        "download of `{file}` is corrupt ({message}); the partial file was deleted, run again"
    )]
    Corrupt {
        /// The file in the repository.
        file: String,
        /// What did not match.
        message: String,
    },
    /// The server answered something the hub would not (missing headers, bad JSON, ...).
    #[error("unexpected answer from {url}: {message}")]
    BadResponse {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The cache could not be written.
    #[error("cannot write {path} in the Hugging Face cache: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

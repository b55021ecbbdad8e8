//! Finding a model folder: a path, a hub id in the local Hugging Face cache, or a download.
//!
//! A hub id such as `llava-hf/llava-1.5-7b-hf` is looked up as
//! `<cache>/models--llava-hf--llava-1.5-7b-hf/snapshots/<commit>/`, the commit being the one
//! `refs/<revision>` names (revision `main` unless told otherwise). The caches are
//! `$HF_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub` and
//! `~/.cache/huggingface/hub`, in that order.
//!
//! [`resolve_model_dir`] only looks. [`resolve_or_download`] looks, then downloads what vicrop
//! loads into the first cache, in the layout `huggingface_hub` writes and reads:
//!
//! ```text
//! models--org--name/
//!   blobs/<etag>                 file contents, named by their ETag (sha256 for LFS files)
//!   blobs/<etag>.incomplete      a download in progress (resumed by the next run)
//!   snapshots/<commit>/<file>    relative symlinks to ../../blobs/<etag> (copies off unix)
//!   refs/<revision>              the commit the revision pointed to
//! ```
//!
//! A file is downloaded into `blobs/<etag>.incomplete`, resumed with an HTTP range request when
//! that file is already there, checked against the announced size (and sha256, for LFS files),
//! and only then renamed to `blobs/<etag>`. The snapshot folder and `refs/<revision>` are
//! written once every file is in `blobs/`, so a snapshot folder is never half filled by vicrop.
//!
//! The library draws nothing: [`HubOptions::progress`] receives per-file byte counts and the
//! command line turns them into progress bars.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{HubError, ModelError, Result};

mod download;

/// The public Hugging Face hub, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The files vicrop loads besides the weights (fetched when the repository has them).
pub const MODEL_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.json",
];

/// Bytes of one file done so far, given to [`HubOptions::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadProgress<'a> {
    /// The file's name in the repository (`model-00001-of-00003.safetensors`).
    pub file: &'a str,
    /// Bytes on disk, the resumed part included.
    pub done: u64,
    /// The file's size.
    pub total: u64,
}

/// The progress callback: called when a file's download starts (with the bytes already on
/// disk from an earlier run), as bytes arrive, and with `done == total` at the end.
pub type ProgressFn = dyn Fn(&DownloadProgress<'_>) + Send + Sync;

/// Where and how to look for, and download, hub models.
///
/// [`HubOptions::from_env`] reads the environment the way `huggingface_hub` does;
/// [`HubOptions::new`] reads nothing (tests, embedding programs that configure it
/// themselves).
#[derive(Clone)]
pub struct HubOptions {
    /// Branch, tag or commit to fetch (`main` by default).
    pub revision: String,
    /// Never touch the network: only the cache answers.
    pub offline: bool,
    /// The hub's base URL, without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Access token sent as `Authorization: Bearer` to the hub (not to the CDN it redirects
    /// to) (`HF_TOKEN`).
    pub token: Option<String>,
    /// Cache folders to look in, in order; downloads go into the first.
    pub cache_dirs: Vec<PathBuf>,
    /// Further tries after an HTTP 5xx or 429 answer or a failed connection (with a short
    /// back-off). A transfer cut off midway is not retried: it is kept for the next run.
    pub retries: u32,
    /// Per-file progress of downloads.
    pub progress: Option<Arc<ProgressFn>>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("revision", &self.revision)
            .field("offline", &self.offline)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("cache_dirs", &self.cache_dirs)
            .field("retries", &self.retries)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl HubOptions {
    /// Online, revision `main`, the public hub, no token, and `cache` as the only cache folder;
    /// reads no environment variable.
    pub fn new(cache: impl Into<PathBuf>) -> Self {
        Self {
            revision: "main".into(),
            offline: false,
            endpoint: DEFAULT_ENDPOINT.into(),
            token: None,
            cache_dirs: vec![cache.into()],
            retries: 2,
            progress: None,
        }
    }

    /// Reads `HF_ENDPOINT`, `HF_TOKEN` (else the token file `huggingface-cli login` writes),
    /// `HF_HUB_OFFLINE` and the cache variables of the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// [`HubOptions::from_env`] with the variables read through `var` (for tests, or a
    /// program with its own configuration).
    ///
    /// - `HF_ENDPOINT`: the hub (default <https://huggingface.co>);
    /// - `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the file `HF_TOKEN_PATH`,
    ///   `$HF_HOME/token` or `~/.cache/huggingface/token`;
    /// - `HF_HUB_OFFLINE`: `1`, `true`, `yes` or `on` turns downloads off;
    /// - the caches as [`cache_dirs_from`] lists them.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let text = |name: &str| {
            var(name)
                .map(|v| v.to_string_lossy().trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let endpoint = text("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let offline = text("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        let token = text("HF_TOKEN")
            .or_else(|| text("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let file = var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| var("HF_HOME").map(|h| PathBuf::from(h).join("token")))
                    .or_else(|| {
                        var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/token"))
                    })?;
                let token = std::fs::read_to_string(file).ok()?;
                Some(token.trim().to_string()).filter(|t| !t.is_empty())
            });
        Self {
            revision: "main".into(),
            offline,
            endpoint,
            token,
            cache_dirs: cache_dirs_from(var),
            retries: 2,
            progress: None,
        }
    }
}

/// The hub cache folders to search, in order, from the process environment.
pub fn cache_dirs() -> Vec<PathBuf> {
    cache_dirs_from(|name| std::env::var_os(name))
}

/// The hub cache folders named by the variables `var` reads: `HF_HUB_CACHE`,
/// `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`, `XDG_CACHE_HOME/huggingface/hub`,
/// `HOME/.cache/huggingface/hub`, each when set.
pub fn cache_dirs_from(var: impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut dirs: Vec<PathBuf> = [
        set("HF_HUB_CACHE"),
        set("HUGGINGFACE_HUB_CACHE"),
        set("HF_HOME").map(|p| p.join("hub")),
        set("XDG_CACHE_HOME").map(|p| p.join("huggingface/hub")),
        set("HOME").map(|p| p.join(".cache/huggingface/hub")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The cache folder name of a model repository: `models--org--name`.
pub fn repo_folder_name(model: &str) -> String {
    format!("models--{}", model.replace('/', "--"))
}

/// Resolves `--model` without any network access: an existing folder is used as is;
/// otherwise `org/name` is looked up (revision `main`) in the caches of [`cache_dirs`].
pub fn resolve_model_dir(model: &str) -> Result<PathBuf> {
    if let Some(dir) = as_folder(model)? {
        return Ok(dir);
    }
    let searched = cache_dirs();
    if let Some(dir) = find_cached(model, "main", &searched) {
        return Ok(dir);
    }
    Err(ModelError::InvalidInput(format!(
        "model `{model}` is neither a folder nor in the local Hugging Face cache (looked in: {}). \
         Download it first (the `vicrop` commands do so unless --offline; or \
         `huggingface-cli download {model}`), or pass its folder.",
        looked_in(model, &searched)
    )))
}

/// Resolves `--model`, downloading when needed: an existing folder is used as is; a hub id
/// found in the cache at `options.revision` is used as is (no network access); otherwise,
/// unless `options.offline`, the model is downloaded with [`fetch_model`].
///
/// Returns the model folder (for a hub id, its snapshot folder).
pub fn resolve_or_download(model: &str, options: &HubOptions) -> Result<PathBuf> {
    if let Some(dir) = as_folder(model)? {
        return Ok(dir);
    }
    validate_revision(&options.revision)?;
    if let Some(dir) = find_cached(model, &options.revision, &options.cache_dirs) {
        tracing::debug!("{model}: using the cached snapshot {}", dir.display());
        return Ok(dir);
    }
    fetch_model(model, options)
}

/// Makes sure the hub model `model` (`org/name`) at `options.revision` is in the cache and
/// returns its snapshot folder.
///
/// Online, this asks the hub which commit the revision is and downloads the files of that
/// commit that vicrop loads ([`MODEL_FILES`] and the safetensors weights: `model.safetensors`,
/// or `model.safetensors.index.json` and the shards it names), skipping those already in the
/// cache and resuming partial ones. Offline, only the cache answers.
pub fn fetch_model(model: &str, options: &HubOptions) -> Result<PathBuf> {
    validate_id(model)?;
    validate_revision(&options.revision)?;
    if options.offline {
        return find_cached(model, &options.revision, &options.cache_dirs).ok_or_else(|| {
            HubError::Offline {
                model: model.to_string(),
                revision: options.revision.clone(),
                looked_in: looked_in(model, &options.cache_dirs),
            }
            .into()
        });
    }
    let cache = options.cache_dirs.first().ok_or(HubError::NoCache)?;
    Ok(download::snapshot(model, options, cache)?)
}

/// `Some(folder)` when `model` is an existing folder, an error when it is a file, `None` when
/// it should be a hub id (checked).
fn as_folder(model: &str) -> Result<Option<PathBuf>> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(Some(path.to_path_buf()));
    }
    if path.exists() {
        return Err(ModelError::InvalidInput(format!(
            "--model {model} is a file; give the model folder (the one holding config.json)"
        )));
    }
    let looks_like_id = model.split('/').count() == 2
        && !model.starts_with('.')
        && !model.starts_with('/')
        && !model.starts_with('~')
        && !model.contains('\\')
        && model.split('/').all(|p| !p.is_empty());
    if !looks_like_id {
        return Err(ModelError::NotFound {
            what: "model folder",
            path: path.to_path_buf(),
        });
    }
    validate_id(model)?;
    Ok(None)
}

/// Checks that `model` is `org/name` as the hub spells repository names.
fn validate_id(model: &str) -> Result<(), HubError> {
    let bad = |reason| HubError::InvalidId {
        value: model.to_string(),
        reason,
    };
    let parts: Vec<&str> = model.split('/').collect();
    if parts.len() != 2 {
        return Err(bad("expected `org/name`"));
    }
    for part in parts {
        if part.is_empty() || part.len() > 96 {
            return Err(bad("each part must have 1 to 96 characters"));
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad("only letters, digits, `-`, `_` and `.` are allowed"));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err(bad("a part cannot start or end with `-` or `.`"));
        }
        if part.contains("--") || part.contains("..") {
            return Err(bad("`--` and `..` are not allowed"));
        }
    }
    Ok(())
}

/// Checks that a revision is a usable branch, tag or commit name (it becomes a path under
/// `refs/`).
fn validate_revision(revision: &str) -> Result<(), HubError> {
    let bad = |reason| HubError::InvalidId {
        value: revision.to_string(),
        reason,
    };
    if revision.is_empty() || revision.len() > 255 {
        return Err(bad("a revision has 1 to 255 characters"));
    }
    if revision
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ' ')
    {
        return Err(bad(
            "a revision has no spaces, backslashes or control characters",
        ));
    }
    if revision
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(bad("a revision has no empty, `.` or `..` path parts"));
    }
    Ok(())
}

/// The cache folders `model` was looked for in, for messages.
fn looked_in(model: &str, caches: &[PathBuf]) -> String {
    if caches.is_empty() {
        return "no cache folder: HF_HUB_CACHE, HF_HOME and HOME are unset".into();
    }
    let folder = repo_folder_name(model);
    caches
        .iter()
        .map(|p| p.join(&folder).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The snapshot folder of `model` at `revision` in the first cache that has it.
fn find_cached(model: &str, revision: &str, caches: &[PathBuf]) -> Option<PathBuf> {
    let folder = repo_folder_name(model);
    caches
        .iter()
        .find_map(|cache| snapshot_in(&cache.join(&folder), revision))
}

/// The snapshot of `revision` in one repository folder: the commit `refs/<revision>` names, or
/// `snapshots/<revision>` for a commit; for `main` without a ref, the most recent snapshot
/// holding a `config.json`.
fn snapshot_in(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    let is_model = |dir: &Path| dir.join("config.json").is_file();
    if let Ok(commit) = std::fs::read_to_string(repo_dir.join("refs").join(revision)) {
        let commit = commit.trim();
        if !commit.is_empty() && !commit.contains(['/', '\\']) && commit != ".." {
            let dir = snapshots.join(commit);
            if is_model(&dir) {
                return Some(dir);
            }
        }
    }
    if !revision.contains('/') {
        let dir = snapshots.join(revision);
        if is_model(&dir) {
            return Some(dir);
        }
    }
    if revision != "main" {
        return None;
    }
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .ok()?
        .flatten()
        .filter(|e| is_model(&e.path()))
        .map(|e| {
            let time = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (time, e.path())
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_revisions() {
        assert!(validate_id("llava-hf/llava-1.5-7b-hf").is_ok());
        assert!(validate_id("Salesforce/instructblip-vicuna-7b").is_ok());
        for bad in [
            "a", "a/b/c", "a/", "/b", "a/../b", "a/b--c", "-a/b", "a/b.", "a/b c",
        ] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
        for good in [
            "main",
            "v1.0",
            "refs/pr/1",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(validate_revision(good).is_ok(), "{good}");
        }
        for bad in ["", "..", "a/../b", "/main", "main/", "a b", "a\\b"] {
            assert!(validate_revision(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_layer() {
        let vars = |name: &str| -> Option<OsString> {
            match name {
                "HF_ENDPOINT" => Some("http://mirror.example/".into()),
                "HF_HUB_OFFLINE" => Some("TRUE".into()),
                "HF_TOKEN" => Some(" hf_abc \n".into()),
                "HF_HOME" => Some("/h".into()),
                "HOME" => Some("/home/u".into()),
                _ => None,
            }
        };
        let o = HubOptions::from_vars(vars);
        assert_eq!(o.endpoint, "http://mirror.example");
        assert!(o.offline);
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
        assert_eq!(
            o.cache_dirs,
            vec![
                PathBuf::from("/h/hub"),
                PathBuf::from("/home/u/.cache/huggingface/hub")
            ]
        );
        assert!(
            !format!("{o:?}").contains("hf_abc"),
            "Debug hides the token"
        );
        let o = HubOptions::from_vars(|n| (n == "HF_HUB_OFFLINE").then(|| "0".into()));
        assert!(!o.offline);
        assert_eq!(o.endpoint, DEFAULT_ENDPOINT);
        assert!(o.cache_dirs.is_empty());
    }

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_from_file\n").unwrap();
        let home: OsString = dir.path().into();
        let o = HubOptions::from_vars(|n| (n == "HF_HOME").then(|| home.clone()));
        assert_eq!(o.token.as_deref(), Some("hf_from_file"));
        assert_eq!(o.cache_dirs, vec![dir.path().join("hub")]);
    }

    #[test]
    fn offline_without_cache_names_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let options = HubOptions {
            offline: true,
            ..HubOptions::new(dir.path())
        };
        let err = resolve_or_download("org/model", &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("models--org--model"), "{err}");
        assert!(err.contains("--offline"), "{err}");
    }
}

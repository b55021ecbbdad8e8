//! Finding a model folder: a path, or a hub id already in the local Hugging Face cache.
//!
//! Nothing is downloaded. A hub id such as `llava-hf/llava-1.5-7b-hf` is looked up as
//! `$HF_HUB_CACHE` (or `$HF_HOME/hub`, or `~/.cache/huggingface/hub`)
//! `/models--llava-hf--llava-1.5-7b-hf/snapshots/<revision>/`, the revision being the one
//! `refs/main` names (else the only, or most recent, snapshot).

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// The hub cache folders to search, in order.
pub fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        dirs.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HUGGINGFACE_HUB_CACHE") {
        dirs.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        dirs.push(PathBuf::from(p).join("hub"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/huggingface/hub"));
    }
    dirs
}

/// Resolves `--model`: an existing folder is used as is; otherwise `org/name` is looked up in
/// the hub caches.
pub fn resolve_model_dir(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(ModelError::InvalidInput(format!(
            "--model {model} is a file; give the model folder (the one holding config.json)"
        )));
    }
    let looks_like_id = model.split('/').count() == 2
        && !model.starts_with('.')
        && !model.starts_with('/')
        && model.split('/').all(|p| !p.is_empty());
    if !looks_like_id {
        return Err(ModelError::NotFound {
            what: "model folder",
            path: path.to_path_buf(),
        });
    }
    let repo = format!("models--{}", model.replace('/', "--"));
    let searched = cache_dirs();
    for cache in &searched {
        if let Some(dir) = snapshot_in(&cache.join(&repo)) {
            return Ok(dir);
        }
    }
    Err(ModelError::InvalidInput(format!(
        "model `{model}` is neither a folder nor in the local Hugging Face cache (looked in: {}). \
         Download it first, e.g. `huggingface-cli download {model}`, or pass its folder.",
        searched
            .iter()
            .map(|p| p.join(&repo).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn snapshot_in(repo_dir: &Path) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo_dir.join("refs/main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .ok()?
        .flatten()
        .filter(|e| e.path().join("config.json").exists())
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

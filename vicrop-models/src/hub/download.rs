//! The HTTP side of [`super::fetch_model`]: the repository listing, per-file metadata, ranged
//! downloads into `blobs/<etag>.incomplete`, verification, and the snapshot links.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{repo_folder_name, DownloadProgress, HubOptions, MODEL_FILES};
use crate::error::HubError;
use crate::weights::{INDEX_FILE, SINGLE_FILE};

/// Most redirects followed on the hub itself (renamed repositories) before giving up.
const MAX_HOPS: usize = 5;
/// Read buffer of a download.
const CHUNK: usize = 256 * 1024;

/// The repository listing: `GET {endpoint}/api/models/{repo}/revision/{revision}`.
#[derive(Debug, serde::Deserialize)]
struct RepoInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, serde::Deserialize)]
struct Sibling {
    rfilename: String,
}

/// `model.safetensors.index.json`, as far as the download needs it.
#[derive(Debug, serde::Deserialize)]
struct Index {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// What the hub says about one file before it is downloaded.
#[derive(Debug)]
struct FileMeta {
    /// The blob name: `X-Linked-Etag` (LFS: the sha256) or `ETag`, unquoted.
    etag: String,
    /// Bytes.
    size: u64,
    /// Where the bytes are: the resolve URL, or the CDN it redirects to.
    url: String,
}

/// A request that failed with an HTTP status the caller maps to a message of its own.
enum CallError {
    Status {
        status: u16,
        error_code: Option<String>,
    },
    Hub(HubError),
}

impl From<HubError> for CallError {
    fn from(e: HubError) -> Self {
        CallError::Hub(e)
    }
}

struct Client<'a> {
    /// Follows no redirect: the hub's own headers are on the redirect answer.
    no_redirect: ureq::Agent,
    options: &'a HubOptions,
}

/// Downloads what vicrop loads of `repo` at `options.revision` into `cache`; returns the
/// snapshot folder.
pub(super) fn snapshot(
    repo: &str,
    options: &HubOptions,
    cache: &Path,
) -> Result<PathBuf, HubError> {
    let client = Client::new(options);
    let info = client.info(repo)?;
    let repo_dir = cache.join(repo_folder_name(repo));
    let blobs = repo_dir.join("blobs");
    let listed: BTreeSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();

    let sharded = listed.contains(INDEX_FILE);
    if !sharded && !listed.contains(SINGLE_FILE) {
        let others: Vec<&str> = listed
            .iter()
            .copied()
            .filter(|f| {
                [
                    ".safetensors",
                    ".bin",
                    ".pt",
                    ".pth",
                    ".h5",
                    ".msgpack",
                    ".onnx",
                    ".gguf",
                    ".ckpt",
                ]
                .iter()
                .any(|ext| f.ends_with(ext))
            })
            .collect();
        return Err(HubError::NoWeights {
            repo: repo.to_string(),
            revision: options.revision.clone(),
            found: if others.is_empty() {
                String::new()
            } else {
                format!("; it has: {}", others.join(", "))
            },
        });
    }
    if !listed.contains("config.json") {
        return Err(HubError::FileNotFound {
            repo: repo.to_string(),
            commit: info.sha.clone(),
            file: "config.json".into(),
            url: client.info_url(repo),
        });
    }

    create_dir(&blobs)?;
    let mut files: Vec<(String, String)> = Vec::new();
    for name in MODEL_FILES
        .iter()
        .copied()
        .chain([if sharded { INDEX_FILE } else { SINGLE_FILE }])
        .filter(|f| listed.contains(f))
    {
        let etag = client.fetch_file(repo, &info.sha, name, &blobs)?;
        files.push((name.to_string(), etag));
    }
    if sharded {
        let index_blob = files
            .iter()
            .find(|(name, _)| name == INDEX_FILE)
            .map(|(_, etag)| blobs.join(etag))
            .ok_or_else(|| HubError::BadResponse {
                url: client.info_url(repo),
                message: format!("{INDEX_FILE} was listed but not fetched"),
            })?;
        for shard in shards(
            &index_blob,
            &client.resolve_url(repo, &info.sha, INDEX_FILE),
        )? {
            let etag = client.fetch_file(repo, &info.sha, &shard, &blobs)?;
            files.push((shard, etag));
        }
    }

    let snapshot = repo_dir.join("snapshots").join(&info.sha);
    create_dir(&snapshot)?;
    for (name, etag) in &files {
        link(&blobs.join(etag), &snapshot.join(name), etag)?;
    }
    if options.revision != info.sha {
        let reference = repo_dir.join("refs").join(&options.revision);
        if let Some(parent) = reference.parent() {
            create_dir(parent)?;
        }
        write_atomically(&reference, info.sha.as_bytes())?;
    }
    tracing::info!("{repo}: {} files in {}", files.len(), snapshot.display());
    Ok(snapshot)
}

/// The shard files an index names, checked to be plain safetensors names.
fn shards(index: &Path, url: &str) -> Result<Vec<String>, HubError> {
    let bad = |message: String| HubError::BadResponse {
        url: url.to_string(),
        message,
    };
    let text = std::fs::read_to_string(index).map_err(|e| bad(format!("unreadable: {e}")))?;
    let index: Index =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid {INDEX_FILE}: {e}")))?;
    let shards: BTreeSet<String> = index.weight_map.into_values().collect();
    if shards.is_empty() {
        return Err(bad(format!("{INDEX_FILE} names no shard")));
    }
    for shard in &shards {
        if !is_plain_name(shard) || !shard.ends_with(".safetensors") {
            return Err(bad(format!(
                "{INDEX_FILE} names `{shard}`, not a .safetensors file next to it"
            )));
        }
    }
    Ok(shards.into_iter().collect())
}

/// A file name without folders or anything a path could escape with.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control)
}

impl<'a> Client<'a> {
    fn new(options: &'a HubOptions) -> Self {
        // Proxies come from ALL_PROXY / HTTPS_PROXY / HTTP_PROXY, except for a hub on this
        // machine (ureq does not read NO_PROXY).
        let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| options.endpoint.starts_with(p));
        let no_redirect = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(60))
            .redirects(0)
            .try_proxy_from_env(!local)
            .user_agent(concat!("vicrop/", env!("CARGO_PKG_VERSION"), "; hf_hub"))
            .build();
        Self {
            no_redirect,
            options,
        }
    }

    fn info_url(&self, repo: &str) -> String {
        format!(
            "{}/api/models/{repo}/revision/{}",
            self.options.endpoint,
            quote(&self.options.revision, false)
        )
    }

    fn resolve_url(&self, repo: &str, commit: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{commit}/{}",
            self.options.endpoint,
            quote(file, true)
        )
    }

    /// Whether `url` is on the hub itself (the token goes there and nowhere else).
    fn is_hub(&self, url: &str) -> bool {
        url.strip_prefix(&self.options.endpoint)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Sends a GET or HEAD (with `range` from that byte), retrying 5xx, 429 and failed
    /// connections.
    fn call(
        &self,
        method: &str,
        url: &str,
        range: Option<u64>,
    ) -> Result<ureq::Response, CallError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut request = self
                .no_redirect
                .request(method, url)
                .set("Accept-Encoding", "identity");
            if let Some(start) = range {
                request = request.set("Range", &format!("bytes={start}-"));
            }
            if let Some(token) = self.options.token.as_deref().filter(|_| self.is_hub(url)) {
                request = request.set("Authorization", &format!("Bearer {token}"));
            }
            let retry = attempt <= self.options.retries;
            match request.call() {
                Ok(response) => return Ok(response),
                Err(ureq::Error::Status(status, response)) => {
                    if (status >= 500 || status == 429) && retry {
                        backoff(attempt);
                        continue;
                    }
                    if status >= 500 || status == 429 {
                        return Err(HubError::Server {
                            url: url.to_string(),
                            status,
                            attempts: attempt,
                        }
                        .into());
                    }
                    return Err(CallError::Status {
                        status,
                        error_code: response.header("X-Error-Code").map(str::to_string),
                    });
                }
                Err(ureq::Error::Transport(t)) => {
                    if retry {
                        backoff(attempt);
                        continue;
                    }
                    return Err(HubError::Connection {
                        url: url.to_string(),
                        message: t.to_string(),
                    }
                    .into());
                }
            }
        }
    }

    /// The commit `options.revision` points at, and the files there.
    fn info(&self, repo: &str) -> Result<RepoInfo, HubError> {
        let url = self.info_url(repo);
        let response = match self.call("GET", &url, None) {
            Ok(r) => r,
            Err(CallError::Hub(e)) => return Err(e),
            Err(CallError::Status { status, error_code }) => {
                return Err(match (status, error_code.as_deref()) {
                    (_, Some("RevisionNotFound")) => HubError::RevisionNotFound {
                        repo: repo.to_string(),
                        revision: self.options.revision.clone(),
                    },
                    (401 | 403, Some("GatedRepo")) | (403, _) => HubError::AccessDenied {
                        repo: repo.to_string(),
                        endpoint: self.options.endpoint.clone(),
                        status,
                    },
                    (401 | 404, _) => HubError::RepoNotFound {
                        repo: repo.to_string(),
                        endpoint: self.options.endpoint.clone(),
                        status,
                    },
                    _ => HubError::Http { url, status },
                })
            }
        };
        if response.status() != 200 {
            return Err(HubError::BadResponse {
                url,
                message: format!(
                    "HTTP {} where the repository listing was expected",
                    response.status()
                ),
            });
        }
        let mut body = String::new();
        response
            .into_reader()
            .take(64 << 20)
            .read_to_string(&mut body)
            .map_err(|e| HubError::Connection {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let info: RepoInfo = serde_json::from_str(&body).map_err(|e| HubError::BadResponse {
            url: url.clone(),
            message: format!("invalid repository listing: {e}"),
        })?;
        if !(7..=64).contains(&info.sha.len())
            || !info.sha.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(HubError::BadResponse {
                url,
                message: format!("`{}` is not a commit id", info.sha),
            });
        }
        Ok(info)
    }

    /// Maps a failed request for one file.
    fn file_error(
        &self,
        e: CallError,
        repo: &str,
        commit: &str,
        file: &str,
        url: &str,
    ) -> HubError {
        match e {
            CallError::Hub(e) => e,
            CallError::Status { status: 404, .. } => HubError::FileNotFound {
                repo: repo.to_string(),
                commit: commit.to_string(),
                file: file.to_string(),
                url: url.to_string(),
            },
            CallError::Status {
                status: status @ (401 | 403),
                ..
            } => HubError::AccessDenied {
                repo: repo.to_string(),
                endpoint: self.options.endpoint.clone(),
                status,
            },
            CallError::Status { status, .. } => HubError::Http {
                url: url.to_string(),
                status,
            },
        }
    }

    /// `HEAD` on the resolve URL, following the hub's own (relative) redirects and stopping at
    /// one to another host (the CDN), whose headers are not the hub's.
    fn meta(&self, repo: &str, commit: &str, file: &str) -> Result<FileMeta, HubError> {
        let resolve = self.resolve_url(repo, commit, file);
        let mut url = resolve.clone();
        for _ in 0..MAX_HOPS {
            let response = self
                .call("HEAD", &url, None)
                .map_err(|e| self.file_error(e, repo, commit, file, &url))?;
            let status = response.status();
            let location = response.header("Location").map(str::to_string);
            let hop = match (&location, (300..400).contains(&status)) {
                (Some(l), true) if l.starts_with('/') => Some(format!("{}{l}", origin(&url))),
                _ => None,
            };
            if let Some(next) = hop {
                if response.header("X-Linked-Etag").is_none() {
                    url = next;
                    continue;
                }
            }
            let bad = |message: &str| HubError::BadResponse {
                url: url.clone(),
                message: format!("{message} (for `{file}`)"),
            };
            if !(200..400).contains(&status) {
                return Err(bad(&format!("HTTP {status}")));
            }
            let etag = response
                .header("X-Linked-Etag")
                .or_else(|| response.header("ETag"))
                .ok_or_else(|| bad("no ETag header"))?;
            let etag = etag
                .trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string();
            if etag.is_empty()
                || etag.len() > 128
                || !etag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(&format!("ETag `{etag}` is not a blob name")));
            }
            let size = response
                .header("X-Linked-Size")
                .or_else(|| response.header("Content-Length"))
                .ok_or_else(|| bad("no size (X-Linked-Size or Content-Length)"))?
                .trim()
                .parse::<u64>()
                .map_err(|_| bad("the size header is not a number"))?;
            if let Some(c) = response.header("X-Repo-Commit") {
                if c != commit {
                    tracing::warn!("{file}: the hub answered for commit {c}, not {commit}");
                }
            }
            let download = match location {
                Some(l) if (300..400).contains(&status) => {
                    if l.starts_with('/') {
                        format!("{}{l}", origin(&url))
                    } else {
                        l
                    }
                }
                _ => url.clone(),
            };
            return Ok(FileMeta {
                etag,
                size,
                url: download,
            });
        }
        Err(HubError::BadResponse {
            url: resolve,
            message: format!("more than {MAX_HOPS} redirects"),
        })
    }

    /// Makes sure `blobs/<etag>` of `file` is complete; returns the etag.
    fn fetch_file(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        blobs: &Path,
    ) -> Result<String, HubError> {
        let meta = self.meta(repo, commit, file)?;
        let blob = blobs.join(&meta.etag);
        match std::fs::metadata(&blob) {
            Ok(m) if m.is_file() && m.len() == meta.size => {
                tracing::debug!("{file}: already in {}", blob.display());
                return Ok(meta.etag);
            }
            Ok(_) => {
                tracing::warn!("{}: wrong size, downloading it again", blob.display());
                remove(&blob)?;
            }
            Err(_) => {}
        }
        let partial = blobs.join(format!("{}.incomplete", meta.etag));
        self.download(&meta, repo, commit, file, &partial)?;
        std::fs::rename(&partial, &blob).map_err(|source| HubError::Io { path: blob, source })?;
        Ok(meta.etag)
    }

    /// Downloads `meta.url` into `partial`, resuming what is there, and verifies it.
    fn download(
        &self,
        meta: &FileMeta,
        repo: &str,
        commit: &str,
        file: &str,
        partial: &Path,
    ) -> Result<(), HubError> {
        let mut start = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if start > meta.size {
            remove(partial)?;
            start = 0;
        }
        let expect_sha = is_sha256(&meta.etag).then(|| meta.etag.to_ascii_lowercase());
        let progress = |done: u64| {
            if let Some(p) = &self.options.progress {
                p(&DownloadProgress {
                    file,
                    done,
                    total: meta.size,
                });
            }
        };
        let mut hasher = Sha256::new();
        if start < meta.size {
            let mut url = meta.url.clone();
            let mut hops = 0;
            let response = loop {
                let response = match self.call("GET", &url, (start > 0).then_some(start)) {
                    Ok(r) => r,
                    Err(CallError::Status { status: 416, .. }) => {
                        remove(partial)?;
                        return Err(HubError::BadResponse {
                            url,
                            message: format!(
                                "the server refused to resume `{file}` at byte {start}; the \
                                 partial file was deleted, run again"
                            ),
                        });
                    }
                    Err(e) => return Err(self.file_error(e, repo, commit, file, &url)),
                };
                match response.header("Location") {
                    Some(l) if (300..400).contains(&response.status()) && hops < MAX_HOPS => {
                        url = if l.starts_with('/') {
                            format!("{}{l}", origin(&url))
                        } else {
                            l.to_string()
                        };
                        hops += 1;
                    }
                    _ => break response,
                }
            };
            match response.status() {
                200 => start = 0,
                206 => {
                    let range = response.header("Content-Range").unwrap_or("");
                    if !range.starts_with(&format!("bytes {start}-")) {
                        remove(partial)?;
                        return Err(HubError::BadResponse {
                            url,
                            message: format!(
                                "asked for `{file}` from byte {start}, got Content-Range `{range}`; \
                                 the partial file was deleted, run again"
                            ),
                        });
                    }
                }
                status => {
                    return Err(HubError::BadResponse {
                        url,
                        message: format!("HTTP {status} for `{file}`"),
                    })
                }
            }
            let io = |source| HubError::Io {
                path: partial.to_path_buf(),
                source,
            };
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(partial)
                .map_err(io)?;
            if start == 0 {
                out.set_len(0).map_err(io)?;
            } else if expect_sha.is_some() {
                hash_prefix(partial, start, &mut hasher).map_err(io)?;
            }
            if start > 0 {
                tracing::info!("{file}: resuming at byte {start} of {}", meta.size);
            }
            progress(start);
            let mut reader = response.into_reader();
            let mut buf = vec![0u8; CHUNK];
            let mut done = start;
            let stopped = loop {
                match reader.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        if done + n as u64 > meta.size {
                            drop(out);
                            remove(partial)?;
                            return Err(HubError::Corrupt {
                                file: file.to_string(),
                                message: format!("the server sent more than {} bytes", meta.size),
                            });
                        }
                        out.write_all(&buf[..n]).map_err(io)?;
                        if expect_sha.is_some() {
                            hasher.update(&buf[..n]);
                        }
                        done += n as u64;
                        progress(done);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e.to_string()),
                }
            };
            out.sync_all().map_err(io)?;
            if done < meta.size {
                return Err(HubError::Interrupted {
                    file: file.to_string(),
                    done,
                    total: meta.size,
                    partial: partial.to_path_buf(),
                    message: stopped.unwrap_or_else(|| "connection closed early".into()),
                });
            }
        } else {
            // A previous run got every byte but stopped before the rename.
            if expect_sha.is_some() {
                hash_prefix(partial, start, &mut hasher).map_err(|source| HubError::Io {
                    path: partial.to_path_buf(),
                    source,
                })?;
            }
            progress(start);
        }
        if let Some(expected) = expect_sha {
            let actual = hex(&hasher.finalize());
            if actual != expected {
                remove(partial)?;
                return Err(HubError::Corrupt {
                    file: file.to_string(),
                    message: format!("sha256 {actual}, the hub announced {expected}"),
                });
            }
        }
        Ok(())
    }
}

/// Feeds the first `len` bytes of `path` to `hasher`.
fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?.take(len);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// Waits before try `attempt + 1`: 250 ms, 500 ms, 1 s, ... (at most 4 s).
fn backoff(attempt: u32) {
    let ms = 250u64 << attempt.saturating_sub(1).min(4);
    std::thread::sleep(Duration::from_millis(ms));
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn create_dir(dir: &Path) -> Result<(), HubError> {
    std::fs::create_dir_all(dir).map_err(|source| HubError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn remove(path: &Path) -> Result<(), HubError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HubError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let io = |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Puts `snapshots/<commit>/<file>` in place: a relative symlink to the blob on unix (as
/// `huggingface_hub` makes), a copy elsewhere.
fn link(blob: &Path, dest: &Path, etag: &str) -> Result<(), HubError> {
    let io = |source| HubError::Io {
        path: dest.to_path_buf(),
        source,
    };
    #[cfg(unix)]
    {
        // snapshots/<commit>/<file> -> ../../blobs/<etag>
        let target = Path::new("../../blobs").join(etag);
        if std::fs::read_link(dest).is_ok_and(|t| t == target) {
            return Ok(());
        }
        let _ = blob;
        remove(dest)?;
        std::os::unix::fs::symlink(&target, dest).map_err(io)
    }
    #[cfg(not(unix))]
    {
        let _ = etag;
        if std::fs::metadata(dest)
            .is_ok_and(|m| std::fs::metadata(blob).is_ok_and(|b| b.len() == m.len()))
        {
            return Ok(());
        }
        let tmp = dest.with_extension("incomplete");
        std::fs::copy(blob, &tmp).map_err(io)?;
        remove(dest)?;
        std::fs::rename(&tmp, dest).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(quote("a b/c.json", true), "a%20b/c.json");
        assert_eq!(origin("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
        assert_eq!(origin("https://huggingface.co"), "https://huggingface.co");
        assert!(is_plain_name("model-00001-of-00002.safetensors"));
        assert!(!is_plain_name("../x.safetensors"));
        assert!(!is_plain_name("sub/x.safetensors"));
    }
}

//! Hub downloads end to end against a local HTTP server that serves the bundled
//! `tests/fixtures/llava-tiny-a` checkpoint the way huggingface.co does: the repository
//! listing, `resolve` URLs with `X-Repo-Commit` / `ETag` / `X-Linked-Etag` / `X-Linked-Size`,
//! LFS files (the safetensors) through a 302 to a "CDN" on another port with its own ETag,
//! and ranged requests answered 206. No network.
//!
//! Every case checks the cache afterwards: each file under `snapshots/` is byte-identical to
//! the fixture, each finished blob is a whole fixture file, and anything else is a
//! `blobs/<etag>.incomplete` partial holding a prefix of one.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::Digest;
use vicrop_models::error::HubError;
use vicrop_models::hub::{fetch_model, resolve_or_download, DownloadProgress, HubOptions};
use vicrop_models::ModelError;

const REPO: &str = "vicrop-test/llava-tiny";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/llava-tiny-a"
);
/// The shard the interruption tests cut.
const SHARD: &str = "model-00001-of-00003.safetensors";

/// What the fixture checkpoint's folder holds, by name.
fn fixture_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(FIXTURE).expect("fixture folder") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().to_string();
        files.insert(name, std::fs::read(entry.path()).expect("fixture file"));
    }
    files
}

/// The files vicrop must fetch from the fixture repository (all but NOTICE.md and the
/// decoys the server adds).
fn wanted() -> Vec<String> {
    fixture_files()
        .into_keys()
        .filter(|n| n != "NOTICE.md")
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A git-style 40-hex ETag for a small (non-LFS) file.
fn git_etag(bytes: &[u8]) -> String {
    sha256_hex(bytes)[..40].to_string()
}

fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".bin")
}

/// How the server misbehaves.
#[derive(Debug, Default, Clone)]
struct Behaviour {
    /// The CDN GET of this file sends only the first K bytes, then closes the connection,
    /// once.
    cut: Option<(String, usize)>,
    /// `resolve` answers 404 for this file.
    missing: Option<String>,
    /// Requests whose path contains this answer 500, this many times.
    fail: Option<(String, usize)>,
    /// The CDN sends this file with one byte changed.
    corrupt: Option<String>,
    /// The listing answers this status with this X-Error-Code.
    listing: Option<(u16, &'static str)>,
}

/// One request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    cdn: bool,
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

struct Hub {
    /// What the repository holds (the fixture plus decoys).
    files: BTreeMap<String, Vec<u8>>,
    behaviour: Mutex<Behaviour>,
    log: Mutex<Vec<Seen>>,
    hub_port: u16,
    cdn_port: u16,
}

impl Hub {
    /// Starts the hub and its CDN on two ports of 127.0.0.1.
    fn start(behaviour: Behaviour) -> Arc<Hub> {
        Self::start_with(fixture_files(), behaviour)
    }

    fn start_with(mut files: BTreeMap<String, Vec<u8>>, behaviour: Behaviour) -> Arc<Hub> {
        // Decoys a download must skip.
        files.insert("pytorch_model.bin".into(), b"not for vicrop".to_vec());
        files.insert("README.md".into(), b"# readme".to_vec());
        let hub = TcpListener::bind("127.0.0.1:0").expect("bind");
        let cdn = TcpListener::bind("127.0.0.1:0").expect("bind");
        let state = Arc::new(Hub {
            files,
            behaviour: Mutex::new(behaviour),
            log: Mutex::new(Vec::new()),
            hub_port: hub.local_addr().expect("addr").port(),
            cdn_port: cdn.local_addr().expect("addr").port(),
        });
        for (listener, is_cdn) in [(hub, false), (cdn, true)] {
            let state = state.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let state = state.clone();
                    std::thread::spawn(move || state.serve(stream, is_cdn));
                }
            });
        }
        state
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub_port)
    }

    fn options(&self, cache: &Path) -> HubOptions {
        HubOptions {
            endpoint: self.endpoint(),
            retries: 1,
            ..HubOptions::new(cache)
        }
    }

    fn requests(&self) -> Vec<Seen> {
        self.log.lock().expect("log").clone()
    }

    /// Serves one connection (keep-alive: several requests).
    fn serve(&self, stream: TcpStream, cdn: bool) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut out = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let seen = Seen {
                cdn,
                method,
                path,
                headers,
            };
            self.log.lock().expect("log").push(seen.clone());
            if !self.answer(&seen, &mut out) {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
        }
    }

    /// Writes the answer; false when the connection must be dropped.
    fn answer(&self, req: &Seen, out: &mut TcpStream) -> bool {
        let head = req.method == "HEAD";
        let mut behaviour = self.behaviour.lock().expect("behaviour");
        if let Some((pattern, times)) = &mut behaviour.fail {
            if *times > 0 && req.path.contains(pattern.as_str()) {
                *times -= 1;
                return respond(out, 500, &[], b"boom", head);
            }
        }
        let commit = ("X-Repo-Commit", COMMIT.to_string());
        if let Some(rest) = req.path.strip_prefix("/api/models/") {
            let Some((repo, revision)) = rest.split_once("/revision/") else {
                return respond(out, 404, &[], b"", head);
            };
            if let Some((status, code)) = behaviour.listing {
                return respond(out, status, &[("X-Error-Code", code.into())], b"{}", head);
            }
            if repo != REPO {
                return respond(
                    out,
                    401,
                    &[("X-Error-Code", "RepoNotFound".into())],
                    b"",
                    head,
                );
            }
            if revision != "main" && revision != COMMIT {
                return respond(
                    out,
                    404,
                    &[("X-Error-Code", "RevisionNotFound".into())],
                    b"",
                    head,
                );
            }
            let siblings: Vec<_> = self
                .files
                .keys()
                .map(|f| serde_json::json!({ "rfilename": f }))
                .collect();
            let body = serde_json::json!({ "id": REPO, "sha": COMMIT, "siblings": siblings });
            return respond(out, 200, &[], body.to_string().as_bytes(), head);
        }
        if let Some(sha) = req.path.strip_prefix("/cdn/") {
            let Some((name, bytes)) = self.files.iter().find(|(_, b)| sha256_hex(b) == sha) else {
                return respond(out, 404, &[], b"", head);
            };
            let mut bytes = bytes.clone();
            if behaviour.corrupt.as_deref() == Some(name.as_str()) {
                bytes[100] ^= 0xff;
            }
            let cdn_etag = ("ETag", "\"cdn-etag-not-the-blob\"".to_string());
            let cut = match &behaviour.cut {
                Some((file, k)) if file == name && !head => Some(*k),
                _ => None,
            };
            if cut.is_some() {
                behaviour.cut = None;
            }
            drop(behaviour);
            return send_file(out, &bytes, req, vec![cdn_etag], cut);
        }
        let prefix = format!("/{REPO}/resolve/{COMMIT}/");
        let Some(name) = req.path.strip_prefix(&prefix) else {
            return respond(
                out,
                404,
                &[("X-Error-Code", "RepoNotFound".into())],
                b"",
                head,
            );
        };
        if behaviour.missing.as_deref() == Some(name) {
            return respond(
                out,
                404,
                &[("X-Error-Code", "EntryNotFound".into()), commit],
                b"",
                head,
            );
        }
        let Some(bytes) = self.files.get(name) else {
            return respond(
                out,
                404,
                &[("X-Error-Code", "EntryNotFound".into()), commit],
                b"",
                head,
            );
        };
        drop(behaviour);
        if is_lfs(name) {
            let sha = sha256_hex(bytes);
            let headers = [
                commit,
                ("X-Linked-Etag", format!("\"{sha}\"")),
                ("X-Linked-Size", bytes.len().to_string()),
                ("ETag", "\"git-pointer-etag\"".into()),
                (
                    "Location",
                    format!("http://127.0.0.1:{}/cdn/{sha}", self.cdn_port),
                ),
            ];
            return respond(out, 302, &headers, b"", head);
        }
        let etag = ("ETag", format!("\"{}\"", git_etag(bytes)));
        send_file(out, bytes, req, vec![commit, etag], None)
    }
}

/// Sends a file, honouring `Range: bytes=N-`; with `cut`, sends only that many body bytes
/// after announcing them all, and asks for the connection to be dropped.
fn send_file(
    out: &mut TcpStream,
    bytes: &[u8],
    req: &Seen,
    mut headers: Vec<(&str, String)>,
    cut: Option<usize>,
) -> bool {
    let head = req.method == "HEAD";
    let start = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (status, body) = match start {
        Some(s) if s >= bytes.len() => return respond(out, 416, &headers, b"", head),
        Some(s) => {
            headers.push((
                "Content-Range",
                format!("bytes {s}-{}/{}", bytes.len() - 1, bytes.len()),
            ));
            (206, &bytes[s..])
        }
        None => (200, bytes),
    };
    match cut {
        None => respond(out, status, &headers, body, head),
        Some(k) => {
            let _ = write_head(out, status, &headers, body.len());
            let _ = out.write_all(&body[..k.min(body.len())]);
            let _ = out.flush();
            false
        }
    }
}

fn write_head(
    out: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    len: usize,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Internal Server Error",
    };
    let mut text = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {len}\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    out.write_all(text.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) -> bool {
    let ok = write_head(out, status, headers, body.len()).is_ok()
        && (head || out.write_all(body).is_ok())
        && out.flush().is_ok();
    ok && status < 400
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("models--vicrop-test--llava-tiny")
}

/// What the cache holds, checked: (files under snapshots/, partial blobs). Panics on any
/// snapshot file that differs from the fixture, any finished blob that is not a whole fixture
/// file, or a partial that is not a prefix of one.
fn check_cache(cache: &Path) -> (Vec<String>, Vec<PathBuf>) {
    let fixture = fixture_files();
    let repo = repo_dir(cache);
    let mut linked = Vec::new();
    if let Ok(snapshots) = std::fs::read_dir(repo.join("snapshots")) {
        for snap in snapshots.flatten() {
            for file in std::fs::read_dir(snap.path()).expect("snapshot").flatten() {
                let name = file.file_name().to_string_lossy().to_string();
                let bytes = std::fs::read(file.path()).expect("snapshot file readable");
                assert!(
                    fixture.get(&name) == Some(&bytes),
                    "snapshots/{name} differs from the fixture"
                );
                linked.push(name);
            }
        }
    }
    let mut partials = Vec::new();
    if let Ok(blobs) = std::fs::read_dir(repo.join("blobs")) {
        for blob in blobs.flatten() {
            let name = blob.file_name().to_string_lossy().to_string();
            let bytes = std::fs::read(blob.path()).expect("blob");
            if let Some(etag) = name.strip_suffix(".incomplete") {
                assert!(
                    fixture
                        .values()
                        .any(|f| f.starts_with(&bytes) && sha256_hex(f) == etag),
                    "{name} is not a prefix of the file it is named after"
                );
                partials.push(blob.path());
            } else {
                assert!(
                    fixture
                        .values()
                        .any(|f| *f == bytes && (sha256_hex(f) == name || git_etag(f) == name)),
                    "blobs/{name} is not a whole fixture file named by its ETag"
                );
            }
        }
    }
    linked.sort();
    (linked, partials)
}

fn hub_error(err: ModelError) -> HubError {
    match err {
        ModelError::Hub(e) => e,
        other => panic!("expected a hub error, got {other}"),
    }
}

#[test]
fn fresh_download_matches_the_fixture_loads_and_is_then_cached() {
    let hub = Hub::start(Behaviour::default());
    let cache = tempfile::tempdir().expect("tempdir");
    let seen: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();
    let record = seen.clone();
    let options = HubOptions {
        progress: Some(Arc::new(move |p: &DownloadProgress<'_>| {
            record
                .lock()
                .expect("progress")
                .push((p.file.to_string(), p.done, p.total));
        })),
        ..hub.options(cache.path())
    };

    let dir = resolve_or_download(REPO, &options).expect("download");
    assert_eq!(dir, repo_dir(cache.path()).join("snapshots").join(COMMIT));
    let (linked, partials) = check_cache(cache.path());
    assert_eq!(linked, wanted());
    assert!(partials.is_empty());
    assert_eq!(
        std::fs::read_to_string(repo_dir(cache.path()).join("refs/main")).expect("refs/main"),
        COMMIT
    );
    #[cfg(unix)]
    {
        let link = std::fs::read_link(dir.join(SHARD)).expect("a symlink");
        let sha = sha256_hex(&fixture_files()[SHARD]);
        assert_eq!(link, Path::new("../../blobs").join(sha));
    }

    // The decoys were never asked for, the CDN's own ETag not used, the token not sent.
    let requests = hub.requests();
    for r in &requests {
        assert!(
            !r.path.contains("NOTICE.md") && !r.path.contains("README.md"),
            "{r:?}"
        );
        assert!(!r.path.contains("pytorch_model.bin"), "{r:?}");
        assert!(!r.headers.contains_key("authorization"), "{r:?}");
    }
    assert!(!repo_dir(cache.path())
        .join("blobs/cdn-etag-not-the-blob")
        .exists());
    let cdn_gets = requests
        .iter()
        .filter(|r| r.cdn && r.method == "GET")
        .count();
    assert_eq!(cdn_gets, 3, "one GET per shard");

    // Progress: every downloaded file ends at done == total.
    let progress = seen.lock().expect("progress").clone();
    for name in wanted() {
        let size = fixture_files()[&name].len() as u64;
        assert!(
            progress.contains(&(name.clone(), size, size)),
            "no final progress for {name}"
        );
    }

    // Cached: the next call makes no request.
    let before = hub.requests().len();
    assert_eq!(resolve_or_download(REPO, &options).expect("cached"), dir);
    assert_eq!(
        hub.requests().len(),
        before,
        "a cached model needs no request"
    );

    // fetch_model asks the hub again but downloads no byte it already has.
    assert_eq!(fetch_model(REPO, &options).expect("refetch"), dir);
    let again: Vec<Seen> = hub.requests()[before..].to_vec();
    assert!(!again.is_empty());
    assert!(
        again
            .iter()
            .all(|r| r.method == "HEAD" || r.path.starts_with("/api/")),
        "{again:?}"
    );

    #[cfg(any(feature = "flex", feature = "ndarray"))]
    {
        use vicrop_models::{LlavaModel, LoadOptions};
        LlavaModel::<vicrop_models::backend::Cpu>::load(
            &dir,
            &Default::default(),
            LoadOptions::default(),
        )
        .expect("the downloaded model loads");
    }
}

#[test]
fn interrupted_download_keeps_the_partial_and_resumes_with_a_range() {
    const K: usize = 300_000;
    let hub = Hub::start(Behaviour {
        cut: Some((SHARD.into(), K)),
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let options = hub.options(cache.path());

    let err = hub_error(resolve_or_download(REPO, &options).expect_err("cut"));
    let message = err.to_string();
    match &err {
        HubError::Interrupted {
            file, done, total, ..
        } => {
            assert_eq!(file, SHARD);
            assert_eq!(*done, K as u64);
            assert_eq!(*total, fixture_files()[SHARD].len() as u64);
        }
        other => panic!("expected Interrupted, got {other}"),
    }
    assert!(message.contains("resume"), "{message}");
    assert!(message.contains(&format!("after {K} of")), "{message}");
    let (linked, partials) = check_cache(cache.path());
    assert!(
        linked.is_empty(),
        "nothing is linked before every file is in"
    );
    assert_eq!(partials.len(), 1);
    assert_eq!(
        std::fs::metadata(&partials[0]).expect("partial").len(),
        K as u64
    );
    assert!(!repo_dir(cache.path()).join("refs/main").exists());

    let before = hub.requests().len();
    let dir = resolve_or_download(REPO, &options).expect("resumed");
    let resumed: Vec<Seen> = hub.requests()[before..]
        .iter()
        .filter(|r| r.cdn && r.method == "GET")
        .cloned()
        .collect();
    let sha = sha256_hex(&fixture_files()[SHARD]);
    let shard_get = resumed
        .iter()
        .find(|r| r.path.ends_with(&sha))
        .expect("the shard was asked for again");
    assert_eq!(
        shard_get.headers.get("range").map(String::as_str),
        Some(format!("bytes={K}-").as_str())
    );
    assert!(
        resumed
            .iter()
            .all(|r| r.path.ends_with(&sha) || !r.headers.contains_key("range")),
        "only the cut file is resumed"
    );
    let (linked, partials) = check_cache(cache.path());
    assert_eq!(linked, wanted());
    assert!(partials.is_empty());
    assert_eq!(dir, repo_dir(cache.path()).join("snapshots").join(COMMIT));
}

#[test]
fn missing_file_is_named_and_nothing_is_linked() {
    let hub = Hub::start(Behaviour {
        missing: Some("tokenizer.json".into()),
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let err = hub_error(resolve_or_download(REPO, &hub.options(cache.path())).expect_err("404"));
    assert!(
        matches!(&err, HubError::FileNotFound { file, .. } if file == "tokenizer.json"),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("`tokenizer.json` not found"), "{message}");
    assert!(message.contains(REPO), "{message}");
    let (linked, partials) = check_cache(cache.path());
    assert!(linked.is_empty());
    assert!(partials.is_empty());
    let tokenizer_etag = git_etag(&fixture_files()["tokenizer.json"]);
    assert!(!repo_dir(cache.path())
        .join("blobs")
        .join(tokenizer_etag)
        .exists());
    assert!(!repo_dir(cache.path()).join("refs/main").exists());
}

#[test]
fn server_error_is_reported_with_its_status_after_a_bounded_retry() {
    let sha = sha256_hex(&fixture_files()[SHARD]);
    let hub = Hub::start(Behaviour {
        fail: Some((sha.clone(), usize::MAX)),
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let options = hub.options(cache.path());
    let err = hub_error(resolve_or_download(REPO, &options).expect_err("500"));
    assert!(
        matches!(
            err,
            HubError::Server {
                status: 500,
                attempts: 2,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("HTTP 500"), "{message}");
    let attempts = hub
        .requests()
        .iter()
        .filter(|r| r.path.contains(&sha))
        .count();
    assert_eq!(attempts, 2, "one try and one retry (retries: 1)");
    let (linked, partials) = check_cache(cache.path());
    assert!(linked.is_empty());
    assert!(partials.is_empty(), "no partial from a failed answer");
    assert!(!repo_dir(cache.path()).join("blobs").join(&sha).exists());
}

#[test]
fn a_transient_server_error_is_retried() {
    let hub = Hub::start(Behaviour {
        fail: Some(("/api/models/".into(), 1)),
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().expect("tempdir");
    resolve_or_download(REPO, &hub.options(cache.path())).expect("second try works");
    let (linked, _) = check_cache(cache.path());
    assert_eq!(linked, wanted());
}

#[test]
fn offline_refuses_without_a_request_and_uses_the_cache() {
    let hub = Hub::start(Behaviour::default());
    let cache = tempfile::tempdir().expect("tempdir");

    // The flag.
    let options = HubOptions {
        offline: true,
        ..hub.options(cache.path())
    };
    let err = hub_error(resolve_or_download(REPO, &options).expect_err("offline"));
    assert!(matches!(err, HubError::Offline { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&repo_dir(cache.path()).display().to_string()),
        "names the folder looked in: {message}"
    );
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    let err = hub_error(fetch_model(REPO, &options).expect_err("offline"));
    assert!(matches!(err, HubError::Offline { .. }), "{err}");

    // The environment, through the same layer `from_env` uses.
    let endpoint = hub.endpoint();
    let cache_var = cache.path().as_os_str().to_os_string();
    let from_env = HubOptions::from_vars(|name| match name {
        "HF_HUB_OFFLINE" => Some("1".into()),
        "HF_ENDPOINT" => Some(format!("{endpoint}/").into()),
        "HF_HUB_CACHE" => Some(cache_var.clone()),
        _ => None,
    });
    assert!(from_env.offline);
    assert_eq!(from_env.endpoint, endpoint);
    assert_eq!(from_env.cache_dirs, vec![cache.path().to_path_buf()]);
    let err = hub_error(resolve_or_download(REPO, &from_env).expect_err("offline"));
    assert!(matches!(err, HubError::Offline { .. }), "{err}");
    assert!(hub.requests().is_empty(), "offline makes no request");

    // Once downloaded, offline works from the cache.
    let online = HubOptions {
        offline: false,
        ..from_env.clone()
    };
    let dir = resolve_or_download(REPO, &online).expect("download");
    let before = hub.requests().len();
    assert_eq!(resolve_or_download(REPO, &from_env).expect("cached"), dir);
    assert_eq!(fetch_model(REPO, &from_env).expect("cached"), dir);
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn the_token_goes_to_the_hub_and_not_to_the_cdn() {
    let hub = Hub::start(Behaviour::default());
    let cache = tempfile::tempdir().expect("tempdir");
    let options = HubOptions {
        token: Some("hf_secret".into()),
        ..hub.options(cache.path())
    };
    resolve_or_download(REPO, &options).expect("download");
    let requests = hub.requests();
    assert!(requests.iter().any(|r| r.cdn));
    for r in requests {
        let auth = r.headers.get("authorization").map(String::as_str);
        if r.cdn {
            assert_eq!(auth, None, "{r:?}");
        } else {
            assert_eq!(auth, Some("Bearer hf_secret"), "{r:?}");
        }
    }
}

#[test]
fn a_corrupt_download_is_deleted() {
    let hub = Hub::start(Behaviour {
        corrupt: Some(SHARD.into()),
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let err = hub_error(resolve_or_download(REPO, &hub.options(cache.path())).expect_err("bad"));
    assert!(
        matches!(&err, HubError::Corrupt { file, .. } if file == SHARD),
        "{err}"
    );
    assert!(err.to_string().contains("sha256"), "{err}");
    let (linked, partials) = check_cache(cache.path());
    assert!(linked.is_empty());
    assert!(partials.is_empty(), "the bad partial is gone");
}

#[test]
fn a_repository_without_safetensors_is_refused_before_any_download() {
    let mut files = fixture_files();
    files.retain(|name, _| !name.ends_with(".safetensors") && !name.ends_with(".index.json"));
    let hub = Hub::start_with(files, Behaviour::default());
    let cache = tempfile::tempdir().expect("tempdir");
    let err = hub_error(resolve_or_download(REPO, &hub.options(cache.path())).expect_err("no"));
    let message = err.to_string();
    assert!(matches!(err, HubError::NoWeights { .. }), "{message}");
    assert!(message.contains("pytorch_model.bin"), "{message}");
    assert!(message.contains("safetensors"), "{message}");
    assert_eq!(hub.requests().len(), 1, "only the listing");
}

#[test]
fn unknown_gated_and_missing_revisions_say_what_to_do() {
    let hub = Hub::start(Behaviour::default());
    let cache = tempfile::tempdir().expect("tempdir");
    let options = hub.options(cache.path());

    let err = hub_error(resolve_or_download("nobody/nothing", &options).expect_err("401"));
    assert!(
        matches!(err, HubError::RepoNotFound { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    let tag = HubOptions {
        revision: "v9".into(),
        ..options.clone()
    };
    let err = hub_error(resolve_or_download(REPO, &tag).expect_err("404"));
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err}");

    let gated = Hub::start(Behaviour {
        listing: Some((403, "GatedRepo")),
        ..Behaviour::default()
    });
    let err = hub_error(resolve_or_download(REPO, &gated.options(cache.path())).expect_err("403"));
    assert!(
        matches!(err, HubError::AccessDenied { status: 403, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("gated") && message.contains("HF_TOKEN"),
        "{message}"
    );

    let (linked, partials) = check_cache(cache.path());
    assert!(linked.is_empty() && partials.is_empty());
}

#[test]
fn an_explicit_commit_revision_is_fetched_and_found_again() {
    let hub = Hub::start(Behaviour::default());
    let cache = tempfile::tempdir().expect("tempdir");
    let options = HubOptions {
        revision: COMMIT.into(),
        ..hub.options(cache.path())
    };
    let dir = resolve_or_download(REPO, &options).expect("download");
    assert!(
        !repo_dir(cache.path()).join("refs").join(COMMIT).exists(),
        "no ref for a commit"
    );
    let before = hub.requests().len();
    assert_eq!(resolve_or_download(REPO, &options).expect("cached"), dir);
    assert_eq!(hub.requests().len(), before);
}

//! The run folder on disk: the manifest, results files (append, repair, read), shard states,
//! locks, and merging shards.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Row, RunError, RunSpec, Shard};
use crate::data::Dataset;

/// The manifest's file name.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
/// The (merged, or unsharded) results file's name.
pub(crate) const RESULTS_FILE: &str = "results.jsonl";

/// What a shard records about itself in `shard-K-of-N.json`, rewritten each time it starts:
/// its copy of the manifest (so [`merge`] can check that the shards agree even when their
/// folders were gathered from several machines) and how many dataset items the run covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardState {
    /// K.
    pub shard: usize,
    /// N.
    pub shards: usize,
    /// Dataset items the run covers: the dataset's size, or `--limit` if smaller. The shard
    /// is complete when it has a row for every index below this that is K modulo N.
    pub items: usize,
    /// The dataset's size.
    pub dataset_items: usize,
    /// The settings the shard ran with.
    pub manifest: RunSpec,
}

fn shard_state_name(shard: Shard) -> String {
    format!("shard-{}-of-{}.json", shard.index, shard.count)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, then
/// renamed over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let tmp = temp_path(path);
    let mut f = File::create(&tmp).map_err(RunError::io(&tmp))?;
    f.write_all(bytes).map_err(RunError::io(&tmp))?;
    f.sync_all().map_err(RunError::io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(RunError::io(path))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn read_manifest(path: &Path) -> Result<RunSpec, RunError> {
    let text = std::fs::read_to_string(path).map_err(RunError::io(path))?;
    serde_json::from_str(&text).map_err(|e| RunError::Corrupt {
        path: path.to_path_buf(),
        message: format!("not a run manifest: {e}"),
    })
}

/// The folder's manifest compared with `spec`: warnings for differing paths or versions,
/// [`RunError::Mismatch`] for differing settings; nothing when there is no manifest yet.
pub(crate) fn check_manifest(dir: &Path, spec: &RunSpec) -> Result<Vec<String>, RunError> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    compare(dir, &read_manifest(&path)?, spec)
}

fn compare(dir: &Path, recorded: &RunSpec, spec: &RunSpec) -> Result<Vec<String>, RunError> {
    let fields = recorded.differences(spec);
    if !fields.is_empty() {
        return Err(RunError::Mismatch {
            dir: dir.to_path_buf(),
            fields,
        });
    }
    Ok(recorded
        .informational_differences(spec)
        .into_iter()
        .map(|d| {
            format!(
                "{}: {} (kept: only the settings above must agree)",
                dir.join(MANIFEST_FILE).display(),
                d
            )
        })
        .collect())
}

/// Writes the manifest if the folder has none (atomically, so of two shards starting together
/// one creates it and the other compares against it), else compares.
fn ensure_manifest(dir: &Path, spec: &RunSpec) -> Result<Vec<String>, RunError> {
    let path = dir.join(MANIFEST_FILE);
    if path.exists() {
        return compare(dir, &read_manifest(&path)?, spec);
    }
    let bytes = pretty(spec, &path)?;
    let tmp = temp_path(&path);
    {
        let mut f = File::create(&tmp).map_err(RunError::io(&tmp))?;
        f.write_all(&bytes).map_err(RunError::io(&tmp))?;
        f.sync_all().map_err(RunError::io(&tmp))?;
    }
    // A hard link fails if the manifest appeared meanwhile: create-if-absent, atomically.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            compare(dir, &read_manifest(&path)?, spec)
        }
        // No hard links on this file system: plain write (the shard states still let merge
        // catch a race between shards with different settings).
        Err(_) => {
            if path.exists() {
                compare(dir, &read_manifest(&path)?, spec)
            } else {
                write_atomic(&path, &bytes).map(|()| Vec::new())
            }
        }
    }
}

fn pretty<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, RunError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| RunError::Corrupt {
        path: path.to_path_buf(),
        message: format!("cannot serialise: {e}"),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// An advisory lock on `path` (created if needed) held while the value lives; the operating
/// system drops it when the process dies, so a kill leaves no stale lock. Where advisory locks
/// are unavailable (not Unix) it is not enforced.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    /// `Ok(None)` when another process holds it.
    fn try_acquire(path: &Path) -> Result<Option<Lock>, RunError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(RunError::io(path))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a file descriptor this function owns; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                return if err.kind() == std::io::ErrorKind::WouldBlock {
                    Ok(None)
                } else {
                    Err(RunError::Io {
                        path: path.to_path_buf(),
                        source: err,
                    })
                };
            }
        }
        Ok(Some(Lock { _file: file }))
    }
}

fn lock_path(results: &Path) -> PathBuf {
    let mut name = results.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    results.with_file_name(name)
}

/// A results file's rows as read, and whether its last line was torn.
struct ReadRows {
    /// (row, its line as written, 1-based line number).
    rows: Vec<(Row, String, usize)>,
    /// Bytes after the last newline (a line the writer did not finish), 0 if none.
    torn: usize,
    /// Length of the file up to and including the last newline.
    complete_len: u64,
}

/// Reads a results file; a missing file has no rows. Every complete line must be a row; the
/// bytes after the last newline are reported as torn, not parsed.
fn read_rows(path: &Path) -> Result<ReadRows, RunError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(RunError::io(path)(e)),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut rows = Vec::new();
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        let at = || PathBuf::from(format!("{}:{}", path.display(), i + 1));
        let line = std::str::from_utf8(line).map_err(|_| RunError::Corrupt {
            path: at(),
            message: "not UTF-8 text: not a results row".into(),
        })?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|e| RunError::Corrupt {
            path: at(),
            message: format!("not a results row ({e}); move the file away to start over"),
        })?;
        rows.push((row, line.to_string(), i + 1));
    }
    Ok(ReadRows {
        rows,
        torn: bytes.len() - complete,
        complete_len: complete as u64,
    })
}

fn torn_warning(path: &Path, bytes: usize, action: &str) -> String {
    format!(
        "{}: the last line is torn ({bytes} bytes without a newline: the item in flight when a \
         run stopped); {action}",
        path.display()
    )
}

/// [`RunError::Busy`] while another process holds the lock of `shard`'s results in `dir`
/// (probed and released at once; nothing is created).
pub(crate) fn check_not_busy(dir: &Path, shard: Shard) -> Result<(), RunError> {
    let lock = lock_path(&dir.join(shard.results_file_name()));
    if !lock.exists() {
        return Ok(());
    }
    match Lock::try_acquire(&lock)? {
        Some(_) => Ok(()),
        None => Err(busy(&dir.join(shard.results_file_name()))),
    }
}

fn busy(results: &Path) -> RunError {
    RunError::Busy(format!(
        "another vicrop process is writing {} (it holds {}); wait for it or stop it",
        results.display(),
        lock_path(results).display()
    ))
}

/// An open run folder for one shard: the lock held, the manifest and shard state written, the
/// rows already there read and checked, the results file open for appending.
pub(crate) struct RunDir {
    results: PathBuf,
    file: File,
    _lock: Lock,
    /// Dataset indices that have a row.
    pub(crate) done: BTreeSet<usize>,
    /// Things worth telling the user.
    pub(crate) warnings: Vec<String>,
}

impl RunDir {
    pub(crate) fn open(
        dir: &Path,
        spec: &RunSpec,
        shard: Shard,
        covered: usize,
        dataset: &Dataset,
    ) -> Result<Self, RunError> {
        std::fs::create_dir_all(dir).map_err(RunError::io(dir))?;
        let results = dir.join(shard.results_file_name());
        let lock = Lock::try_acquire(&lock_path(&results))?.ok_or_else(|| busy(&results))?;
        let mut warnings = ensure_manifest(dir, spec)?;
        if shard.count > 1 {
            let state = ShardState {
                shard: shard.index,
                shards: shard.count,
                items: covered,
                dataset_items: dataset.items.len(),
                manifest: spec.clone(),
            };
            let path = dir.join(shard_state_name(shard));
            write_atomic(&path, &pretty(&state, &path)?)?;
        }
        let read = read_rows(&results)?;
        if read.torn > 0 {
            let f = OpenOptions::new()
                .write(true)
                .open(&results)
                .map_err(RunError::io(&results))?;
            f.set_len(read.complete_len)
                .map_err(RunError::io(&results))?;
            f.sync_all().map_err(RunError::io(&results))?;
            warnings.push(torn_warning(
                &results,
                read.torn,
                "cut it off; that item runs again",
            ));
        }
        let mut done = BTreeSet::new();
        for (row, _, line) in &read.rows {
            let at = || PathBuf::from(format!("{}:{line}", results.display()));
            match dataset.items.get(row.index).map(|i| i.id.as_str()) {
                Some(id) if id == row.id => {}
                found => {
                    return Err(RunError::Corrupt {
                        path: at(),
                        message: format!(
                            "the row for id {:?} at index {} does not match the dataset ({}); \
                             this folder holds results of other data",
                            row.id,
                            row.index,
                            match found {
                                Some(id) => format!("item {} is {id:?}", row.index),
                                None => format!("it has {} items", dataset.items.len()),
                            }
                        ),
                    })
                }
            }
            if !shard.contains(row.index) {
                return Err(RunError::Corrupt {
                    path: at(),
                    message: format!("index {} does not belong to shard {shard}", row.index),
                });
            }
            if !done.insert(row.index) {
                return Err(RunError::Corrupt {
                    path: at(),
                    message: format!(
                        "a second row for index {} (id {:?}): two processes wrote this file; \
                         remove the duplicate line",
                        row.index, row.id
                    ),
                });
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&results)
            .map_err(RunError::io(&results))?;
        Ok(Self {
            results,
            file,
            _lock: lock,
            done,
            warnings,
        })
    }

    pub(crate) fn results_path(&self) -> &Path {
        &self.results
    }

    /// Appends one row as a line, flushed and synced before returning.
    pub(crate) fn append(&mut self, row: &Row) -> Result<(), RunError> {
        let mut line = serde_json::to_vec(row).map_err(|e| RunError::Corrupt {
            path: self.results.clone(),
            message: format!("cannot serialise the row of {:?}: {e}", row.id),
        })?;
        line.push(b'\n');
        let io = RunError::io(&self.results);
        self.file.write_all(&line).map_err(io)?;
        self.file.flush().map_err(RunError::io(&self.results))?;
        self.file.sync_data().map_err(RunError::io(&self.results))?;
        self.done.insert(row.index);
        Ok(())
    }

    /// Removes the rows that record an error (rewriting the file atomically), so their items
    /// run again. Returns how many.
    pub(crate) fn drop_error_rows(&mut self) -> Result<usize, RunError> {
        let read = read_rows(&self.results)?;
        let (failed, kept): (Vec<_>, Vec<_>) = read
            .rows
            .into_iter()
            .partition(|(r, _, _)| r.error.is_some());
        if failed.is_empty() {
            return Ok(0);
        }
        let mut bytes = Vec::new();
        for (_, line, _) in &kept {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        write_atomic(&self.results, &bytes)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.results)
            .map_err(RunError::io(&self.results))?;
        for (row, _, _) in &failed {
            self.done.remove(&row.index);
        }
        Ok(failed.len())
    }
}

/// A run folder's manifest and rows, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResults {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: RunSpec,
    /// Its rows, in dataset order.
    pub rows: Vec<Row>,
    /// What was skipped (a torn last line of a run in progress or killed).
    pub warnings: Vec<String>,
}

/// Reads a run folder: `manifest.json` and `results.jsonl`, or, for a sharded run not merged
/// yet, every `results-K-of-N.jsonl` there (whatever they hold so far). A torn last line (a run
/// in progress, or killed) is skipped with a warning; any other bad line, or two rows for one
/// item, is an error naming the file and line.
pub fn read_results(dir: &Path) -> Result<RunResults, RunError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        return Err(RunError::Invalid(format!(
            "{} has no {MANIFEST_FILE}: not a vicrop eval run folder",
            dir.display()
        )));
    }
    let manifest = read_manifest(&manifest_path)?;
    let merged = dir.join(RESULTS_FILE);
    let files: Vec<PathBuf> = if merged.exists() || manifest.shards <= 1 {
        vec![merged]
    } else {
        (0..manifest.shards)
            .map(|k| {
                dir.join(
                    Shard {
                        index: k,
                        count: manifest.shards,
                    }
                    .results_file_name(),
                )
            })
            .filter(|p| p.exists())
            .collect()
    };
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    let mut seen: HashMap<usize, PathBuf> = HashMap::new();
    for file in files {
        let read = read_rows(&file)?;
        if read.torn > 0 {
            warnings.push(torn_warning(&file, read.torn, "skipped it"));
        }
        for (row, _, line) in read.rows {
            let at = PathBuf::from(format!("{}:{line}", file.display()));
            if let Some(first) = seen.insert(row.index, at.clone()) {
                return Err(RunError::Corrupt {
                    path: at,
                    message: format!(
                        "a second row for index {} (id {:?}); the first is at {}",
                        row.index,
                        row.id,
                        first.display()
                    ),
                });
            }
            rows.push(row);
        }
    }
    rows.sort_by_key(|r| r.index);
    Ok(RunResults {
        dir: dir.to_path_buf(),
        manifest,
        rows,
        warnings,
    })
}

/// What [`merge`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeSummary {
    /// The merged file (`results.jsonl`).
    pub results: PathBuf,
    /// Rows written.
    pub rows: usize,
    /// Shards that were incomplete (merged anyway with `allow_partial`), one line each.
    pub missing: Vec<String>,
    /// What was skipped.
    pub warnings: Vec<String>,
}

/// Combines the shard files of a sharded run folder into `results.jsonl` (rows in dataset
/// order, lines as the shards wrote them), after checking that every shard's manifest agrees
/// with the folder's, that the shards cover the same items, that no id or index repeats and
/// that every shard is complete: a row for each of its items. Incomplete shards (or shards
/// never run, or still running) are an error listing what is missing, unless `allow_partial`.
/// The merged file is written atomically; the shard files stay.
pub fn merge(dir: &Path, allow_partial: bool) -> Result<MergeSummary, RunError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        return Err(RunError::Invalid(format!(
            "{} has no {MANIFEST_FILE}: not a vicrop eval run folder",
            dir.display()
        )));
    }
    let manifest = read_manifest(&manifest_path)?;
    let n = manifest.shards;
    if n <= 1 {
        return Err(RunError::Invalid(format!(
            "{} is not a sharded run (its manifest says shards = {n}): {RESULTS_FILE} is already \
             the whole result",
            dir.display()
        )));
    }
    let mut states: Vec<Option<ShardState>> = Vec::with_capacity(n);
    let mut disagreements = Vec::new();
    for k in 0..n {
        let shard = Shard { index: k, count: n };
        let path = dir.join(shard_state_name(shard));
        if !path.exists() {
            states.push(None);
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(RunError::io(&path))?;
        let state: ShardState = serde_json::from_str(&text).map_err(|e| RunError::Corrupt {
            path: path.clone(),
            message: format!("not a shard state: {e}"),
        })?;
        if (state.shard, state.shards) != (k, n) {
            return Err(RunError::Corrupt {
                path,
                message: format!("says shard {}/{}", state.shard, state.shards),
            });
        }
        let diffs = manifest.differences(&state.manifest);
        if !diffs.is_empty() {
            let fields: Vec<String> = diffs
                .iter()
                .map(|d| {
                    format!(
                        "{} is {} there, {} in manifest.json",
                        d.field, d.requested, d.recorded
                    )
                })
                .collect();
            disagreements.push(format!("shard {shard}: {}", fields.join(", ")));
        }
        states.push(Some(state));
    }
    if !disagreements.is_empty() {
        return Err(RunError::Invalid(format!(
            "cannot merge {}: shards ran with other settings than manifest.json: {}",
            dir.display(),
            disagreements.join("; ")
        )));
    }
    let items: BTreeSet<usize> = states.iter().flatten().map(|s| s.items).collect();
    let Some(&covered) = items.iter().next_back() else {
        return Err(RunError::Incomplete {
            dir: dir.to_path_buf(),
            missing: vec![format!("no shard of {n} has run yet")],
        });
    };
    if items.len() > 1 {
        return Err(RunError::Invalid(format!(
            "cannot merge {}: the shards cover different numbers of items (--limit): {}; rerun \
             the shorter ones with the same --limit",
            dir.display(),
            states
                .iter()
                .flatten()
                .map(|s| format!("shard {}/{n}: {}", s.shard, s.items))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    let mut missing = Vec::new();
    let mut warnings = Vec::new();
    let mut lines: Vec<(usize, String)> = Vec::new();
    let mut ids: HashMap<String, (usize, PathBuf)> = HashMap::new();
    let mut locks = Vec::new();
    for (k, state) in states.iter().enumerate() {
        let shard = Shard { index: k, count: n };
        let expected = (0..covered).filter(|&i| shard.contains(i)).count();
        if state.is_none() {
            missing.push(format!("shard {shard} never ran ({expected} items)"));
            continue;
        }
        let results = dir.join(shard.results_file_name());
        // A shard still running is incomplete; its rows so far still count.
        let running = match Lock::try_acquire(&lock_path(&results))? {
            Some(lock) => {
                locks.push(lock);
                false
            }
            None => true,
        };
        let read = read_rows(&results)?;
        if read.torn > 0 {
            warnings.push(torn_warning(&results, read.torn, "skipped it"));
        }
        let mut present = BTreeSet::new();
        for (row, line, number) in read.rows {
            let at = PathBuf::from(format!("{}:{number}", results.display()));
            if !shard.contains(row.index) {
                return Err(RunError::Corrupt {
                    path: at,
                    message: format!("index {} does not belong to shard {shard}", row.index),
                });
            }
            if let Some((first, first_at)) = ids.insert(row.id.clone(), (row.index, at.clone())) {
                return Err(RunError::Corrupt {
                    path: at,
                    message: format!(
                        "id {:?} (index {}) repeats: also at {} (index {first})",
                        row.id,
                        row.index,
                        first_at.display()
                    ),
                });
            }
            if !present.insert(row.index) {
                return Err(RunError::Corrupt {
                    path: at,
                    message: format!("a second row for index {}", row.index),
                });
            }
            lines.push((row.index, line));
        }
        let absent: Vec<usize> = (0..covered)
            .filter(|&i| shard.contains(i) && !present.contains(&i))
            .collect();
        if running {
            missing.push(format!(
                "shard {shard} is still running ({} of its {expected} items so far)",
                expected - absent.len()
            ));
        } else if !absent.is_empty() {
            let shown: Vec<String> = absent.iter().take(10).map(ToString::to_string).collect();
            missing.push(format!(
                "shard {shard} has {} of its {expected} items; missing indices {}{}",
                expected - absent.len(),
                shown.join(", "),
                if absent.len() > 10 { ", ..." } else { "" }
            ));
        }
    }
    if !missing.is_empty() && !allow_partial {
        return Err(RunError::Incomplete {
            dir: dir.to_path_buf(),
            missing,
        });
    }
    lines.sort_by_key(|(i, _)| *i);
    let mut bytes = Vec::new();
    for (_, line) in &lines {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    let out = dir.join(RESULTS_FILE);
    write_atomic(&out, &bytes)?;
    drop(locks);
    Ok(MergeSummary {
        results: out,
        rows: lines.len(),
        missing,
        warnings,
    })
}

//! Loading Hugging Face safetensors checkpoints (single file or sharded) into burn tensors.
//!
//! Tensors are memory-mapped, looked up by their transformers name, shape-checked against the
//! configuration, converted from F32/F16/BF16 to the compute dtype and placed on the device.
//! The loader records which names were read, so that a checkpoint holding tensors this
//! architecture does not have is reported instead of silently ignored.
//!
//! Memory: a tensor's bytes are copied out of the mapping once, converted and handed to the
//! backend, and its pages are then released from the mapping (Linux `MADV_DONTNEED`), so the
//! process holds about one copy of the weights in the compute dtype, not the file as well.
//! Progress is reported per tensor through [`LoadProgress`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo};
use serde::Deserialize;

use crate::error::{ModelError, Result};

/// Single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Sharded checkpoint index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Called after each tensor is loaded with (bytes read so far, bytes of all tensors in the
/// checkpoint). Used by the command-line tool for its progress bar.
pub type LoadProgress = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
}

impl Shard {
    /// Drops the mapping's resident pages over `[offset, offset + len)` once a tensor has been
    /// copied out, so the file does not stay in this process's resident memory next to the
    /// converted weights. The mapping is read-only and shared: a later read of these bytes
    /// (a tensor loaded twice) pages them back in from the file, unchanged.
    fn release(&self, offset: usize, len: usize) {
        #[cfg(target_os = "linux")]
        {
            if len > 0 && offset + len <= self.mmap.len() {
                // SAFETY: `MADV_DONTNEED` on a read-only, file-backed shared mapping only
                // discards clean pages, which the kernel reloads from the file on the next
                // access; no slice into the mapping is alive here (the caller copied it).
                let _ = unsafe {
                    self.mmap.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        offset,
                        len,
                    )
                };
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }
}

/// Visits every element of a row-major `[rows, cols]` matrix as `(index in it, index in its
/// `[cols, rows]` transpose)`, in cache-sized tiles (a 7B checkpoint transposes about 6
/// billion elements at load time).
fn for_each_transposed(rows: usize, cols: usize, mut visit: impl FnMut(usize, usize)) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    visit(r * cols + c, c * rows + r);
                }
            }
        }
    }
}

/// Writes the transpose of the row-major `[rows, cols]` matrix `src` (elements of `E` bytes)
/// into `dst` as `[cols, rows]`.
fn transpose_into<const E: usize>(src: &[u8], dst: &mut [u8], rows: usize, cols: usize) {
    for_each_transposed(rows, cols, |from, to| {
        dst[to * E..(to + 1) * E].copy_from_slice(&src[from * E..(from + 1) * E]);
    });
}

/// A little-endian bf16 element as f32 (exact).
fn bf16_le(b: &[u8]) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
}

/// A little-endian f16 element as f32 (exact).
fn f16_le(b: &[u8]) -> f32 {
    burn::tensor::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

/// The transpose of the row-major `[rows, cols]` matrix `src` (elements of `size` bytes, read
/// by `widen`) as f32 `[cols, rows]`.
fn transpose_widen(
    src: &[u8],
    size: usize,
    rows: usize,
    cols: usize,
    widen: impl Fn(&[u8]) -> f32,
) -> Vec<f32> {
    let mut dst = vec![0f32; rows * cols];
    for_each_transposed(rows, cols, |from, to| {
        dst[to] = widen(&src[from * size..(from + 1) * size]);
    });
    dst
}

struct Entry {
    shard: usize,
    info: TensorInfo,
}

/// Canonical (llava-hf, transformers < 4.52) name of a tensor stored under a newer layout.
///
/// transformers >= 4.52 saves LLaVA as `model.vision_tower.*`, `model.multi_modal_projector.*`,
/// `model.language_model.*` and `lm_head.*`; both layouts load.
pub fn canonical_name(name: &str) -> String {
    const MAP: [(&str, &str); 4] = [
        ("model.vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ];
    for (new, old) in MAP {
        if let Some(rest) = name.strip_prefix(new) {
            return format!("{old}{rest}");
        }
    }
    name.to_string()
}

/// The tensors of one checkpoint folder, memory-mapped.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    entries: HashMap<String, Entry>,
    used: RefCell<BTreeSet<String>>,
    known: RefCell<BTreeSet<String>>,
    progress: Option<LoadProgress>,
    read_bytes: Cell<u64>,
    total_bytes: u64,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn open_shard(path: &Path) -> Result<(Shard, Vec<(String, TensorInfo)>)> {
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelError::NotFound {
            what: "weights file",
            path: path.to_path_buf(),
        },
        _ => ModelError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    // SAFETY: the file is opened read-only; as with every memory-mapped checkpoint loader,
    // the user must not truncate it while the model loads.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (header_len, metadata) =
        SafeTensors::read_metadata(&mmap).map_err(|err| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: match err {
                safetensors::SafeTensorError::MetadataIncompleteBuffer => format!(
                    "the file is truncated or has trailing bytes ({} bytes on disk)",
                    mmap.len()
                ),
                safetensors::SafeTensorError::HeaderTooSmall => {
                    "the file is too short to be safetensors".to_string()
                }
                other => other.to_string(),
            },
        })?;
    let tensors = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.clone()))
        .collect();
    Ok((
        Shard {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + header_len,
        },
        tensors,
    ))
}

impl Checkpoint {
    /// Opens `model.safetensors` or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        let single_path = dir.join(SINGLE_FILE);
        let shard_names: Vec<String> = if index_path.is_file() {
            let index: ShardIndex = crate::config::read_json(&index_path)?;
            let mut names: Vec<String> = index.weight_map.values().cloned().collect();
            names.sort();
            names.dedup();
            names
        } else if single_path.is_file() {
            vec![SINGLE_FILE.to_string()]
        } else {
            return Err(ModelError::NotFound {
                what: "weights (model.safetensors or model.safetensors.index.json)",
                path: dir.to_path_buf(),
            });
        };
        let mut shards = Vec::new();
        let mut entries = HashMap::new();
        for name in shard_names {
            let (shard, tensors) = open_shard(&dir.join(&name))?;
            let idx = shards.len();
            shards.push(shard);
            for (tensor_name, info) in tensors {
                entries.insert(canonical_name(&tensor_name), Entry { shard: idx, info });
            }
        }
        let total_bytes = entries
            .values()
            .map(|e| (e.info.data_offsets.1 - e.info.data_offsets.0) as u64)
            .sum();
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            entries,
            used: RefCell::new(BTreeSet::new()),
            known: RefCell::new(BTreeSet::new()),
            progress: None,
            read_bytes: Cell::new(0),
            total_bytes,
        })
    }

    /// Reports progress to `progress` from now on.
    pub fn with_progress(mut self, progress: Option<LoadProgress>) -> Self {
        self.progress = progress;
        self
    }

    /// Bytes of all tensors in the checkpoint (what a full load reads).
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The folder the checkpoint lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Declares `name` as belonging to the architecture without loading it (e.g. vision
    /// layers past the selected feature layer, or CLIP's unused post-layernorm).
    pub fn skip(&self, name: &str) {
        self.known.borrow_mut().insert(name.to_string());
    }

    /// Declares every tensor whose name starts with `prefix` as known but unused.
    pub fn skip_prefix(&self, prefix: &str) {
        let mut known = self.known.borrow_mut();
        for name in self.entries.keys() {
            if name.starts_with(prefix) {
                known.insert(name.clone());
            }
        }
    }

    /// Loads tensor `name`, checks it has `shape`, converts it to `dtype` on `device`.
    pub fn load<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
        dtype: DType,
    ) -> Result<Tensor<B, D>> {
        let data = self.with_bytes(name, &shape, |bytes, stored| {
            Ok(match (stored, dtype) {
                (s, d) if s == d => TensorData::from_bytes_vec(bytes.to_vec(), shape.to_vec(), s),
                (DType::BF16, DType::F32) => {
                    TensorData::new(bytes.chunks_exact(2).map(bf16_le).collect(), shape.to_vec())
                }
                (DType::F16, DType::F32) => {
                    TensorData::new(bytes.chunks_exact(2).map(f16_le).collect(), shape.to_vec())
                }
                (s, d) => {
                    TensorData::from_bytes_vec(bytes.to_vec(), shape.to_vec(), s).convert_dtype(d)
                }
            })
        })?;
        Ok(Tensor::from_data(data, (device, dtype)))
    }

    /// Loads a 2-D tensor stored as `[rows, cols]` and returns it transposed, `[cols, rows]`,
    /// contiguous (transposed on the host once, so matmuls never copy a strided view).
    /// `shape` is the stored shape; a higher-rank stored tensor is flattened to
    /// `[shape[0], product of the rest]` first.
    pub fn load_transposed<B: Backend>(
        &self,
        name: &str,
        shape: &[usize],
        device: &B::Device,
        dtype: DType,
    ) -> Result<Tensor<B, 2>> {
        let rows = shape[0];
        let cols: usize = shape[1..].iter().product();
        // One pass from the mapped file into the final buffer: transposed and, from a
        // half-precision file into f32, widened on the way (a 7B checkpoint is ~7e9 elements;
        // every extra full-size buffer costs seconds of page faults).
        let data = self.with_bytes(name, shape, |bytes, stored| {
            let transposed = match (stored, dtype) {
                (DType::BF16, DType::F32) => {
                    return Ok(TensorData::new(
                        transpose_widen(bytes, 2, rows, cols, bf16_le),
                        vec![cols, rows],
                    ))
                }
                (DType::F16, DType::F32) => {
                    return Ok(TensorData::new(
                        transpose_widen(bytes, 2, rows, cols, f16_le),
                        vec![cols, rows],
                    ))
                }
                _ => {
                    let mut dst = vec![0u8; bytes.len()];
                    match stored.size() {
                        2 => transpose_into::<2>(bytes, &mut dst, rows, cols),
                        _ => transpose_into::<4>(bytes, &mut dst, rows, cols),
                    }
                    TensorData::from_bytes_vec(dst, vec![cols, rows], stored)
                }
            };
            Ok(transposed.convert_dtype(dtype))
        })?;
        Ok(Tensor::from_data(data, (device, dtype)))
    }

    /// Loads a tensor as host data (its stored dtype), checking the shape.
    pub fn load_data(&self, name: &str, shape: &[usize]) -> Result<TensorData> {
        self.with_bytes(name, shape, |bytes, stored| {
            Ok(TensorData::from_bytes_vec(
                bytes.to_vec(),
                shape.to_vec(),
                stored,
            ))
        })
    }

    /// Hands tensor `name`'s stored bytes (little-endian, F32, F16 or BF16, checked to have
    /// `shape`) to `read`, then releases their pages and reports progress.
    fn with_bytes<T>(
        &self,
        name: &str,
        shape: &[usize],
        read: impl FnOnce(&[u8], DType) -> Result<T>,
    ) -> Result<T> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                dir: self.dir.clone(),
            })?;
        if entry.info.shape != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                actual: entry.info.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        let dtype = match entry.info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(ModelError::UnsupportedDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let shard = &self.shards[entry.shard];
        let (start, end) = entry.info.data_offsets;
        let bytes = shard
            .mmap
            .get(shard.data_start + start..shard.data_start + end)
            .ok_or_else(|| ModelError::Safetensors {
                path: shard.path.clone(),
                message: format!("tensor `{name}` lies outside the file"),
            })?;
        let out = read(bytes, dtype)?;
        shard.release(shard.data_start + start, end - start);
        self.used.borrow_mut().insert(name.to_string());
        let done = self.read_bytes.get() + bytes.len() as u64;
        self.read_bytes.set(done);
        if let Some(progress) = &self.progress {
            progress(done, self.total_bytes);
        }
        Ok(out)
    }

    /// Fails if the checkpoint holds tensors that were neither loaded nor declared known.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let known = self.known.borrow();
        let mut extra: Vec<&String> = self
            .entries
            .keys()
            .filter(|n| !used.contains(*n) && !known.contains(*n))
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        extra.sort();
        let count = extra.len();
        let mut names: Vec<String> = extra.iter().take(5).map(|s| s.to_string()).collect();
        if count > 5 {
            names.push(format!("... ({count} in all)"));
        }
        Err(ModelError::UnexpectedTensors {
            names: names.join(", "),
            dir: self.dir.clone(),
        })
    }
}

//! Loading Hugging Face safetensors checkpoints (single file or sharded) into burn tensors.
//!
//! Tensors are memory-mapped, looked up by their transformers name, shape-checked against the
//! configuration, converted from F32/F16/BF16 to the compute dtype and placed on the device.
//! The loader records which names were read, so that a checkpoint holding tensors this
//! architecture does not have is reported instead of silently ignored.

use std::cell::RefCell;
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

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
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
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            entries,
            used: RefCell::new(BTreeSet::new()),
            known: RefCell::new(BTreeSet::new()),
        })
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
        let data = self.load_data(name, &shape)?;
        Ok(Tensor::from_data(
            data.convert_dtype(dtype),
            (device, dtype),
        ))
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
        let data = self.load_data(name, shape)?;
        let rows = shape[0];
        let cols: usize = shape[1..].iter().product();
        let elem = data.dtype.size();
        let src = data.as_bytes();
        let mut dst = vec![0u8; src.len()];
        for r in 0..rows {
            for c in 0..cols {
                let from = (r * cols + c) * elem;
                let to = (c * rows + r) * elem;
                dst[to..to + elem].copy_from_slice(&src[from..from + elem]);
            }
        }
        let data = TensorData::from_bytes_vec(dst, vec![cols, rows], data.dtype);
        Ok(Tensor::from_data(
            data.convert_dtype(dtype),
            (device, dtype),
        ))
    }

    /// Loads a tensor as host data (its stored dtype), checking the shape.
    pub fn load_data(&self, name: &str, shape: &[usize]) -> Result<TensorData> {
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
        self.used.borrow_mut().insert(name.to_string());
        Ok(TensorData::from_bytes_vec(
            bytes.to_vec(),
            shape.to_vec(),
            dtype,
        ))
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

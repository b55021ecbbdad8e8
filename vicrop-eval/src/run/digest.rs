//! Cheap identities of a checkpoint and of a dataset, for the manifest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::RunError;
use crate::data::Dataset;

/// Files up to this size are hashed whole.
const WHOLE_LIMIT: u64 = 16 << 20;
/// Bytes read at each sampled offset of a larger file.
const BLOCK: u64 = 4096;
/// Sampled offsets per large file (evenly spaced, the first and the last block included).
const SAMPLES: u64 = 64;
/// Bytes read from the start of a large file that is not safetensors.
const HEAD: u64 = 1 << 20;
/// The largest safetensors header read (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// A digest of a checkpoint folder that is cheap even for a 14 GB 7B checkpoint (it reads
/// about a megabyte of each large file): `sha256:` and the hex SHA-256 over, for every regular
/// file under `dir` (symbolic links followed, as in a hub snapshot; sorted by relative path;
/// hidden files and `*.md` skipped):
///
/// - the relative path and the size;
/// - files up to 16 MiB (configs, tokenizers, index files): the whole content;
/// - larger `*.safetensors`: the header (8-byte length and the JSON with every tensor's name,
///   dtype, shape and offsets) and 64 blocks of 4 KiB evenly spaced over the tensor data;
/// - other large files: the first MiB and the same 64 blocks.
///
/// So a different config, tokenizer, tensor layout or file size always changes it, and
/// different weights (a retrained checkpoint of the same shape) change it unless they agree
/// on every sampled block. It is an identity for refusing mixed runs, not a security check.
pub fn checkpoint_digest(dir: &Path) -> Result<String, RunError> {
    let mut files = Vec::new();
    collect_files(dir, Path::new(""), &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(RunError::Model(format!(
            "{} holds no files to identify the checkpoint by",
            dir.display()
        )));
    }
    let mut hasher = Sha256::new();
    for rel in files {
        let path = dir.join(&rel);
        let mut file = File::open(&path).map_err(RunError::io(&path))?;
        let size = file.metadata().map_err(RunError::io(&path))?.len();
        let name = rel.to_string_lossy().replace('\\', "/");
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(size.to_le_bytes());
        if size <= WHOLE_LIMIT {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(RunError::io(&path))?;
            hasher.update(&bytes);
            continue;
        }
        let data_start = if name.ends_with(".safetensors") {
            let mut len = [0u8; 8];
            file.read_exact(&mut len).map_err(RunError::io(&path))?;
            let n = u64::from_le_bytes(len);
            if n > MAX_HEADER || 8 + n > size {
                return Err(RunError::Model(format!(
                    "{}: not a safetensors file (its header length {n} does not fit its {size} \
                     bytes)",
                    path.display()
                )));
            }
            let header = read_at(&mut file, &path, 8, n)?;
            hasher.update(len);
            hasher.update(&header);
            8 + n
        } else {
            hasher.update(read_at(&mut file, &path, 0, HEAD)?);
            HEAD
        };
        let span = size - data_start;
        for k in 0..SAMPLES {
            let offset = data_start + span.saturating_sub(BLOCK) * k / (SAMPLES - 1);
            hasher.update(read_at(&mut file, &path, offset, BLOCK.min(size - offset))?);
        }
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}

fn read_at(file: &mut File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, RunError> {
    file.seek(SeekFrom::Start(offset))
        .map_err(RunError::io(path))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf).map_err(RunError::io(path))?;
    Ok(buf)
}

fn collect_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), RunError> {
    let dir = root.join(rel);
    let entries = std::fs::read_dir(&dir).map_err(RunError::io(&dir))?;
    for entry in entries {
        let entry = entry.map_err(RunError::io(&dir))?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') || name_str.ends_with(".md") {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links (hub snapshots link into blobs/).
        let meta = std::fs::metadata(&path).map_err(RunError::io(&path))?;
        if meta.is_dir() {
            collect_files(root, &rel.join(&name), out)?;
        } else if meta.is_file() {
            out.push(rel.join(&name));
        }
    }
    Ok(())
}

/// A digest of a dataset's content as loaded, independent of where it lies: `sha256:` and the
/// hex SHA-256 over its format and, per item in order, the id, the image path relative to the
/// image root, the question, short question, labels, options, boxes and category (one JSON
/// line each). Two machines holding the same benchmark under different folders agree; a
/// changed, reordered or different dataset does not.
pub fn dataset_digest(dataset: &Dataset) -> String {
    let mut hasher = Sha256::new();
    hasher.update(dataset.format.name().as_bytes());
    hasher.update(b"\n");
    for item in &dataset.items {
        let image = item
            .image
            .strip_prefix(&dataset.image_root)
            .unwrap_or(&item.image)
            .to_string_lossy()
            .replace('\\', "/");
        let line = serde_json::json!([
            item.id,
            image,
            item.question,
            item.short_question,
            item.labels,
            item.options,
            item.boxes,
            item.category,
        ]);
        hasher.update(line.to_string().as_bytes());
        hasher.update(b"\n");
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_are_sampled_and_any_sampled_change_shows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.resize(bytes.len() + (WHOLE_LIMIT as usize + 12345), 7);
        std::fs::write(dir.path().join("model.safetensors"), &bytes).expect("write");
        std::fs::write(dir.path().join("config.json"), b"{}").expect("write");
        std::fs::write(dir.path().join("README.md"), b"ignored").expect("write");
        let a = checkpoint_digest(dir.path()).expect("digest");
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
        std::fs::write(dir.path().join("README.md"), b"changed").expect("write");
        assert_eq!(checkpoint_digest(dir.path()).expect("digest"), a);
        // The last byte lies in the last sampled block.
        let last = bytes.len() - 1;
        bytes[last] = 8;
        std::fs::write(dir.path().join("model.safetensors"), &bytes).expect("write");
        let b = checkpoint_digest(dir.path()).expect("digest");
        assert_ne!(a, b);
        std::fs::write(dir.path().join("config.json"), b"{ }").expect("write");
        assert_ne!(checkpoint_digest(dir.path()).expect("digest"), b);
    }

    #[test]
    fn a_truncated_safetensors_header_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.resize(WHOLE_LIMIT as usize + 1, 0);
        std::fs::write(dir.path().join("model.safetensors"), &bytes).expect("write");
        let err = checkpoint_digest(dir.path()).expect_err("bad header");
        assert!(err.to_string().contains("not a safetensors file"), "{err}");
    }
}

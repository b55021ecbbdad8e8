//! Shared helpers for the model suites: the backend under test, fixture paths, golden files.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use vicrop_core::{load_image, LoadLimits};

/// The backend the model tests run on: the CPU backend of the build (burn-flex, or
/// burn-ndarray without `flex`), or burn-wgpu in a build with `wgpu` and no CPU backend
/// (`cargo test -p vicrop-models --no-default-features --features wgpu --test suites`; CI runs
/// it on Mesa's lavapipe, a software Vulkan driver).
#[cfg(any(feature = "flex", feature = "ndarray"))]
pub type TestBackend = vicrop_models::backend::Cpu;

/// The backend the model tests run on (see the CPU variant).
#[cfg(all(feature = "wgpu", not(any(feature = "flex", feature = "ndarray"))))]
pub type TestBackend = vicrop_models::backend::Wgpu;

/// The backend the model tests run on: burn-cuda in a build with `cuda` alone
/// (`tools/gpu_check.sh` runs this binary on a GPU machine).
#[cfg(all(
    feature = "cuda",
    not(any(feature = "flex", feature = "ndarray", feature = "wgpu"))
))]
pub type TestBackend = vicrop_models::backend::Gpu;

/// `tests/fixtures/<rel>` at the workspace root, or under `$VICROP_FIXTURES` when set (test
/// binaries built on one machine and run on another, as `tools/gpu_check.sh` does).
pub fn fixture(rel: &str) -> PathBuf {
    match std::env::var_os("VICROP_FIXTURES") {
        Some(root) => PathBuf::from(root).join(rel),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(rel),
    }
}

/// Copies a fixture folder into a fresh temporary folder (for tests that damage it).
pub fn copy_fixture(rel: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = fixture(rel);
    for entry in std::fs::read_dir(&src).expect("fixture folder") {
        let entry = entry.expect("entry");
        if entry.path().is_file() {
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).expect("copy");
        }
    }
    tmp
}

/// A golden tensor: shape and values widened to f64 (ints kept exact).
#[derive(Debug, Clone)]
pub struct Golden {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
    pub u8: Vec<u8>,
}

/// Reads every tensor of a golden safetensors file.
pub fn read_goldens(path: &Path) -> HashMap<String, Golden> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden safetensors");
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let mut g = Golden {
            shape: view.shape().to_vec(),
            f32: vec![],
            i64: vec![],
            u8: vec![],
        };
        match view.dtype() {
            safetensors::Dtype::F32 => {
                g.f32 = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            safetensors::Dtype::I64 => {
                g.i64 = data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect()
            }
            safetensors::Dtype::U8 => g.u8 = data.to_vec(),
            other => panic!("golden {name}: unexpected dtype {other:?}"),
        }
        out.insert(name, g);
    }
    out
}

/// Largest absolute difference and the largest reference magnitude.
pub fn max_abs_diff(ours: &[f32], reference: &[f32]) -> (f32, f32) {
    assert_eq!(ours.len(), reference.len(), "length mismatch");
    let mut diff = 0f32;
    let mut mag = 0f32;
    for (a, b) in ours.iter().zip(reference) {
        diff = diff.max((a - b).abs());
        mag = mag.max(b.abs());
    }
    (diff, mag)
}

/// The golden generator's `PORTRAIT_BOX` (left, top, right, bottom) as `(x, y, width, height)`.
const PORTRAIT_BOX: (u32, u32, u32, u32) = (135, 0, 180, 300);

/// A fixture image: `images/<stem>.png`, a path under tests/fixtures (`scenes/images/0000`), or
/// one built the same way by the golden generators: `chelsea_crop` the 200x200 crop of chelsea at
/// (50, 80), `chelsea_pair` chelsea beside its mirror image (902x300), `chelsea_portrait` a
/// 180x300 crop of chelsea, `chelsea_tower` that crop above its upside-down copy (180x600).
pub fn image(stem: &str) -> image::RgbImage {
    if stem.contains('/') {
        // a path under tests/fixtures, such as the demo scenes' "scenes/images/0000"
        return load_image(&fixture(&format!("{stem}.png")), &LoadLimits::default())
            .expect("image");
    }
    if stem == "chelsea_crop" {
        return image::imageops::crop_imm(&image("chelsea"), 50, 80, 200, 200).to_image();
    }
    if stem == "chelsea_portrait" {
        let (x, y, w, h) = PORTRAIT_BOX;
        return image::imageops::crop_imm(&image("chelsea"), x, y, w, h).to_image();
    }
    if stem == "chelsea_tower" {
        let top = image("chelsea_portrait");
        let mut tower = image::RgbImage::new(top.width(), 2 * top.height());
        image::imageops::replace(&mut tower, &top, 0, 0);
        image::imageops::replace(
            &mut tower,
            &image::imageops::flip_vertical(&top),
            0,
            i64::from(top.height()),
        );
        return tower;
    }
    if stem == "chelsea_pair" {
        let left = image("chelsea");
        let mut pair = image::RgbImage::new(2 * left.width(), left.height());
        image::imageops::replace(&mut pair, &left, 0, 0);
        image::imageops::replace(
            &mut pair,
            &image::imageops::flip_horizontal(&left),
            i64::from(left.width()),
            0,
        );
        return pair;
    }
    load_image(
        &fixture(&format!("images/{stem}.png")),
        &LoadLimits::default(),
    )
    .expect("image")
}

/// Token ids from a golden JSON array.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_u64().expect("id") as u32)
        .collect()
}

/// A tensor's values as f32.
pub fn to_vec<const D: usize>(t: Tensor<TestBackend, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().expect("f32 data")
}

/// The resized uint8 pixels and the normalised f32 pixel values (little-endian bytes) hash to the
/// SHA-256 digests of transformers' output in `info` (`resized_u8_sha256`,
/// `pixel_values_sha256`): bit-identical preprocessing.
pub fn check_pixel_digests(label: &str, resized: &[u8], values: &[f32], info: &serde_json::Value) {
    assert_eq!(
        sha256(resized),
        info["resized_u8_sha256"].as_str().expect("digest"),
        "{label}: resized uint8 pixels differ from transformers'"
    );
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        sha256(&bytes),
        info["pixel_values_sha256"].as_str().expect("digest"),
        "{label}: pixel values differ from transformers'"
    );
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

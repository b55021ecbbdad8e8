//! `pil::load_image` / `decode_image_bytes` / `to_rgb8` against Pillow 11.0's
//! `ImageOps.exif_transpose(Image.open(f)).convert("RGB")`, and every load error.
//! Goldens: `tests/fixtures/pil/` from `tools/make_pil_goldens.py`.

use vicrop_core::pil;

use std::path::{Path, PathBuf};

use image::DynamicImage;
use pil::{decode_image_bytes, load_image, to_rgb8, ImageLoadError, LoadLimits};
use safetensors::SafeTensors;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pil")
}

fn index() -> Value {
    let text = std::fs::read_to_string(fixtures().join("index.json")).expect("index.json");
    serde_json::from_str(&text).expect("index.json parses")
}

/// A scratch file under cargo's per-test-target temporary directory.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pil_load");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path
}

#[test]
fn load_matches_pillow() {
    let index = index();
    let bytes = std::fs::read(fixtures().join("goldens.safetensors")).expect("goldens");
    let goldens = SafeTensors::deserialize(&bytes).expect("safetensors");
    let cases = index["load"].as_array().expect("load cases");
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for case in cases {
        let file = case["file"].as_str().expect("file");
        let path = fixtures().join(file);
        let golden = goldens
            .tensor(case["key"].as_str().expect("key"))
            .expect("tensor");
        let (w, h) = (
            case["width"].as_u64().expect("width") as u32,
            case["height"].as_u64().expect("height") as u32,
        );
        let ours = match load_image(&path, &LoadLimits::default()) {
            Ok(img) => img,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        let from_bytes =
            decode_image_bytes(&std::fs::read(&path).expect("read"), &LoadLimits::default());
        assert_eq!(
            from_bytes.as_ref().ok(),
            Some(&ours),
            "{file}: bytes vs file"
        );
        if ours.dimensions() != (w, h) {
            failures.push(format!(
                "{file}: size {:?}, Pillow {w}x{h}",
                ours.dimensions()
            ));
            continue;
        }
        assert_eq!(golden.shape(), [h as usize, w as usize, 3]);
        let max_diff = golden
            .data()
            .iter()
            .zip(ours.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        let n_diff = golden
            .data()
            .iter()
            .zip(ours.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        if case["exact"].as_bool() == Some(true) {
            if max_diff != 0 {
                failures.push(format!(
                    "{file} ({}): {n_diff} samples differ, max {max_diff}",
                    case["note"]
                ));
            }
        } else {
            let tol = case["tolerance"].as_u64().expect("tolerance") as u8;
            report.push(format!(
                "{file}: {n_diff} samples differ, max |diff| {max_diff}"
            ));
            if max_diff > tol {
                failures.push(format!("{file}: max |diff| {max_diff} > tolerance {tol}"));
            }
        }
    }
    eprintln!(
        "lossy cases (image crate vs Pillow decoders):\n{}",
        report.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn to_rgb8_follows_pillow_convert() {
    let rgba = image::RgbaImage::from_raw(2, 1, vec![1, 2, 3, 0, 4, 5, 6, 255]).expect("rgba");
    assert_eq!(
        to_rgb8(DynamicImage::ImageRgba8(rgba)).into_raw(),
        [1, 2, 3, 4, 5, 6]
    );
    let la = image::GrayAlphaImage::from_raw(1, 1, vec![77, 0]).expect("la");
    assert_eq!(
        to_rgb8(DynamicImage::ImageLumaA8(la)).into_raw(),
        [77, 77, 77]
    );
    let l16 = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(3, 1, vec![254, 256, 65535])
        .expect("l16");
    assert_eq!(
        to_rgb8(DynamicImage::ImageLuma16(l16)).into_raw(),
        [254, 254, 254, 255, 255, 255, 255, 255, 255]
    );
    let rgb16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(1, 1, vec![255, 256, 65535])
        .expect("rgb16");
    assert_eq!(
        to_rgb8(DynamicImage::ImageRgb16(rgb16)).into_raw(),
        [0, 1, 255]
    );
}

fn assert_names(err: &ImageLoadError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    assert_eq!(err.path(), path);
}

#[test]
fn missing_file() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pil_load/no-such-image.png");
    let err = load_image(&path, &LoadLimits::default()).unwrap_err();
    assert!(matches!(err, ImageLoadError::NotFound { .. }), "{err:?}");
    assert_names(&err, &path);
}

#[test]
fn empty_file() {
    let path = scratch("empty.png", b"");
    let err = load_image(&path, &LoadLimits::default()).unwrap_err();
    assert!(matches!(err, ImageLoadError::Empty { .. }), "{err:?}");
    assert_names(&err, &path);
    let err = decode_image_bytes(&[], &LoadLimits::default()).unwrap_err();
    assert!(matches!(err, ImageLoadError::Empty { .. }), "{err:?}");
    assert!(err.to_string().contains("<memory>"));
}

#[test]
fn directory_is_unreadable() {
    let path = fixtures().join("load");
    let err = load_image(&path, &LoadLimits::default()).unwrap_err();
    assert!(matches!(err, ImageLoadError::Unreadable { .. }), "{err:?}");
    assert_names(&err, &path);
}

#[test]
fn garbage_bytes() {
    let path = scratch("garbage.jpg", b"this is a text file, not an image at all\n");
    let err = load_image(&path, &LoadLimits::default()).unwrap_err();
    assert!(
        matches!(err, ImageLoadError::UnknownFormat { .. }),
        "{err:?}"
    );
    assert_names(&err, &path);
}

#[test]
fn unsupported_format() {
    // A valid binary PPM: recognised by its magic bytes, but the pnm feature is not built.
    let path = scratch("pixel.ppm", b"P6\n1 1\n255\n\x01\x02\x03");
    let err = load_image(&path, &LoadLimits::default()).unwrap_err();
    assert!(matches!(err, ImageLoadError::Unsupported { .. }), "{err:?}");
    assert_names(&err, &path);
}

#[test]
fn truncated_png() {
    let bytes = std::fs::read(fixtures().join("inputs/grad_301x199.png")).expect("png");
    for keep in [bytes.len() / 2, 40, 20] {
        let path = scratch(&format!("truncated_{keep}.png"), &bytes[..keep]);
        let err = load_image(&path, &LoadLimits::default()).unwrap_err();
        assert!(
            matches!(err, ImageLoadError::Corrupt { .. }),
            "{keep}: {err:?}"
        );
        assert_names(&err, &path);
    }
}

#[test]
fn corrupt_png_data() {
    let mut bytes = std::fs::read(fixtures().join("inputs/noise_37x53.png")).expect("png");
    let at = bytes.windows(4).position(|w| w == b"IDAT").expect("IDAT") + 40;
    for b in &mut bytes[at..at + 64] {
        *b ^= 0x5A;
    }
    let path = scratch("corrupt.png", &bytes);
    let err = load_image(&path, &LoadLimits::default()).unwrap_err();
    assert!(matches!(err, ImageLoadError::Corrupt { .. }), "{err:?}");
    assert_names(&err, &path);
}

#[test]
fn too_large() {
    let path = fixtures().join("inputs/grad_301x199.png");
    let limits = [
        LoadLimits {
            max_width: 300,
            ..LoadLimits::default()
        },
        LoadLimits {
            max_height: 100,
            ..LoadLimits::default()
        },
        LoadLimits {
            max_pixels: 301 * 199 - 1,
            ..LoadLimits::default()
        },
    ];
    for limits in limits {
        let err = load_image(&path, &limits).unwrap_err();
        match &err {
            ImageLoadError::TooLarge {
                width: 301,
                height: 199,
                limits: l,
                ..
            } => assert_eq!(l, &limits),
            other => panic!("{other:?}"),
        }
        assert_names(&err, &path);
        assert!(err.to_string().contains("301x199"), "{err}");
    }
    // The same for every format the loader reads.
    for file in [
        "load/rgb.bmp",
        "load/rgb.tiff",
        "load/p_trns.gif",
        "load/rgba.webp",
        "load/q90_420.jpg",
    ] {
        let path = fixtures().join(file);
        let limits = LoadLimits {
            max_width: 8,
            max_height: 8,
            max_pixels: 64,
        };
        let err = load_image(&path, &limits).unwrap_err();
        assert!(
            matches!(err, ImageLoadError::TooLarge { .. }),
            "{file}: {err:?}"
        );
        assert_names(&err, &path);
    }
    assert!(load_image(
        &path,
        &LoadLimits {
            max_width: 301,
            max_height: 199,
            max_pixels: 301 * 199
        }
    )
    .is_ok());
}

#[test]
fn huge_headers_fail_before_decoding() {
    // Header-only files: the size check must come before any pixel allocation.
    for (file, w, h) in [
        ("errors/huge_side.png", 30_000, 10),
        ("errors/huge_pixels.png", 20_000, 20_000),
    ] {
        let path = fixtures().join(file);
        let err = load_image(&path, &LoadLimits::default()).unwrap_err();
        match &err {
            ImageLoadError::TooLarge { width, height, .. } => assert_eq!((*width, *height), (w, h)),
            other => panic!("{file}: {other:?}"),
        }
        assert_names(&err, &path);
        assert!(err.to_string().contains(&format!("{w}x{h}")), "{err}");
    }
}

#[test]
fn zero_width() {
    let path = fixtures().join("errors/zero_width.png");
    let err = load_image(&path, &LoadLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ImageLoadError::ZeroSize {
                width: 0,
                height: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, &path);
}

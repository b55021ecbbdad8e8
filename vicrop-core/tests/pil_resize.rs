//! `pil::resize_rgb8` / `resize_luma8` against Pillow 11.0 `Image.resize(..., reducing_gap=None)`:
//! every case must be bit-identical. Goldens: `tests/fixtures/pil/` from
//! `tools/make_pil_goldens.py`.

use vicrop_core::pil;

use std::collections::HashMap;
use std::path::PathBuf;

use image::{GrayImage, RgbImage};
use pil::{resize_luma8, resize_rgb8, Filter};
use proptest::prelude::*;
use safetensors::SafeTensors;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pil")
}

fn index() -> Value {
    let text = std::fs::read_to_string(fixtures().join("index.json")).expect("index.json");
    serde_json::from_str(&text).expect("index.json parses")
}

/// zlib's CRC-32 (what the generator records).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The generator's `synth(w, h)`, same integer formula.
fn synth(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let region = (u64::from(x) * 3) / u64::from(w);
        let mut px = [0u8; 3];
        for (c, v) in px.iter_mut().enumerate() {
            let c = c as u32;
            let n = x.wrapping_mul(73_856_093)
                ^ y.wrapping_mul(19_349_663)
                ^ c.wrapping_mul(83_492_791);
            let noise = n.wrapping_mul(2_654_435_761) >> 24;
            let (x, y, w, h) = (u64::from(x), u64::from(y), u64::from(w), u64::from(h));
            let grad = match c {
                0 => x * 255 / (w - 1),
                1 => y * 255 / (h - 1),
                _ => (x + y) * 255 / (w + h - 2),
            };
            let checker = if ((x / 7) + (y / 5) + u64::from(c)) % 2 == 0 {
                255
            } else {
                0
            };
            *v = match region {
                0 => noise as u8,
                1 => grad as u8,
                _ => checker,
            };
        }
        image::Rgb(px)
    })
}

enum Input {
    Rgb(RgbImage),
    Luma(GrayImage),
}

impl Input {
    fn raw(&self) -> &[u8] {
        match self {
            Input::Rgb(i) => i.as_raw(),
            Input::Luma(i) => i.as_raw(),
        }
    }
}

fn load_inputs(index: &Value) -> HashMap<String, Input> {
    let mut inputs = HashMap::new();
    for (name, meta) in index["inputs"].as_object().expect("inputs") {
        let w = meta["width"].as_u64().expect("width") as u32;
        let h = meta["height"].as_u64().expect("height") as u32;
        let input = if meta["synthetic"].as_bool() == Some(true) {
            Input::Rgb(synth(w, h))
        } else {
            let file = fixtures().join(meta["file"].as_str().expect("file"));
            let img = image::open(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            match meta["channels"].as_u64() {
                Some(1) => Input::Luma(img.into_luma8()),
                _ => Input::Rgb(img.into_rgb8()),
            }
        };
        let crc = meta["crc32"].as_u64().expect("crc32") as u32;
        assert_eq!(
            crc32(input.raw()),
            crc,
            "input {name} differs from the generator's"
        );
        inputs.insert(name.clone(), input);
    }
    inputs
}

#[test]
fn resize_matches_pillow_bit_for_bit() {
    let index = index();
    let inputs = load_inputs(&index);
    let bytes = std::fs::read(fixtures().join("goldens.safetensors")).expect("goldens");
    let goldens = SafeTensors::deserialize(&bytes).expect("safetensors");
    let cases = index["resize"].as_array().expect("resize cases");
    assert!(cases.len() > 200, "expected the full case list");
    let mut failures = Vec::new();
    let (mut raw_checked, mut filters_seen) = (0, std::collections::HashSet::new());
    for case in cases {
        let filter = match case["filter"].as_str() {
            Some("bicubic") => Filter::Bicubic,
            Some("bilinear") => Filter::Bilinear,
            other => panic!("unknown filter {other:?}"),
        };
        filters_seen.insert(case["filter"].as_str().unwrap_or_default().to_owned());
        let name = case["input"].as_str().expect("input");
        let (w, h) = (
            case["width"].as_u64().expect("width") as u32,
            case["height"].as_u64().expect("height") as u32,
        );
        let label = format!("{}/{name}/{w}x{h}", case["filter"].as_str().unwrap_or("?"));
        let out: Vec<u8> = match &inputs[name] {
            Input::Rgb(img) => {
                let r = resize_rgb8(img, w, h, filter);
                assert_eq!(r.dimensions(), (w, h), "{label}");
                r.into_raw()
            }
            Input::Luma(img) => {
                let r = resize_luma8(img, w, h, filter);
                assert_eq!(r.dimensions(), (w, h), "{label}");
                r.into_raw()
            }
        };
        if let Some(key) = case["key"].as_str() {
            let golden = goldens.tensor(key).expect("golden tensor");
            let channels = out.len() / (w as usize * h as usize);
            assert_eq!(
                golden.shape(),
                [h as usize, w as usize, channels],
                "{label}"
            );
            raw_checked += 1;
            if let Some(i) = golden.data().iter().zip(&out).position(|(a, b)| a != b) {
                let px = i / channels;
                let n_diff = golden
                    .data()
                    .iter()
                    .zip(&out)
                    .filter(|(a, b)| a != b)
                    .count();
                failures.push(format!(
                    "{label}: {n_diff} samples differ, first at x={} y={} c={}: pillow {} ours {}",
                    px % w as usize,
                    px / w as usize,
                    i % channels,
                    golden.data()[i],
                    out[i]
                ));
                continue;
            }
        }
        let crc = case["crc32"].as_u64().expect("crc32") as u32;
        if crc32(&out) != crc {
            failures.push(format!("{label}: CRC-32 differs from Pillow's output"));
        }
    }
    assert!(raw_checked > 100);
    assert_eq!(filters_seen.len(), 2);
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Pillow:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The CLIP shortest-edge-336 sizes named in the processor docs are among the cases.
#[test]
fn clip_shortest_edge_cases_are_covered() {
    let index = index();
    let cases = index["resize"].as_array().expect("resize cases");
    for (input, w, h) in [("synth_451x300", 505, 336), ("synth_300x451", 336, 505)] {
        for filter in ["bicubic", "bilinear"] {
            assert!(
                cases.iter().any(|c| c["input"] == input
                    && c["filter"] == filter
                    && c["width"] == w
                    && c["height"] == h),
                "{filter} {input} -> {w}x{h} missing"
            );
        }
    }
}

#[test]
fn zero_and_empty_sizes_do_not_panic() {
    let img = RgbImage::from_pixel(4, 3, image::Rgb([9, 8, 7]));
    assert_eq!(
        resize_rgb8(&img, 0, 5, Filter::Bicubic).dimensions(),
        (0, 5)
    );
    assert_eq!(
        resize_rgb8(&img, 5, 0, Filter::Bilinear).dimensions(),
        (5, 0)
    );
    let empty = RgbImage::new(0, 0);
    let out = resize_rgb8(&empty, 3, 2, Filter::Bicubic);
    assert_eq!(out.dimensions(), (3, 2));
    assert!(out.as_raw().iter().all(|&v| v == 0));
    assert_eq!(
        resize_rgb8(&empty, 0, 0, Filter::Bicubic).dimensions(),
        (0, 0)
    );
    let gray = GrayImage::new(0, 7);
    assert_eq!(
        resize_luma8(&gray, 2, 2, Filter::Bilinear).dimensions(),
        (2, 2)
    );
}

fn filter_strategy() -> impl Strategy<Value = Filter> {
    prop_oneof![Just(Filter::Bicubic), Just(Filter::Bilinear)]
}

fn rgb_strategy() -> impl Strategy<Value = RgbImage> {
    (1u32..24, 1u32..24).prop_flat_map(|(w, h)| {
        proptest::collection::vec(any::<u8>(), (w * h * 3) as usize)
            .prop_map(move |data| RgbImage::from_raw(w, h, data).expect("size"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn output_has_requested_size(img in rgb_strategy(), w in 1u32..60, h in 1u32..60,
                                 filter in filter_strategy()) {
        prop_assert_eq!(resize_rgb8(&img, w, h, filter).dimensions(), (w, h));
    }

    #[test]
    fn same_size_is_identity(img in rgb_strategy(), filter in filter_strategy()) {
        let (w, h) = img.dimensions();
        prop_assert_eq!(resize_rgb8(&img, w, h, filter), img);
    }

    #[test]
    fn constant_image_stays_constant(w in 1u32..40, h in 1u32..40, ow in 1u32..90,
                                     oh in 1u32..90, px in any::<[u8; 3]>(),
                                     filter in filter_strategy()) {
        let img = RgbImage::from_pixel(w, h, image::Rgb(px));
        let out = resize_rgb8(&img, ow, oh, filter);
        prop_assert!(out.pixels().all(|p| p.0 == px));
    }

    #[test]
    fn channels_resize_independently(img in rgb_strategy(), w in 1u32..40, h in 1u32..40,
                                     filter in filter_strategy()) {
        let out = resize_rgb8(&img, w, h, filter);
        for c in 0..3 {
            let plane = GrayImage::from_fn(img.width(), img.height(), |x, y| {
                image::Luma([img.get_pixel(x, y).0[c]])
            });
            let gray = resize_luma8(&plane, w, h, filter);
            prop_assert!(gray.enumerate_pixels().all(|(x, y, p)| p.0[0] == out.get_pixel(x, y).0[c]));
        }
    }
}

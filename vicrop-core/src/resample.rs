//! Pillow's resampling (`Image.resize` with `BICUBIC` or `BILINEAR`) on 8-bit images,
//! reproduced bit for bit.
//!
//! The algorithm is Pillow's two-pass separable convolution: for each output pixel a window of
//! input pixels (support scaled by the downscale factor) is weighted by the filter, weights are
//! normalised, converted to 22-bit fixed point, and each pass rounds and clips to uint8.
//! transformers' `CLIPImageProcessor` and torchvision's PIL path both call `Image.resize`
//! without `reducing_gap`, which is what this reproduces.

use image::{GrayImage, RgbImage};

/// A resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Pillow `BICUBIC` (Keys cubic, a = -0.5, support 2).
    Bicubic,
    /// Pillow `BILINEAR` (triangle, support 1).
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point weights of one axis: for each output index, the first input index and weights.
struct Coeffs {
    start: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    weights: Vec<i32>,
}

fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut total = 0.0;
        for (x, slot) in k.iter_mut().enumerate().take(n) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *slot = w;
            total += w;
        }
        for (x, &w) in k.iter().enumerate().take(n) {
            let w = if total != 0.0 { w / total } else { w };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        start.push(xmin);
        len.push(n);
    }
    Coeffs {
        start,
        len,
        ksize,
        weights,
    }
}

#[inline]
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resamples an interleaved 8-bit buffer of `channels` channels.
fn resample(
    src: &[u8],
    (w, h): (usize, usize),
    (ow, oh): (usize, usize),
    channels: usize,
    filter: Filter,
) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass (skipped when the width is unchanged), over every source row.
    let horizontal: Vec<u8> = if ow != w {
        let c = coeffs(w, ow, filter);
        let mut out = vec![0u8; ow * h * channels];
        for y in 0..h {
            let row = &src[y * w * channels..(y + 1) * w * channels];
            for xx in 0..ow {
                let k = &c.weights[xx * c.ksize..xx * c.ksize + c.len[xx]];
                let x0 = c.start[xx];
                for ch in 0..channels {
                    let mut acc = half;
                    for (i, &wt) in k.iter().enumerate() {
                        acc += i64::from(row[(x0 + i) * channels + ch]) * i64::from(wt);
                    }
                    out[(y * ow + xx) * channels + ch] = clip8(acc);
                }
            }
        }
        out
    } else {
        src.to_vec()
    };
    if oh == h {
        return horizontal;
    }
    // Vertical pass.
    let c = coeffs(h, oh, filter);
    let mut out = vec![0u8; ow * oh * channels];
    let stride = ow * channels;
    for yy in 0..oh {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + c.len[yy]];
        let y0 = c.start[yy];
        for i in 0..stride {
            let mut acc = half;
            for (j, &wt) in k.iter().enumerate() {
                acc += i64::from(horizontal[(y0 + j) * stride + i]) * i64::from(wt);
            }
            out[yy * stride + i] = clip8(acc);
        }
    }
    out
}

/// Pillow's `img.resize((width, height), resample=filter)` for an RGB image.
///
/// A zero target size is treated as 1.
pub fn resize_rgb8(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (width, height) = (width.max(1), height.max(1));
    if img.dimensions() == (width, height) || img.width() == 0 || img.height() == 0 {
        return if img.dimensions() == (width, height) {
            img.clone()
        } else {
            RgbImage::new(width, height)
        };
    }
    let data = resample(
        img.as_raw(),
        (img.width() as usize, img.height() as usize),
        (width as usize, height as usize),
        3,
        filter,
    );
    RgbImage::from_raw(width, height, data).unwrap_or_else(|| unreachable!("size matches"))
}

/// Pillow's `img.resize((width, height), resample=filter)` for a grayscale ("L") image.
pub fn resize_luma8(img: &GrayImage, width: u32, height: u32, filter: Filter) -> GrayImage {
    let (width, height) = (width.max(1), height.max(1));
    if img.dimensions() == (width, height) || img.width() == 0 || img.height() == 0 {
        return if img.dimensions() == (width, height) {
            img.clone()
        } else {
            GrayImage::new(width, height)
        };
    }
    let data = resample(
        img.as_raw(),
        (img.width() as usize, img.height() as usize),
        (width as usize, height as usize),
        1,
        filter,
    );
    GrayImage::from_raw(width, height, data).unwrap_or_else(|| unreachable!("size matches"))
}

//! The pure-grad high-pass mask (method.md section 3): 3x3 Gaussian blur, per-pixel
//! high-frequency magnitude, 7x7 median filter, strict greater-than-median mask; and block
//! means. Planes are row-major f32.

/// A single-channel f32 image.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Plane {
    /// A plane of zeros.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0.0; width * height],
        }
    }

    /// The value at `(x, y)`.
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }
}

/// Mirror index without repeating the edge (torch "reflect", scipy "mirror"):
/// `-1 -> 1`, `n -> n - 2`.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

/// Mirror index repeating the edge (scipy "reflect"): `-1 -> 0`, `n -> n - 1`.
fn symmetric(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - 1 - i;
    }
    i as usize
}

/// torchvision's Gaussian kernel: `k` taps over `linspace(-(k-1)/2, (k-1)/2)`, normalised.
pub fn gaussian_kernel(k: usize, sigma: f32) -> Vec<f32> {
    let half = (k as f32 - 1.0) * 0.5;
    let raw: Vec<f32> = (0..k)
        .map(|i| {
            let x = -half + i as f32;
            (-0.5 * (x / sigma) * (x / sigma)).exp()
        })
        .collect();
    let sum: f32 = raw.iter().sum();
    raw.into_iter().map(|v| v / sum).collect()
}

/// 2-D Gaussian blur with a `k x k` kernel (outer product of [`gaussian_kernel`]) and
/// mirror padding without repeating the edge (torchvision `gaussian_blur`).
///
/// Bit-identical to torch's CPU convolution: f32 2-D weights `ky * kx`, accumulated with fused
/// multiply-adds in row-major kernel order. (The exact bits matter: the pure-grad mask compares
/// against a median, and the 7x7 median filter makes plateaus of equal values.)
pub fn gaussian_blur(p: &Plane, k: usize, sigma: f32) -> Plane {
    let kern = gaussian_kernel(k, sigma);
    let weights: Vec<f32> = kern
        .iter()
        .flat_map(|ky| kern.iter().map(move |kx| ky * kx))
        .collect();
    let r = (k / 2) as isize;
    let mut out = Plane::zeros(p.width, p.height);
    for y in 0..p.height {
        for x in 0..p.width {
            let mut acc = 0f32;
            for dy in 0..k {
                let sy = reflect(y as isize + dy as isize - r, p.height);
                for dx in 0..k {
                    let sx = reflect(x as isize + dx as isize - r, p.width);
                    acc = weights[dy * k + dx].mul_add(p.at(sx, sy), acc);
                }
            }
            out.data[y * p.width + x] = acc;
        }
    }
    out
}

/// `size x size` median filter with mirror padding that repeats the edge
/// (`scipy.ndimage.median_filter`, mode "reflect"). `size` should be odd.
pub fn median_filter(p: &Plane, size: usize) -> Plane {
    let r = (size / 2) as isize;
    let mut out = Plane::zeros(p.width, p.height);
    let mut window = Vec::with_capacity(size * size);
    for y in 0..p.height {
        for x in 0..p.width {
            window.clear();
            for dy in 0..size as isize {
                let sy = symmetric(y as isize + dy - r, p.height);
                for dx in 0..size as isize {
                    let sx = symmetric(x as isize + dx - r, p.width);
                    window.push(p.at(sx, sy));
                }
            }
            let mid = window.len() / 2;
            let (_, m, _) = window.select_nth_unstable_by(mid, f32::total_cmp);
            out.data[y * p.width + x] = *m;
        }
    }
    out
}

/// numpy's median of all values (mean of the two middle values for an even count, in f32).
pub fn median(values: &[f32]) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The pure-grad high-pass mask of an RGB image already resized to `R x R` (uint8): true where
/// the 7x7-median-filtered high-frequency magnitude exceeds its median.
///
/// `low` = 3x3 Gaussian blur (sigma 0.8) of the image in [0, 1]; `hb = sqrt(sum_c (img -
/// low)^2)`; `hb` = 7x7 median filter; `mask = hb > median(hb)`.
pub fn high_pass_mask(img: &image::RgbImage) -> (Plane, Vec<bool>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut energy = Plane::zeros(w, h);
    for c in 0..3 {
        let mut chan = Plane::zeros(w, h);
        for (i, px) in img.pixels().enumerate() {
            chan.data[i] = f32::from(px.0[c]) / 255.0;
        }
        let low = gaussian_blur(&chan, 3, 0.8);
        for i in 0..w * h {
            let d = chan.data[i] - low.data[i];
            energy.data[i] += d * d;
        }
    }
    for v in &mut energy.data {
        *v = v.sqrt();
    }
    let filtered = median_filter(&energy, 7);
    let m = median(&filtered.data);
    let mask = filtered.data.iter().map(|&v| v > m).collect();
    (filtered, mask)
}

/// Mean over non-overlapping `block x block` cells (skimage `block_reduce` with `np.mean`;
/// a ragged border is padded with zeros, as skimage does).
pub fn block_mean(p: &Plane, block: usize) -> Plane {
    let (ow, oh) = (p.width.div_ceil(block), p.height.div_ceil(block));
    let mut out = Plane::zeros(ow, oh);
    for by in 0..oh {
        for bx in 0..ow {
            let mut acc = 0f64;
            for y in by * block..(by + 1) * block {
                for x in bx * block..(bx + 1) * block {
                    if x < p.width && y < p.height {
                        acc += f64::from(p.at(x, y));
                    }
                }
            }
            out.data[by * ow + bx] = (acc / (block * block) as f64) as f32;
        }
    }
    out
}

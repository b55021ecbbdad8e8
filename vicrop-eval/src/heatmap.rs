//! Heatmap pictures: a saliency map upsampled over the image, with the crop box drawn.

use image::{Rgb, RgbImage};
use vicrop_core::{CropBox, SaliencyMap};

/// A perceptually ordered colour ramp (dark blue -> cyan -> yellow -> red) at `t` in [0, 1].
fn ramp(t: f32) -> [f32; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.05, 0.03, 0.35],
        [0.10, 0.45, 0.85],
        [0.20, 0.80, 0.60],
        [0.98, 0.85, 0.15],
        [0.85, 0.10, 0.10],
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [
        a[0] + (b[0] - a[0]) * f,
        a[1] + (b[1] - a[1]) * f,
        a[2] + (b[2] - a[2]) * f,
    ]
}

/// Blends the map (min-max normalised over its finite values; cells tile the whole image, as
/// the crop selector places them by default) over `image` and draws `bbox`.
pub fn render(image: &RgbImage, map: &SaliencyMap, bbox: CropBox) -> RgbImage {
    let finite = map.values().iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f32::INFINITY, f32::min);
    let hi = finite.fold(f32::NEG_INFINITY, f32::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (w, h) = image.dimensions();
    let mut out = RgbImage::new(w, h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let r = ((y as usize * map.rows()) / h as usize).min(map.rows() - 1);
        let c = ((x as usize * map.cols()) / w as usize).min(map.cols() - 1);
        let v = map.get(r, c);
        let t = if v.is_finite() { (v - lo) / span } else { 0.0 };
        let col = ramp(t);
        let src = image.get_pixel(x, y).0;
        let mut o = [0u8; 3];
        for k in 0..3 {
            o[k] = (0.45 * f32::from(src[k]) + 0.55 * 255.0 * col[k]).round() as u8;
        }
        *px = Rgb(o);
    }
    let thick = (w.min(h) / 150).max(2);
    let green = Rgb([40, 255, 40]);
    for t in 0..thick {
        let (x0, y0) = (bbox.x0 + t, bbox.y0 + t);
        let (x1, y1) = (bbox.x1.saturating_sub(1 + t), bbox.y1.saturating_sub(1 + t));
        if x0 > x1 || y0 > y1 {
            break;
        }
        for x in x0..=x1 {
            out.put_pixel(x, y0, green);
            out.put_pixel(x, y1, green);
        }
        for y in y0..=y1 {
            out.put_pixel(x0, y, green);
            out.put_pixel(x1, y, green);
        }
    }
    out
}

//! From a saliency map to a crop box: the reference's adaptive sliding window.
//!
//! For each ratio r in `[1, 1.2, 1.4, 1.6, 1.8, 2]` a window of `S*r` pixels (in map blocks)
//! slides over the map with stride 1; the position of the largest sum is kept (x outer, y
//! inner, first strict maximum), and the ratio whose maximum stands out most from its four
//! neighbours (per block) wins. The box is a square of side `2*floor(S*r/2)` centred on the
//! winning window, shifted to lie inside the image.

use serde::{Deserialize, Serialize};

use crate::map::{Rect, SaliencyMap};

/// A crop box in original-image pixels: `[x0, y0, x1, y1)`, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CropBox {
    /// Left.
    pub x0: u32,
    /// Top.
    pub y0: u32,
    /// Right (exclusive).
    pub x1: u32,
    /// Bottom (exclusive).
    pub y1: u32,
}

impl CropBox {
    /// Width.
    pub fn width(&self) -> u32 {
        self.x1 - self.x0
    }
    /// Height.
    pub fn height(&self) -> u32 {
        self.y1 - self.y0
    }
    /// As `[x0, y0, x1, y1]`.
    pub fn to_array(&self) -> [u32; 4] {
        [self.x0, self.y0, self.x1, self.y1]
    }
}

/// Turns a saliency map into a crop box.
pub trait CropSelector {
    /// The box for `map` over an image of `(width, height)` pixels (both at least 1).
    fn select(&self, map: &SaliencyMap, image_size: (u32, u32)) -> CropBox;
}

/// How map cells are placed on the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MapPlacement {
    /// The map tiles the WHOLE image (the reference, even though LLaVA's map covers only the
    /// centre crop the vision tower saw). Default, for parity.
    #[default]
    WholeImage,
    /// The map tiles the region it covers ([`SaliencyMap::region`]), the geometrically correct
    /// placement; falls back to the whole image when the map has no region.
    MapRegion,
}

/// The reference's adaptive sliding-window selector.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveWindow {
    /// Base crop side S in pixels (the vision encoder's input size: 336 for LLaVA-1.5).
    pub side: u32,
    /// Window ratios tried, in order (the first is special: see [`CropSelector::select`]).
    pub ratios: Vec<f64>,
    /// Cell placement.
    pub placement: MapPlacement,
}

impl AdaptiveWindow {
    /// The reference's ratios.
    pub const RATIOS: [f64; 6] = [1.0, 1.2, 1.4, 1.6, 1.8, 2.0];

    /// The reference selector for crop side `side`.
    pub fn new(side: u32) -> Self {
        Self {
            side,
            ratios: Self::RATIOS.to_vec(),
            placement: MapPlacement::WholeImage,
        }
    }

    /// Same, with another placement.
    pub fn with_placement(mut self, placement: MapPlacement) -> Self {
        self.placement = placement;
        self
    }
}

/// Replaces non-finite values so sums and comparisons stay meaningful: NaN becomes the
/// smallest finite value of the map (it never attracts the crop), +inf/-inf become the
/// largest/smallest finite value (or 0 when the map has none).
fn sanitize(values: &[f32]) -> Vec<f64> {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f32::INFINITY, f32::min);
    let hi = finite.fold(f32::NEG_INFINITY, f32::max);
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) };
    values
        .iter()
        .map(|&v| {
            f64::from(if v.is_nan() {
                lo
            } else if v == f32::INFINITY {
                hi
            } else if v == f32::NEG_INFINITY {
                lo
            } else {
                v
            })
        })
        .collect()
}

struct Best {
    x: usize,
    y: usize,
    nx: usize,
    ny: usize,
    ratio: f64,
}

impl CropSelector for AdaptiveWindow {
    /// Exactly the reference (`bbox_from_att_image_adaptive`), with three guards it lacks:
    /// non-finite map values are sanitised, a window is at least one block wide, and the image
    /// size is taken as at least 1x1 (and the half-side as at least 1 px). If the first ratio's window already covers the whole
    /// map, the whole image is returned; later ratios that do so are skipped.
    fn select(&self, map: &SaliencyMap, image_size: (u32, u32)) -> CropBox {
        let (w_img, h_img) = (image_size.0.max(1), image_size.1.max(1));
        let whole = CropBox {
            x0: 0,
            y0: 0,
            x1: w_img,
            y1: h_img,
        };
        let (rows, cols) = (map.rows(), map.cols());
        let region = match (self.placement, map.region()) {
            (MapPlacement::MapRegion, Some(r)) if r.width() > 0.0 && r.height() > 0.0 => r,
            _ => Rect::whole(w_img, h_img),
        };
        let values = sanitize(map.values());
        let at = |y: usize, x: usize| values[y * cols + x];
        // Direct sums in f64: exact for f32 inputs of ordinary range, so ties stay ties.
        let window_sum = |x: usize, y: usize, nx: usize, ny: usize| {
            let mut s = 0f64;
            for yy in y..y + ny {
                for xx in x..x + nx {
                    s += at(yy, xx);
                }
            }
            s
        };
        let bw = region.width() / cols as f64;
        let bh = region.height() / rows as f64;
        let side = f64::from(self.side);
        let mut best: Option<(f64, Best)> = None;
        for (k, &ratio) in self.ratios.iter().enumerate() {
            let nx = ((side * ratio / bw) as usize).clamp(1, cols);
            let ny = ((side * ratio / bh) as usize).clamp(1, rows);
            if cols - nx < 1 && rows - ny < 1 {
                if k == 0 {
                    return whole;
                }
                continue;
            }
            let (tw, th) = (cols - nx + 1, rows - ny + 1);
            let mut max = f64::NEG_INFINITY;
            let (mut mx, mut my) = (0, 0);
            for x in 0..tw {
                for y in 0..th {
                    let s = window_sum(x, y, nx, ny);
                    if s > max {
                        max = s;
                        mx = x;
                        my = y;
                    }
                }
            }
            let mut neighbours = Vec::with_capacity(4);
            if mx > 0 {
                neighbours.push(window_sum(mx - 1, my, nx, ny));
            }
            if mx + 1 < tw {
                neighbours.push(window_sum(mx + 1, my, nx, ny));
            }
            if my > 0 {
                neighbours.push(window_sum(mx, my - 1, nx, ny));
            }
            if my + 1 < th {
                neighbours.push(window_sum(mx, my + 1, nx, ny));
            }
            let mean = neighbours.iter().sum::<f64>() / neighbours.len() as f64;
            let sharpness = (max - mean) / (nx * ny) as f64;
            // First maximum wins; a NaN sharpness (impossible after sanitising) never does.
            if best.as_ref().is_none_or(|(b, _)| sharpness > *b) {
                best = Some((
                    sharpness,
                    Best {
                        x: mx,
                        y: my,
                        nx,
                        ny,
                        ratio,
                    },
                ));
            }
        }
        let Some((_, b)) = best else {
            return whole;
        };
        let chosen = side * b.ratio;
        // At least one pixel, so the box is never empty even for a tiny S.
        let half = (chosen / 2.0).floor().max(1.0);
        let (w, h) = (f64::from(w_img), f64::from(h_img));
        let xc = (region.x0 + b.x as f64 * bw + bw * b.nx as f64 / 2.0).trunc();
        let yc = (region.y0 + b.y as f64 * bh + bh * b.ny as f64 / 2.0).trunc();
        let clamp = |c: f64, len: f64| {
            let c = if c < half { half } else { c };
            if c > len - half {
                len - half
            } else {
                c
            }
        };
        let (xc, yc) = (clamp(xc, w), clamp(yc, h));
        CropBox {
            x0: (xc - half).max(0.0) as u32,
            y0: (yc - half).max(0.0) as u32,
            x1: (xc + half).min(w) as u32,
            y1: (yc + half).min(h) as u32,
        }
    }
}

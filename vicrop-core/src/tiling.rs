//! High-resolution mode: split a large image into tiles, compute a map per tile, stitch the
//! maps into one map over the whole image (method.md section 5).

use crate::map::{MapError, SaliencyMap};

/// The reference's tile threshold: rows of at most ~1024 px.
pub const DEFAULT_THRESHOLD: u32 = 1024;

/// How an image is split: `rows x cols` tiles of `tile_w x tile_h` pixels, row-major.
/// Tiles past the right or bottom edge are padded black (as Pillow's `crop` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileGrid {
    /// Tile rows (`v`).
    pub rows: u32,
    /// Tile columns (`h`).
    pub cols: u32,
    /// Tile width in pixels.
    pub tile_w: u32,
    /// Tile height in pixels.
    pub tile_h: u32,
}

impl TileGrid {
    /// The reference's split of a `width x height` image: `v = ceil(H / threshold)` rows,
    /// `h = int(v * W / H)` columns (at least 1: the reference divides by zero for tall,
    /// narrow images), tiles of `(ceil(W / h), ceil(H / v))`.
    pub fn for_image(width: u32, height: u32, threshold: u32) -> Self {
        let (w, h) = (width.max(1), height.max(1));
        let rows = h.div_ceil(threshold.max(1)).max(1);
        let cols = ((f64::from(rows) * f64::from(w) / f64::from(h)) as u32).max(1);
        Self {
            rows,
            cols,
            tile_w: w.div_ceil(cols),
            tile_h: h.div_ceil(rows),
        }
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        (self.rows * self.cols) as usize
    }

    /// Whether there is no tile (never, for a grid from [`TileGrid::for_image`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tile boxes `[x0, y0, x1, y1)` in image pixels, row-major; they may extend past the
    /// image (that part is black padding).
    pub fn boxes(&self) -> Vec<[u32; 4]> {
        let mut out = Vec::with_capacity(self.len());
        for j in 0..self.rows {
            for i in 0..self.cols {
                out.push([
                    i * self.tile_w,
                    j * self.tile_h,
                    (i + 1) * self.tile_w,
                    (j + 1) * self.tile_h,
                ]);
            }
        }
        out
    }

    /// Stitches per-tile maps (row-major, all the same size) into one
    /// `[rows * map_rows, cols * map_cols]` map.
    pub fn stitch(&self, maps: &[SaliencyMap]) -> Result<SaliencyMap, MapError> {
        if maps.len() != self.len() || maps.is_empty() {
            return Err(MapError::Size {
                rows: self.rows as usize,
                cols: self.cols as usize,
                len: maps.len(),
            });
        }
        let (mr, mc) = (maps[0].rows(), maps[0].cols());
        if let Some(bad) = maps.iter().find(|m| (m.rows(), m.cols()) != (mr, mc)) {
            return Err(MapError::Size {
                rows: mr,
                cols: mc,
                len: bad.values().len(),
            });
        }
        let (rows, cols) = (self.rows as usize * mr, self.cols as usize * mc);
        let mut values = vec![0f32; rows * cols];
        for (t, m) in maps.iter().enumerate() {
            let (tj, ti) = (t / self.cols as usize, t % self.cols as usize);
            for r in 0..mr {
                let dst = (tj * mr + r) * cols + ti * mc;
                values[dst..dst + mc].copy_from_slice(&m.values()[r * mc..(r + 1) * mc]);
            }
        }
        SaliencyMap::new(rows, cols, values)
    }
}

/// Crops `[x0, y0, x1, y1)` out of `img`, padding with black where the box leaves the image
/// (Pillow's `Image.crop` semantics).
pub fn crop_padded(img: &image::RgbImage, b: [u32; 4]) -> image::RgbImage {
    let (w, h) = (b[2].saturating_sub(b[0]), b[3].saturating_sub(b[1]));
    let mut out = image::RgbImage::new(w.max(1), h.max(1));
    for y in 0..h {
        let sy = b[1] + y;
        if sy >= img.height() {
            break;
        }
        for x in 0..w {
            let sx = b[0] + x;
            if sx >= img.width() {
                break;
            }
            out.put_pixel(x, y, *img.get_pixel(sx, sy));
        }
    }
    out
}

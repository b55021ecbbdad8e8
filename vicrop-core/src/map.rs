//! Saliency maps: a grid of f32 values and the part of the image it covers.

use serde::{Deserialize, Serialize};

/// An axis-aligned rectangle in original-image pixels, `x0 <= x1`, `y0 <= y1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rect {
    /// Left.
    pub x0: f64,
    /// Top.
    pub y0: f64,
    /// Right (exclusive).
    pub x1: f64,
    /// Bottom (exclusive).
    pub y1: f64,
}

impl Rect {
    /// The whole `width x height` image.
    pub fn whole(width: u32, height: u32) -> Self {
        Self {
            x0: 0.0,
            y0: 0.0,
            x1: width as f64,
            y1: height as f64,
        }
    }

    /// Width.
    pub fn width(&self) -> f64 {
        self.x1 - self.x0
    }

    /// Height.
    pub fn height(&self) -> f64 {
        self.y1 - self.y0
    }
}

/// A row-major grid of saliency values over (part of) an image.
///
/// `region` is the part of the original image the grid covers, when known: for LLaVA the
/// centre crop the vision tower saw. `None` means the grid is taken to tile the whole image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaliencyMap {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
    region: Option<Rect>,
}

/// Why a map could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The grid has no cell.
    #[error("a saliency map needs at least one row and one column (got {rows}x{cols})")]
    Empty {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// Values do not fill the grid.
    #[error("a {rows}x{cols} map needs {} values, got {len}", rows * cols)]
    Size {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Values given.
        len: usize,
    },
    /// Rows of a nested list differ in length.
    #[error("row {row} has {len} values, expected {cols}")]
    Ragged {
        /// The offending row.
        row: usize,
        /// Its length.
        len: usize,
        /// The first row's length.
        cols: usize,
    },
}

impl SaliencyMap {
    /// A map from row-major values.
    pub fn new(rows: usize, cols: usize, values: Vec<f32>) -> Result<Self, MapError> {
        if rows == 0 || cols == 0 {
            return Err(MapError::Empty { rows, cols });
        }
        if values.len() != rows * cols {
            return Err(MapError::Size {
                rows,
                cols,
                len: values.len(),
            });
        }
        Ok(Self {
            rows,
            cols,
            values,
            region: None,
        })
    }

    /// A map from nested rows.
    pub fn from_rows(rows: &[Vec<f32>]) -> Result<Self, MapError> {
        let cols = rows.first().map_or(0, Vec::len);
        for (row, r) in rows.iter().enumerate() {
            if r.len() != cols {
                return Err(MapError::Ragged {
                    row,
                    len: r.len(),
                    cols,
                });
            }
        }
        Self::new(rows.len(), cols, rows.concat())
    }

    /// Sets the image region the grid covers.
    pub fn with_region(mut self, region: Rect) -> Self {
        self.region = Some(region);
        self
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row-major values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The value at `(row, col)`.
    pub fn get(&self, row: usize, col: usize) -> f32 {
        self.values[row * self.cols + col]
    }

    /// The covered region, if known.
    pub fn region(&self) -> Option<Rect> {
        self.region
    }

    /// Values as nested rows (the JSON form).
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        self.values.chunks(self.cols).map(<[f32]>::to_vec).collect()
    }

    /// Element-wise `self / other` (no epsilon, as the reference: zeros give inf or NaN, which
    /// the crop selector tolerates).
    pub fn ratio(&self, other: &SaliencyMap) -> Result<SaliencyMap, MapError> {
        if (self.rows, self.cols) != (other.rows, other.cols) {
            return Err(MapError::Size {
                rows: self.rows,
                cols: self.cols,
                len: other.values.len(),
            });
        }
        let values = self
            .values
            .iter()
            .zip(&other.values)
            .map(|(a, b)| a / b)
            .collect();
        Ok(SaliencyMap {
            rows: self.rows,
            cols: self.cols,
            values,
            region: self.region,
        })
    }
}

impl SaliencyMap {
    /// The attention ratio of the paper's Figure 1 (method.md section 7): the map's mass inside
    /// `target` divided by the average mass of all same-sized windows over the map. Above 1,
    /// the model attends to the target more than to an average place of the target's size.
    ///
    /// `target` is `[x0, y0, x1, y1]` in original-image pixels, over an image of
    /// `image_size`. The map's cells are placed where they lie on the image: on
    /// [`SaliencyMap::region`] when known (LLaVA's centre crop; the geometrically correct
    /// placement, because the ratio asks where the model looks), else tiling the whole image.
    /// The target becomes the window of every cell it touches (clipped to the map), and the
    /// average runs over every position of a window of that many rows and columns, stride 1.
    ///
    /// `None` when the ratio is undefined: a target with no area or outside the map's region
    /// (the encoder never saw it), a non-finite value in the map, or windows whose average
    /// mass is not positive.
    pub fn attention_ratio(&self, target: [f64; 4], image_size: (u32, u32)) -> Option<f64> {
        let region = match self.region {
            Some(r) if r.width() > 0.0 && r.height() > 0.0 => r,
            _ => Rect::whole(image_size.0.max(1), image_size.1.max(1)),
        };
        let [x0, y0, x1, y1] = target;
        if !target.iter().all(|v| v.is_finite()) || x1 <= x0 || y1 <= y0 {
            return None;
        }
        if !self.values.iter().all(|v| v.is_finite()) {
            return None;
        }
        // The cells `[lo, hi)` that the interval `[a0, a1)` touches along one axis.
        let span = |a0: f64, a1: f64, origin: f64, extent: f64, n: usize| {
            let cell = extent / n as f64;
            let lo = ((a0 - origin) / cell).floor().max(0.0);
            let hi = ((a1 - origin) / cell).ceil().min(n as f64);
            (hi > lo).then_some((lo as usize, hi as usize))
        };
        let (c0, c1) = span(x0, x1, region.x0, region.width(), self.cols)?;
        let (r0, r1) = span(y0, y1, region.y0, region.height(), self.rows)?;
        let (nw, nh) = (c1 - c0, r1 - r0);
        let window = |x: usize, y: usize| {
            let mut s = 0f64;
            for row in y..y + nh {
                for col in x..x + nw {
                    s += f64::from(self.get(row, col));
                }
            }
            s
        };
        let inside = window(c0, r0);
        let (mut total, mut positions) = (0f64, 0usize);
        for y in 0..=self.rows - nh {
            for x in 0..=self.cols - nw {
                total += window(x, y);
                positions += 1;
            }
        }
        let average = total / positions as f64;
        (average > 0.0 && average.is_finite()).then(|| inside / average)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x4 map of ones with 13 at row 1, column 1.
    fn peaked() -> SaliencyMap {
        let mut values = vec![1f32; 16];
        values[5] = 13.0;
        SaliencyMap::new(4, 4, values).expect("map")
    }

    #[test]
    fn attention_ratio_of_a_uniform_map_is_one() {
        let map = SaliencyMap::new(3, 5, vec![0.25; 15]).expect("map");
        for target in [
            [0.0, 0.0, 10.0, 10.0],
            [33.0, 12.0, 90.0, 70.0],
            [0.0, 0.0, 100.0, 60.0],
        ] {
            assert_eq!(
                map.attention_ratio(target, (100, 60)),
                Some(1.0),
                "{target:?}"
            );
        }
    }

    #[test]
    fn attention_ratio_compares_the_target_window_with_the_average_window() {
        let map = peaked();
        // One cell (100 px cells on a 400x400 image): 13 against 28 / 16.
        let one = map.attention_ratio([110.0, 110.0, 190.0, 190.0], (400, 400));
        assert!((one.expect("ratio") - 13.0 / (28.0 / 16.0)).abs() < 1e-12);
        // Straddling four cells: a 2x2 window holding 16; of the nine 2x2 windows four hold the
        // peak (sum 16), five do not (sum 4).
        let four = map.attention_ratio([150.0, 150.0, 250.0, 250.0], (400, 400));
        assert!((four.expect("ratio") - 16.0 / (84.0 / 9.0)).abs() < 1e-12);
        // A target away from the peak scores below 1.
        let away = map.attention_ratio([300.0, 300.0, 400.0, 400.0], (400, 400));
        assert!(away.expect("ratio") < 1.0);
    }

    #[test]
    fn attention_ratio_places_cells_on_the_map_region() {
        // The map covers the centre square (100..500) of a 600x400 image: 100 px cells.
        let map = peaked().with_region(Rect {
            x0: 100.0,
            y0: 0.0,
            x1: 500.0,
            y1: 400.0,
        });
        let on_peak = map.attention_ratio([210.0, 110.0, 290.0, 190.0], (600, 400));
        assert!((on_peak.expect("ratio") - 13.0 / (28.0 / 16.0)).abs() < 1e-12);
        // Left of the region: the encoder never saw it.
        assert_eq!(
            map.attention_ratio([0.0, 0.0, 90.0, 90.0], (600, 400)),
            None
        );
        // Partly inside: clipped to the cells it touches (a 1x2 window holding 14; of the
        // twelve 1x2 windows two hold the peak).
        let clipped = map.attention_ratio([50.0, 110.0, 290.0, 190.0], (600, 400));
        assert!((clipped.expect("ratio") - 14.0 / (48.0 / 12.0)).abs() < 1e-12);
    }

    #[test]
    fn attention_ratio_is_none_when_undefined() {
        let map = peaked();
        assert_eq!(
            map.attention_ratio([10.0, 10.0, 10.0, 50.0], (400, 400)),
            None
        );
        assert_eq!(
            map.attention_ratio([f64::NAN, 0.0, 10.0, 10.0], (400, 400)),
            None
        );
        let zeros = SaliencyMap::new(2, 2, vec![0.0; 4]).expect("map");
        assert_eq!(zeros.attention_ratio([0.0, 0.0, 5.0, 5.0], (10, 10)), None);
        let nan = SaliencyMap::new(2, 2, vec![1.0, f32::NAN, 1.0, 1.0]).expect("map");
        assert_eq!(nan.attention_ratio([0.0, 0.0, 5.0, 5.0], (10, 10)), None);
    }
}

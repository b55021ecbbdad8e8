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

//! Model-agnostic parts of ViCrop: saliency maps, crop selection, high-resolution tiling, the
//! pure-grad filters, and PIL-exact image operations.

pub mod crop;
pub mod filters;
pub mod map;
pub mod pil;
pub mod tiling;

pub use crop::{AdaptiveWindow, CropBox, CropSelector, MapPlacement};
pub use map::{Rect, SaliencyMap};
pub use tiling::TileGrid;

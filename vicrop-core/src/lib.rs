//! Model-agnostic parts of ViCrop: saliency maps, crop selection, high-resolution tiling, the
//! pure-grad filters, and image operations that reproduce Pillow exactly.

pub mod crop;
pub mod filters;
pub mod map;
pub mod pil;
pub mod pipeline;
pub mod tiling;

pub use crop::{AdaptiveWindow, CropBox, CropSelector, MapPlacement};
pub use map::{Rect, SaliencyMap};
pub use pil::{
    decode_image_bytes, load_image, resize_luma8, resize_rgb8, to_rgb8, Filter, ImageLoadError,
    LoadLimits,
};
pub use pipeline::{Answer, Cost, Method, Outcome, Question, ViCrop, VicropModel};
pub use tiling::TileGrid;

//! Model-agnostic parts of ViCrop: saliency maps, crop selection, high-resolution tiling, the
//! pure-grad filters, and image operations that reproduce Pillow exactly.

pub mod crop;
pub mod filters;
pub mod imageio;
pub mod map;
pub mod pipeline;
pub mod resample;
pub mod tiling;

pub use crop::{AdaptiveWindow, CropBox, CropSelector, MapPlacement};
pub use imageio::{decode_image_bytes, load_image, ImageLoadError, LoadLimits};
pub use map::{Rect, SaliencyMap};
pub use pipeline::{Answer, Cost, Method, Outcome, Question, ViCrop, VicropModel};
pub use resample::{resize_luma8, resize_rgb8, Filter};
pub use tiling::TileGrid;

//! Model-agnostic parts of ViCrop: the seams models implement ([`source`]), the maps computed
//! from their signals ([`method`]), crop selection, high-resolution tiling, the pure-grad
//! filters, image operations that reproduce Pillow exactly, and the pipeline.

pub mod crop;
pub mod filters;
pub mod map;
pub mod method;
pub mod pil;
pub mod pipeline;
pub mod source;
pub mod tiling;

/// The image type every API takes (re-exported so callers need not depend on `image`).
pub use image::RgbImage;

pub use crop::{AdaptiveWindow, CropBox, CropSelector, MapPlacement};
pub use map::{Rect, SaliencyMap};
pub use method::GENERAL_QUESTION;
pub use pil::{
    decode_image_bytes, load_image, resize_luma8, resize_rgb8, to_rgb8, Filter, ImageLoadError,
    LoadLimits,
};
pub use pipeline::{
    Answer, Cost, Method, Outcome, PipelineError, PreparedImage, Question, Timings, ViCrop,
};
pub use source::{
    AttentionRequest, AttentionSignal, AttentionSource, Depth, GradientSource, HeadRows, LayerRule,
    MapGeometry, Meter, SignalError, Stage, VisionLanguageModel,
};
pub use tiling::TileGrid;

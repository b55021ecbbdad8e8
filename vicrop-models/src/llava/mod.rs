//! LLaVA-1.5 (`LlavaForConditionalGeneration`), all in one place:
//!
//! - [`config`]: `config.json` with transformers' defaults, validated into [`LlavaSpec`];
//! - [`processor`]: `CLIPImageProcessor` semantics, Pillow-exact;
//! - [`model`]: the network (CLIP vision tower, projector, LLaMA with image features spliced
//!   at the image-token positions; weight names next to each load call) and [`LlavaModel`],
//!   the loaded checkpoint that answers questions;
//! - [`vicrop`]: the signals ViCrop reads ([`LlavaVicrop`]).

pub mod config;
pub mod model;
pub mod processor;
pub mod vicrop;

pub use config::{LlavaConfig, LlavaSpec};
pub use model::{argmax_host, Answer, Generation, Llava, LlavaModel, LoadOptions, Projector};
pub use vicrop::{LlavaImage, LlavaVicrop};

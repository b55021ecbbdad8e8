//! # vicrop
//!
//! ViCrop, from "MLLMs Know Where to Look: Training-free Perception of Small Visual Details
//! with Multimodal LLMs" (ICLR 2025), in Rust on [burn](https://burn.dev): read where a
//! multimodal LLM looks, crop there, and ask again with the original image and the crop.
//!
//! This facade re-exports the workspace crates:
//! - [`core`] (`vicrop-core`): model-agnostic parts: PIL-exact image operations, maps, crops.
//! - [`models`] (`vicrop-models`): LLaVA-1.5 in burn, loading Hugging Face checkpoints.
//! - [`eval`] (`vicrop-eval`): command implementations behind the `vicrop` binary.
//!
//! ```no_run
//! use vicrop::models::{backend::Cpu, LlavaModel, LoadOptions};
//! use vicrop::core::{load_image, LoadLimits};
//!
//! # fn main() -> anyhow::Result<()> {
//! let model = LlavaModel::<Cpu>::load(
//!     "tests/fixtures/llava-tiny-a".as_ref(),
//!     &Default::default(),
//!     LoadOptions::default(),
//! )?;
//! let image = load_image("tests/fixtures/images/chelsea.png".as_ref(), &LoadLimits::default())?;
//! let answer = model.answer(&[&image], "What animal is this?", 20)?;
//! println!("{} {:?}", answer.text, answer.token_ids);
//! # Ok(())
//! # }
//! ```

pub use vicrop_core as core;
pub use vicrop_eval as eval;
pub use vicrop_models as models;

/// The burn tensor API, for callers that pass tensors or devices around.
pub use burn;

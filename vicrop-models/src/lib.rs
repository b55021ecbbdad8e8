//! burn implementations of the models ViCrop runs on, loading Hugging Face checkpoints.
//!
//! - [`llava::LlavaModel`]: a LLaVA-1.5 checkpoint (CLIP ViT + projector + LLaMA) with its
//!   image processor and tokenizer; answers questions, hands out attention rows.
//! - [`instructblip::InstructBlipModel`]: an InstructBLIP-Vicuna checkpoint (BLIP/EVA ViT,
//!   Q-Former, projection, LLaMA) with its processor and both tokenizers.
//! - [`loader`]: picks the family from `config.json` ([`AnyModel`]).
//! - [`config`]: serde mirrors of the HF JSON files, with transformers' defaults.
//! - [`weights`]: safetensors loading (single or sharded, F32/F16/BF16).
//! - [`processor`]: `CLIPImageProcessor` semantics, PIL-exact.
//! - [`backend`]: the backends this crate is built for.
//!
//! Every model is generic over the burn backend `B`.

pub mod backend;
pub mod blip;
pub mod clip;
pub mod config;
pub mod error;
pub mod hub;
pub mod instructblip;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod kernel_cache;
pub mod kernels;
pub mod llama;
pub mod llava;
pub mod loader;
pub mod nn;
pub mod processor;
pub mod qformer;
pub mod tokenizer;
pub mod weights;

pub use error::{ModelError, Result};
pub use instructblip::{InstructBlipModel, InstructBlipVicrop};
pub use llava::LlavaVicrop;
pub use llava::{Answer, LlavaModel, LoadOptions};
pub use loader::{detect_family, AnyModel, Family};
pub use weights::LoadProgress;

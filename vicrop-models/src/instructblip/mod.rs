//! InstructBLIP-Vicuna (`InstructBlipForConditionalGeneration` with a LLaMA language model,
//! `Salesforce/instructblip-vicuna-7b`): BLIP/EVA vision transformer, Q-Former reading the
//! instruction, language projection and Vicuna; with its processor, both tokenizers, greedy
//! generation and the raw signals ViCrop reads.
//!
//! - [`config`]: serde mirrors of `config.json` / `preprocessor_config.json` with transformers'
//!   defaults, and the validated [`InstructBlipSpec`].
//! - [`processor`]: the BLIP image processor, the prompt, the Q-Former tokenizer.
//! - [`model`]: the network [`InstructBlip`] and the loaded checkpoint [`InstructBlipModel`].
//! - [`vicrop`]: the signals ViCrop reads ([`InstructBlipVicrop`]).
//!
//! The LLM input for `n` images is `[queries(image 1), ..., queries(image n), BOS, prompt]`:
//! the projected Q-Former outputs of every image in order, then the embedded prompt ids. This
//! is the layout of transformers' legacy path (query outputs prepended) and equally of its
//! newer one (`image_token_index` placeholders before BOS, replaced by the query outputs).

pub mod config;
pub mod model;
pub mod processor;
pub mod vicrop;

pub use config::{InstructBlipConfig, InstructBlipSpec};
pub use model::{names, AttentionSignals, InstructBlip, InstructBlipModel, SignalProbe};
pub use processor::instructblip_prompt;
pub use vicrop::{InstructBlipImage, InstructBlipVicrop};

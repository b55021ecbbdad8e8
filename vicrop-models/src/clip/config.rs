//! `vision_config` of a LLaVA checkpoint: the CLIP vision tower, with transformers' defaults.

use serde::Deserialize;

fn d_clip_hidden() -> usize {
    768
}
fn d_clip_inter() -> usize {
    3072
}
fn d_clip_layers() -> usize {
    12
}
fn d_clip_heads() -> usize {
    12
}
fn d_channels() -> usize {
    3
}
fn d_clip_image() -> usize {
    224
}
fn d_clip_patch() -> usize {
    32
}
fn d_quick_gelu() -> String {
    "quick_gelu".into()
}
fn d_ln_eps() -> f64 {
    1e-5
}

/// `vision_config` of a LLaVA checkpoint (`CLIPVisionConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    /// `"clip_vision_model"`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Width of the transformer.
    #[serde(default = "d_clip_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP.
    #[serde(default = "d_clip_inter")]
    pub intermediate_size: usize,
    /// Number of encoder layers.
    #[serde(default = "d_clip_layers")]
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    #[serde(default = "d_clip_heads")]
    pub num_attention_heads: usize,
    /// Input channels.
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// Input resolution (square).
    #[serde(default = "d_clip_image")]
    pub image_size: usize,
    /// Patch side.
    #[serde(default = "d_clip_patch")]
    pub patch_size: usize,
    /// MLP activation.
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "d_ln_eps")]
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    /// The vision tower transformers builds when `vision_config` is absent from a LLaVA config.
    pub fn llava_default() -> Self {
        Self {
            model_type: Some("clip_vision_model".into()),
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 336,
            patch_size: 14,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

//! `config.json` of a `LlavaForConditionalGeneration` checkpoint and its validated form,
//! [`LlavaSpec`].

use std::path::Path;

use serde::Deserialize;

use crate::clip::config::ClipVisionConfig;
use crate::config::{d_true, Activation};
use crate::error::{ModelError, Result};
use crate::llama::config::LlamaConfig;

/// Which vision hidden state(s) LLaVA reads: one layer index or several (concatenated).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum FeatureLayer {
    /// One layer; negative indices count from the end of `hidden_states`.
    One(i64),
    /// Several layers, concatenated along the feature axis.
    Many(Vec<i64>),
}

impl FeatureLayer {
    /// The layer indices.
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            FeatureLayer::One(l) => vec![*l],
            FeatureLayer::Many(ls) => ls.clone(),
        }
    }
}

fn d_image_token_index() -> u32 {
    32000
}
fn d_projector_act() -> String {
    "gelu".into()
}
fn d_select_strategy() -> String {
    "default".into()
}
fn d_feature_layer() -> FeatureLayer {
    FeatureLayer::One(-2)
}

/// `config.json` of a `LlavaForConditionalGeneration` checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct LlavaConfig {
    /// `["LlavaForConditionalGeneration"]` for this architecture.
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// `"llava"`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Token id that marks one image feature position.
    #[serde(default = "d_image_token_index", alias = "image_token_id")]
    pub image_token_index: u32,
    /// Activation between the projector's two linear layers.
    #[serde(default = "d_projector_act")]
    pub projector_hidden_act: String,
    /// Whether the projector's linear layers have biases (transformers >= 4.49 field).
    #[serde(default = "d_true")]
    pub multimodal_projector_bias: bool,
    /// `"default"` drops the CLS feature, `"full"` keeps it.
    #[serde(default = "d_select_strategy")]
    pub vision_feature_select_strategy: String,
    /// Which vision hidden state feeds the projector.
    #[serde(default = "d_feature_layer")]
    pub vision_feature_layer: FeatureLayer,
    /// The CLIP vision tower's configuration.
    #[serde(default)]
    pub vision_config: Option<ClipVisionConfig>,
    /// The language model's configuration.
    #[serde(default)]
    pub text_config: Option<LlamaConfig>,
    /// Top-level pad id (informational).
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Top-level tying flag (transformers reads the text config's).
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
}

/// Whether the projector sees the CLS feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectStrategy {
    /// Drop the CLS feature (`"default"`).
    Default,
    /// Keep it (`"full"`).
    Full,
}

/// A validated LLaVA configuration: everything the Rust model needs, defaults applied.
#[derive(Debug, Clone)]
pub struct LlavaSpec {
    /// The vision tower.
    pub vision: ClipVisionConfig,
    /// The language model.
    pub text: LlamaConfig,
    /// Vision activation.
    pub vision_act: Activation,
    /// Projector activation.
    pub projector_act: Activation,
    /// Projector biases present.
    pub projector_bias: bool,
    /// Vision hidden-state indices into `hidden_states` (0 = embeddings), non-negative.
    pub feature_layers: Vec<usize>,
    /// CLS handling.
    pub select: SelectStrategy,
    /// Image placeholder token id.
    pub image_token_id: u32,
}

impl LlavaSpec {
    /// Image tokens one image expands to in the prompt.
    pub fn image_tokens_per_image(&self) -> usize {
        let g = self.vision.grid();
        g * g + usize::from(self.select == SelectStrategy::Full)
    }

    /// Vision layers that must actually run (the deepest selected hidden state).
    pub fn vision_layers_needed(&self) -> usize {
        self.feature_layers.iter().copied().max().unwrap_or(0)
    }

    /// Validates a parsed `config.json`; `path` names it in errors.
    pub fn from_config(cfg: &LlavaConfig, path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        if let Some(archs) = &cfg.architectures {
            if !archs.iter().any(|a| a == "LlavaForConditionalGeneration") {
                return Err(bad(format!(
                    "architectures is {archs:?}; this build runs LlavaForConditionalGeneration (LLaVA-1.5) checkpoints"
                )));
            }
        }
        if let Some(mt) = &cfg.model_type {
            if mt != "llava" {
                return Err(bad(format!(
                    "model_type is \"{mt}\"; this build runs \"llava\" (LLaVA-1.5) checkpoints"
                )));
            }
        }
        let vision = cfg
            .vision_config
            .clone()
            .unwrap_or_else(ClipVisionConfig::llava_default);
        if let Some(mt) = &vision.model_type {
            if mt != "clip_vision_model" {
                return Err(bad(format!(
                    "vision_config.model_type is \"{mt}\"; only \"clip_vision_model\" is supported"
                )));
            }
        }
        let text = cfg.text_config.clone().unwrap_or_default();
        if let Some(mt) = &text.model_type {
            if mt != "llama" {
                return Err(bad(format!(
                    "text_config.model_type is \"{mt}\"; only \"llama\" is supported"
                )));
            }
        }
        let positive = [
            ("vision_config.hidden_size", vision.hidden_size),
            ("vision_config.intermediate_size", vision.intermediate_size),
            (
                "vision_config.num_attention_heads",
                vision.num_attention_heads,
            ),
            ("vision_config.image_size", vision.image_size),
            ("vision_config.patch_size", vision.patch_size),
            ("vision_config.num_channels", vision.num_channels),
            ("text_config.vocab_size", text.vocab_size),
            ("text_config.hidden_size", text.hidden_size),
            ("text_config.intermediate_size", text.intermediate_size),
            ("text_config.num_hidden_layers", text.num_hidden_layers),
            ("text_config.num_attention_heads", text.num_attention_heads),
            ("text_config.num_key_value_heads", text.kv_heads()),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(bad(format!("{name} must be positive")));
            }
        }
        if vision.hidden_size % vision.num_attention_heads != 0 {
            return Err(bad(format!(
                "vision_config.hidden_size {} is not divisible by num_attention_heads {}",
                vision.hidden_size, vision.num_attention_heads
            )));
        }
        if vision.patch_size > vision.image_size {
            return Err(bad("vision_config.patch_size exceeds image_size".into()));
        }
        if text.num_attention_heads % text.kv_heads() != 0 {
            return Err(bad(format!(
                "text_config.num_attention_heads {} is not a multiple of num_key_value_heads {}",
                text.num_attention_heads,
                text.kv_heads()
            )));
        }
        if text.head_dim() % 2 != 0 || text.head_dim() == 0 {
            return Err(bad(format!(
                "text_config head_dim {} must be even and positive (rotary embeddings)",
                text.head_dim()
            )));
        }
        if let Some(scaling) = &text.rope_scaling {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|v| v.as_str());
            if !(scaling.is_null() || kind == Some("default")) {
                return Err(bad(format!(
                    "text_config.rope_scaling {scaling} is not supported (LLaVA-1.5 uses none)"
                )));
            }
        }
        if text.hidden_act != "silu" && Activation::parse(&text.hidden_act).is_none() {
            return Err(bad(format!(
                "text_config.hidden_act \"{}\" is not supported",
                text.hidden_act
            )));
        }
        let vision_act = Activation::parse(&vision.hidden_act).ok_or_else(|| {
            bad(format!(
                "vision_config.hidden_act \"{}\" is not supported",
                vision.hidden_act
            ))
        })?;
        let projector_act = Activation::parse(&cfg.projector_hidden_act).ok_or_else(|| {
            bad(format!(
                "projector_hidden_act \"{}\" is not supported",
                cfg.projector_hidden_act
            ))
        })?;
        let select = match cfg.vision_feature_select_strategy.as_str() {
            "default" => SelectStrategy::Default,
            "full" => SelectStrategy::Full,
            other => {
                return Err(bad(format!(
                    "vision_feature_select_strategy \"{other}\" is not supported (\"default\" or \"full\")"
                )))
            }
        };
        let n_states = vision.num_hidden_layers as i64 + 1;
        let mut feature_layers = Vec::new();
        for layer in cfg.vision_feature_layer.to_vec() {
            let idx = if layer < 0 { n_states + layer } else { layer };
            if !(0..n_states).contains(&idx) {
                return Err(bad(format!(
                    "vision_feature_layer {layer} is out of range for a {}-layer vision tower",
                    vision.num_hidden_layers
                )));
            }
            feature_layers.push(idx as usize);
        }
        if feature_layers.is_empty() {
            return Err(bad("vision_feature_layer is an empty list".into()));
        }
        if cfg.image_token_index as usize >= text.vocab_size {
            return Err(bad(format!(
                "image_token_index {} is outside the vocabulary ({} ids)",
                cfg.image_token_index, text.vocab_size
            )));
        }
        Ok(Self {
            vision,
            text,
            vision_act,
            projector_act,
            projector_bias: cfg.multimodal_projector_bias,
            feature_layers,
            select,
            image_token_id: cfg.image_token_index,
        })
    }
}

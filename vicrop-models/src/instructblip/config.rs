//! Configuration files of an InstructBLIP checkpoint (`InstructBlipForConditionalGeneration`),
//! mirrored with serde, and the validated [`InstructBlipSpec`].
//!
//! Omitted fields get the defaults of transformers 4.47's `InstructBlipVisionConfig`,
//! `InstructBlipQFormerConfig`, `InstructBlipConfig` and `BlipImageProcessor`, which are the
//! `Salesforce/instructblip-*` shapes: EVA ViT-g/14 at 224 px (39 layers, width 1408, 16 heads),
//! a 12-layer BERT-base Q-Former with cross-attention every 2nd layer and 32 query tokens.

use std::path::Path;

use serde::Deserialize;

use crate::config::{Activation, LlamaConfig, OneOrMany, SizeSpec, CLIP_MEAN, CLIP_STD};
use crate::error::{ModelError, Result};

fn d_true() -> bool {
    true
}

fn d_vision_hidden() -> usize {
    1408
}
fn d_vision_inter() -> usize {
    6144
}
fn d_vision_layers() -> usize {
    39
}
fn d_vision_heads() -> usize {
    16
}
fn d_vision_image() -> usize {
    224
}
fn d_vision_patch() -> usize {
    14
}
fn d_gelu() -> String {
    "gelu".into()
}
fn d_vision_eps() -> f64 {
    1e-6
}

/// `vision_config` (`InstructBlipVisionConfig`): the BLIP / EVA vision transformer.
#[derive(Debug, Clone, Deserialize)]
pub struct BlipVisionConfig {
    /// `"instructblip_vision_model"`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Width of the transformer.
    #[serde(default = "d_vision_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP.
    #[serde(default = "d_vision_inter")]
    pub intermediate_size: usize,
    /// Number of encoder layers.
    #[serde(default = "d_vision_layers")]
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    #[serde(default = "d_vision_heads")]
    pub num_attention_heads: usize,
    /// Input resolution (square).
    #[serde(default = "d_vision_image")]
    pub image_size: usize,
    /// Patch side.
    #[serde(default = "d_vision_patch")]
    pub patch_size: usize,
    /// MLP activation.
    #[serde(default = "d_gelu")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "d_vision_eps")]
    pub layer_norm_eps: f64,
    /// Whether the fused `qkv` projection has `q_bias` / `v_bias` parameters.
    #[serde(default = "d_true")]
    pub qkv_bias: bool,
}

impl Default for BlipVisionConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("defaults always parse"))
    }
}

impl BlipVisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens of the vision output: the class token and the patches.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

fn d_qf_vocab() -> usize {
    30522
}
fn d_qf_hidden() -> usize {
    768
}
fn d_qf_layers() -> usize {
    12
}
fn d_qf_heads() -> usize {
    12
}
fn d_qf_inter() -> usize {
    3072
}
fn d_qf_max_pos() -> usize {
    512
}
fn d_qf_eps() -> f64 {
    1e-12
}
fn d_absolute() -> String {
    "absolute".into()
}
fn d_cross_freq() -> usize {
    2
}

/// `qformer_config` (`InstructBlipQFormerConfig`): the BERT-style Q-Former.
#[derive(Debug, Clone, Deserialize)]
pub struct QFormerConfig {
    /// `"instructblip_qformer"`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Word-piece vocabulary size.
    #[serde(default = "d_qf_vocab")]
    pub vocab_size: usize,
    /// Width of the Q-Former.
    #[serde(default = "d_qf_hidden")]
    pub hidden_size: usize,
    /// Number of layers.
    #[serde(default = "d_qf_layers")]
    pub num_hidden_layers: usize,
    /// Number of attention heads (self- and cross-attention).
    #[serde(default = "d_qf_heads")]
    pub num_attention_heads: usize,
    /// Width of the feed-forward layers.
    #[serde(default = "d_qf_inter")]
    pub intermediate_size: usize,
    /// Feed-forward activation.
    #[serde(default = "d_gelu")]
    pub hidden_act: String,
    /// Rows of the absolute position embedding (longest instruction).
    #[serde(default = "d_qf_max_pos")]
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    #[serde(default = "d_qf_eps")]
    pub layer_norm_eps: f64,
    /// Only `"absolute"` is supported (the only kind InstructBLIP checkpoints use).
    #[serde(default = "d_absolute")]
    pub position_embedding_type: String,
    /// Layer `i` has cross-attention to the image when `i % cross_attention_frequency == 0`.
    #[serde(default = "d_cross_freq")]
    pub cross_attention_frequency: usize,
    /// Width of the image states; transformers overwrites it with `vision_config.hidden_size`.
    #[serde(default)]
    pub encoder_hidden_size: Option<usize>,
}

impl Default for QFormerConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("defaults always parse"))
    }
}

impl QFormerConfig {
    /// Whether layer `i` has cross-attention.
    pub fn has_cross_attention(&self, layer: usize) -> bool {
        layer % self.cross_attention_frequency.max(1) == 0
    }

    /// Number of layers with cross-attention.
    pub fn num_cross_layers(&self) -> usize {
        (0..self.num_hidden_layers)
            .filter(|&i| self.has_cross_attention(i))
            .count()
    }

    /// The layer holding the `index`-th cross-attention (0-based), if any.
    pub fn cross_layer(&self, index: usize) -> Option<usize> {
        (0..self.num_hidden_layers)
            .filter(|&i| self.has_cross_attention(i))
            .nth(index)
    }
}

fn d_query_tokens() -> usize {
    32
}

/// `config.json` of an `InstructBlipForConditionalGeneration` checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct InstructBlipConfig {
    /// `["InstructBlipForConditionalGeneration"]`.
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// `"instructblip"`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// The vision transformer.
    #[serde(default)]
    pub vision_config: Option<BlipVisionConfig>,
    /// The Q-Former.
    #[serde(default)]
    pub qformer_config: Option<QFormerConfig>,
    /// The language model (only LLaMA / Vicuna is supported; transformers' default is OPT).
    #[serde(default)]
    pub text_config: Option<serde_json::Value>,
    /// Learned query tokens per image.
    #[serde(default = "d_query_tokens")]
    pub num_query_tokens: usize,
    /// Placeholder id of the query outputs in the LLM prompt (checkpoints updated for
    /// transformers >= 4.45); absent on older ones, which prepend the queries instead.
    #[serde(default, alias = "image_token_id")]
    pub image_token_index: Option<u32>,
}

/// The fields of `text_config` that [`LlamaConfig`] does not carry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TextTokenIds {
    /// Architecture names (`Salesforce/instructblip-vicuna-7b` says `"LLaMAForCausalLM"`).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// Beginning of sequence (LlamaConfig default 1; the 7B checkpoint says 0).
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    /// End of sequence (LlamaConfig default 2; the 7B checkpoint says 1).
    #[serde(default)]
    pub eos_token_id: Option<OneOrMany>,
    /// Padding (the 7B checkpoint says -1).
    #[serde(default)]
    pub pad_token_id: Option<i64>,
}

impl TextTokenIds {
    /// Whether transformers' `generate` rewrites generated id 0 as 2 afterwards (it does when
    /// `text_config.architectures[0]` is the old spelling `"LLaMAForCausalLM"`, to make up for
    /// the checkpoint's inconsistent BOS ids).
    pub fn zero_to_two(&self) -> bool {
        self.architectures
            .as_ref()
            .and_then(|a| a.first())
            .is_some_and(|a| a == "LLaMAForCausalLM")
    }
}

/// A validated InstructBLIP configuration: everything the Rust model needs, defaults applied.
#[derive(Debug, Clone)]
pub struct InstructBlipSpec {
    /// The vision transformer.
    pub vision: BlipVisionConfig,
    /// The Q-Former, `encoder_hidden_size` resolved to the vision width.
    pub qformer: QFormerConfig,
    /// The language model.
    pub text: LlamaConfig,
    /// Token ids of the language model's config.
    pub text_ids: TextTokenIds,
    /// Vision MLP activation.
    pub vision_act: Activation,
    /// Q-Former feed-forward activation.
    pub qformer_act: Activation,
    /// Learned query tokens per image.
    pub num_query_tokens: usize,
    /// The image placeholder id, if the config names one.
    pub image_token_index: Option<u32>,
}

impl InstructBlipSpec {
    /// LLM positions one image takes (its projected queries).
    pub fn tokens_per_image(&self) -> usize {
        self.num_query_tokens
    }

    /// Validates a parsed `config.json`; `path` names it in errors.
    pub fn from_config(cfg: &InstructBlipConfig, path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        if let Some(archs) = &cfg.architectures {
            if !archs
                .iter()
                .any(|a| a == "InstructBlipForConditionalGeneration")
            {
                return Err(bad(format!(
                    "architectures is {archs:?}; this model runs InstructBlipForConditionalGeneration checkpoints"
                )));
            }
        }
        if let Some(mt) = &cfg.model_type {
            if mt != "instructblip" {
                return Err(bad(format!(
                    "model_type is \"{mt}\"; this model runs \"instructblip\" checkpoints"
                )));
            }
        }
        let vision = cfg.vision_config.clone().unwrap_or_default();
        let mut qformer = cfg.qformer_config.clone().unwrap_or_default();
        // transformers: `qformer_config.encoder_hidden_size = vision_config.hidden_size`.
        qformer.encoder_hidden_size = Some(vision.hidden_size);
        let text_value = cfg.text_config.clone().ok_or_else(|| {
            bad("text_config is absent (transformers would build an OPT model); only LLaMA / Vicuna language models are supported".into())
        })?;
        let text_type = text_value.get("model_type").and_then(|v| v.as_str());
        if text_type != Some("llama") {
            return Err(bad(format!(
                "text_config.model_type is {}; only \"llama\" (Vicuna) is supported",
                text_type.map_or(
                    "absent (transformers reads \"opt\")".to_string(),
                    |t| format!("\"{t}\"")
                )
            )));
        }
        let text: LlamaConfig = serde_json::from_value(text_value.clone())
            .map_err(|e| bad(format!("text_config: {e}")))?;
        let text_ids: TextTokenIds =
            serde_json::from_value(text_value).map_err(|e| bad(format!("text_config: {e}")))?;
        let positive = [
            ("vision_config.hidden_size", vision.hidden_size),
            ("vision_config.intermediate_size", vision.intermediate_size),
            ("vision_config.num_hidden_layers", vision.num_hidden_layers),
            (
                "vision_config.num_attention_heads",
                vision.num_attention_heads,
            ),
            ("vision_config.image_size", vision.image_size),
            ("vision_config.patch_size", vision.patch_size),
            ("qformer_config.vocab_size", qformer.vocab_size),
            ("qformer_config.hidden_size", qformer.hidden_size),
            (
                "qformer_config.num_hidden_layers",
                qformer.num_hidden_layers,
            ),
            (
                "qformer_config.num_attention_heads",
                qformer.num_attention_heads,
            ),
            (
                "qformer_config.intermediate_size",
                qformer.intermediate_size,
            ),
            (
                "qformer_config.cross_attention_frequency",
                qformer.cross_attention_frequency,
            ),
            ("num_query_tokens", cfg.num_query_tokens),
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
        if qformer.hidden_size % qformer.num_attention_heads != 0 {
            return Err(bad(format!(
                "qformer_config.hidden_size {} is not divisible by num_attention_heads {}",
                qformer.hidden_size, qformer.num_attention_heads
            )));
        }
        if qformer.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "qformer_config.position_embedding_type \"{}\" is not supported (\"absolute\")",
                qformer.position_embedding_type
            )));
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
                    "text_config.rope_scaling {scaling} is not supported (Vicuna uses none)"
                )));
            }
        }
        if Activation::parse(&text.hidden_act).is_none() {
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
        let qformer_act = Activation::parse(&qformer.hidden_act).ok_or_else(|| {
            bad(format!(
                "qformer_config.hidden_act \"{}\" is not supported",
                qformer.hidden_act
            ))
        })?;
        if let Some(id) = cfg.image_token_index {
            if id as usize >= text.vocab_size {
                return Err(bad(format!(
                    "image_token_index {id} is outside the vocabulary ({} ids)",
                    text.vocab_size
                )));
            }
        }
        Ok(Self {
            vision,
            qformer,
            text,
            text_ids,
            vision_act,
            qformer_act,
            num_query_tokens: cfg.num_query_tokens,
            image_token_index: cfg.image_token_index,
        })
    }
}

fn d_blip_size() -> SizeSpec {
    SizeSpec::Dict {
        shortest_edge: None,
        height: Some(384),
        width: Some(384),
    }
}
fn d_resample() -> u32 {
    3
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}
fn d_mean() -> Vec<f64> {
    CLIP_MEAN.to_vec()
}
fn d_std() -> Vec<f64> {
    CLIP_STD.to_vec()
}

/// `preprocessor_config.json` of an InstructBLIP checkpoint (`BlipImageProcessor`): a
/// squash resize to `size`, no crop.
#[derive(Debug, Clone, Deserialize)]
pub struct BlipPreprocessorConfig {
    /// Class name written by transformers (`"BlipImageProcessor"`).
    #[serde(default)]
    pub image_processor_type: Option<String>,
    /// Resize at all.
    #[serde(default = "d_true")]
    pub do_resize: bool,
    /// Resize target `{"height", "width"}` (a bare integer means a square).
    #[serde(default = "d_blip_size")]
    pub size: SizeSpec,
    /// PIL resample filter id (2 = bilinear, 3 = bicubic).
    #[serde(default = "d_resample")]
    pub resample: u32,
    /// Multiply by `rescale_factor`.
    #[serde(default = "d_true")]
    pub do_rescale: bool,
    /// Usually 1/255.
    #[serde(default = "d_rescale")]
    pub rescale_factor: f64,
    /// Normalise with mean/std.
    #[serde(default = "d_true")]
    pub do_normalize: bool,
    /// Per-channel mean.
    #[serde(default = "d_mean")]
    pub image_mean: Vec<f64>,
    /// Per-channel standard deviation.
    #[serde(default = "d_std")]
    pub image_std: Vec<f64>,
    /// Convert to RGB first (always done here).
    #[serde(default = "d_true")]
    pub do_convert_rgb: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_json;

    /// The shape of `Salesforce/instructblip-vicuna-7b`'s `config.json` with every field that
    /// transformers defaults left out: the defaults must give the real model.
    const MINIMAL_7B: &str = r#"{
      "architectures": ["InstructBlipForConditionalGeneration"],
      "model_type": "instructblip",
      "num_query_tokens": 32,
      "qformer_config": {"model_type": "instructblip_qformer"},
      "text_config": {
        "architectures": ["LLaMAForCausalLM"],
        "model_type": "llama",
        "max_position_embeddings": 2048,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": -1,
        "vocab_size": 32001
      },
      "vision_config": {"model_type": "instructblip_vision_model"}
    }"#;

    #[test]
    fn minimal_config_resolves_to_the_7b_shapes() {
        let path = Path::new("config.json");
        let cfg: InstructBlipConfig = parse_json(MINIMAL_7B, path).expect("parses");
        let spec = InstructBlipSpec::from_config(&cfg, path).expect("valid");
        let v = &spec.vision;
        assert_eq!(
            (v.num_hidden_layers, v.hidden_size, v.num_attention_heads),
            (39, 1408, 16)
        );
        assert_eq!(
            (v.image_size, v.patch_size, v.grid(), v.tokens()),
            (224, 14, 16, 257)
        );
        assert_eq!(v.intermediate_size, 6144);
        assert_eq!(v.layer_norm_eps, 1e-6);
        assert!(v.qkv_bias);
        assert_eq!(spec.vision_act, Activation::Gelu);
        let q = &spec.qformer;
        assert_eq!(
            (q.num_hidden_layers, q.hidden_size, q.num_attention_heads),
            (12, 768, 12)
        );
        assert_eq!((q.intermediate_size, q.vocab_size), (3072, 30522));
        assert_eq!(q.max_position_embeddings, 512);
        assert_eq!(q.layer_norm_eps, 1e-12);
        assert_eq!(q.cross_attention_frequency, 2);
        assert_eq!(q.encoder_hidden_size, Some(1408));
        assert_eq!(q.num_cross_layers(), 6);
        // ViCrop's default cross-attention index 2 is Q-Former layer 4.
        assert_eq!(q.cross_layer(2), Some(4));
        assert_eq!(q.cross_layer(6), None);
        assert_eq!(spec.qformer_act, Activation::Gelu);
        assert_eq!(spec.num_query_tokens, 32);
        assert_eq!(spec.tokens_per_image(), 32);
        let t = &spec.text;
        assert_eq!(
            (t.num_hidden_layers, t.hidden_size, t.num_attention_heads),
            (32, 4096, 32)
        );
        assert_eq!((t.intermediate_size, t.vocab_size), (11008, 32001));
        assert_eq!(t.rms_norm_eps, 1e-6);
        assert_eq!(spec.text_ids.pad_token_id, Some(-1));
        assert_eq!(
            spec.text_ids.eos_token_id.as_ref().map(OneOrMany::to_vec),
            Some(vec![1])
        );
        assert!(spec.text_ids.zero_to_two());
        assert_eq!(spec.image_token_index, None);
    }

    #[test]
    fn the_default_opt_language_model_is_refused() {
        let path = Path::new("config.json");
        let cfg: InstructBlipConfig = parse_json("{}", path).expect("parses");
        let err = InstructBlipSpec::from_config(&cfg, path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("text_config"), "{err}");
        let cfg: InstructBlipConfig =
            parse_json(r#"{"text_config": {"vocab_size": 10}}"#, path).expect("parses");
        let err = InstructBlipSpec::from_config(&cfg, path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("opt"), "{err}");
    }

    #[test]
    fn relative_positions_are_refused() {
        let path = Path::new("config.json");
        let cfg: InstructBlipConfig = parse_json(
            r#"{"text_config": {"model_type": "llama"},
                "qformer_config": {"position_embedding_type": "relative_key"}}"#,
            path,
        )
        .expect("parses");
        let err = InstructBlipSpec::from_config(&cfg, path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("position_embedding_type"), "{err}");
    }

    #[test]
    fn blip_preprocessor_defaults() {
        let path = Path::new("preprocessor_config.json");
        let cfg: BlipPreprocessorConfig = parse_json("{}", path).expect("parses");
        assert!(matches!(
            cfg.size,
            SizeSpec::Dict {
                height: Some(384),
                width: Some(384),
                ..
            }
        ));
        assert_eq!(cfg.resample, 3);
        assert_eq!(cfg.image_mean, CLIP_MEAN.to_vec());
    }
}

//! Hugging Face configuration files of a LLaVA-1.5 checkpoint, mirrored with serde.
//!
//! The structs follow the JSON that `save_pretrained` writes. Fields the file may omit get the
//! defaults transformers applies (`LlavaConfig`, `CLIPVisionConfig`, `LlamaConfig`,
//! `CLIPImageProcessor`), so a minimal hub config such as `llava-hf/llava-1.5-7b-hf`'s loads
//! exactly as transformers reads it.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{ModelError, Result};

/// Reads a JSON file into `T`, naming the file and the offending field on failure.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelError::NotFound {
            what: "file",
            path: path.to_path_buf(),
        },
        _ => ModelError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    parse_json(&text, path)
}

/// Parses JSON text into `T`; `path` is only used in the error message.
pub fn parse_json<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        let message = if field.is_empty() || field == "." {
            inner.to_string()
        } else {
            format!("field `{field}`: {inner}")
        };
        ModelError::Json {
            path: path.to_path_buf(),
            message,
        }
    })
}

/// One id or a list of ids (`eos_token_id` may be either in HF files).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl OneOrMany {
    /// The ids as a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            OneOrMany::One(id) => vec![*id],
            OneOrMany::Many(ids) => ids.clone(),
        }
    }
}

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
fn d_true() -> bool {
    true
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

fn d_vocab() -> usize {
    32000
}
fn d_llama_hidden() -> usize {
    4096
}
fn d_llama_inter() -> usize {
    11008
}
fn d_llama_layers() -> usize {
    32
}
fn d_llama_heads() -> usize {
    32
}
fn d_silu() -> String {
    "silu".into()
}
fn d_max_pos() -> usize {
    2048
}
fn d_rms_eps() -> f64 {
    1e-6
}
fn d_rope_theta() -> f64 {
    10000.0
}

/// `text_config` of a LLaVA checkpoint (`LlamaConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    /// `"llama"`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size (rows of the embedding).
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Width of the model.
    #[serde(default = "d_llama_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP.
    #[serde(default = "d_llama_inter")]
    pub intermediate_size: usize,
    /// Number of decoder layers.
    #[serde(default = "d_llama_layers")]
    pub num_hidden_layers: usize,
    /// Number of query heads.
    #[serde(default = "d_llama_heads")]
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// MLP activation.
    #[serde(default = "d_silu")]
    pub hidden_act: String,
    /// Longest sequence the model was trained for (informational).
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "d_rms_eps")]
    pub rms_norm_eps: f64,
    /// Rotary base.
    #[serde(default = "d_rope_theta")]
    pub rope_theta: f64,
    /// Rotary scaling; only absent / `"default"` is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Whether q/k/v/o projections have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Whether the LM head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        // An empty JSON object yields exactly transformers' LlamaConfig() defaults.
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("defaults always parse"))
    }
}

impl LlamaConfig {
    /// Key/value heads after defaulting.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Per-head width after defaulting.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
}

/// An activation named as transformers' `ACT2FN` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: `"gelu"`.
    Gelu,
    /// tanh-approximated GELU: `"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`.
    GeluTanh,
    /// `x * sigmoid(1.702 x)`: `"quick_gelu"`.
    QuickGelu,
    /// `x * sigmoid(x)`: `"silu"` / `"swish"`.
    Silu,
    /// `"relu"`.
    Relu,
}

impl Activation {
    /// Parses an HF activation name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            "relu" => Self::Relu,
            _ => return None,
        })
    }
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

/// A size field of `preprocessor_config.json`: `{"shortest_edge": n}`, `{"height", "width"}`
/// or a bare integer (older files).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    /// A bare integer.
    Int(u32),
    /// A dictionary.
    Dict {
        /// Resize the shorter side to this.
        #[serde(default)]
        shortest_edge: Option<u32>,
        /// Target height.
        #[serde(default)]
        height: Option<u32>,
        /// Target width.
        #[serde(default)]
        width: Option<u32>,
    },
}

fn d_size() -> SizeSpec {
    SizeSpec::Dict {
        shortest_edge: Some(224),
        height: None,
        width: None,
    }
}
fn d_crop() -> SizeSpec {
    SizeSpec::Dict {
        shortest_edge: None,
        height: Some(224),
        width: Some(224),
    }
}
fn d_resample() -> u32 {
    3
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}
/// OpenAI CLIP's per-channel mean (the `CLIPImageProcessor` default).
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's per-channel standard deviation (the `CLIPImageProcessor` default).
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

fn d_mean() -> Vec<f64> {
    CLIP_MEAN.to_vec()
}
fn d_std() -> Vec<f64> {
    CLIP_STD.to_vec()
}

/// `preprocessor_config.json` (`CLIPImageProcessor`).
#[derive(Debug, Clone, Deserialize)]
pub struct PreprocessorConfig {
    /// Class name written by transformers.
    #[serde(default)]
    pub image_processor_type: Option<String>,
    /// Resize at all.
    #[serde(default = "d_true")]
    pub do_resize: bool,
    /// Resize target.
    #[serde(default = "d_size")]
    pub size: SizeSpec,
    /// PIL resample filter id (2 = bilinear, 3 = bicubic).
    #[serde(default = "d_resample")]
    pub resample: u32,
    /// Centre-crop at all.
    #[serde(default = "d_true")]
    pub do_center_crop: bool,
    /// Crop size.
    #[serde(default = "d_crop")]
    pub crop_size: SizeSpec,
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

/// `generation_config.json`; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationConfig {
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<OneOrMany>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `config.json` of `llava-hf/llava-1.5-7b-hf`: most fields are left to transformers'
    /// defaults, which this crate must apply the same way.
    const LLAVA_7B: &str = r#"{
      "architectures": ["LlavaForConditionalGeneration"],
      "ignore_index": -100,
      "image_token_index": 32000,
      "model_type": "llava",
      "pad_token_id": 32001,
      "projector_hidden_act": "gelu",
      "text_config": {
        "_name_or_path": "lmsys/vicuna-7b-v1.5",
        "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "rms_norm_eps": 1e-05,
        "torch_dtype": "float16",
        "vocab_size": 32064
      },
      "tie_word_embeddings": false,
      "torch_dtype": "float16",
      "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000
      },
      "vision_feature_layer": -2,
      "vision_feature_select_strategy": "default",
      "vocab_size": 32064
    }"#;

    #[test]
    fn llava_7b_config_gets_transformers_defaults() {
        let path = Path::new("config.json");
        let cfg: LlavaConfig = parse_json(LLAVA_7B, path).expect("parses");
        let spec = LlavaSpec::from_config(&cfg, path).expect("valid");
        assert_eq!(spec.text.hidden_size, 4096);
        assert_eq!(spec.text.intermediate_size, 11008);
        assert_eq!(spec.text.num_hidden_layers, 32);
        assert_eq!(spec.text.num_attention_heads, 32);
        assert_eq!(spec.text.kv_heads(), 32);
        assert_eq!(spec.text.head_dim(), 128);
        assert_eq!(spec.text.rope_theta, 10000.0);
        assert_eq!(spec.text.rms_norm_eps, 1e-5);
        assert_eq!(spec.text.vocab_size, 32064);
        assert!(!spec.text.tie_word_embeddings);
        assert_eq!(spec.vision.layer_norm_eps, 1e-5);
        assert_eq!(spec.vision_act, Activation::QuickGelu);
        assert_eq!(spec.projector_act, Activation::Gelu);
        assert!(spec.projector_bias);
        assert_eq!(spec.feature_layers, vec![23]);
        assert_eq!(spec.vision_layers_needed(), 23);
        assert_eq!(spec.select, SelectStrategy::Default);
        assert_eq!(spec.image_tokens_per_image(), 576);
    }

    #[test]
    fn an_empty_config_gets_llava_1_5_shapes_but_is_refused() {
        // transformers' defaults: CLIP-L/336 vision tower, LLaMA-7B text model with 32,000
        // ids; the default image token 32000 then lies outside the vocabulary, which
        // transformers only discovers at the first forward.
        let path = Path::new("config.json");
        let cfg: LlavaConfig = parse_json("{}", path).expect("parses");
        let vision = cfg
            .vision_config
            .clone()
            .unwrap_or_else(ClipVisionConfig::llava_default);
        assert_eq!(
            (vision.hidden_size, vision.num_hidden_layers, vision.grid()),
            (1024, 24, 24)
        );
        let err = LlavaSpec::from_config(&cfg, path).unwrap_err().to_string();
        assert!(err.contains("image_token_index 32000"), "{err}");
    }

    #[test]
    fn out_of_range_feature_layer_is_refused() {
        let path = Path::new("config.json");
        let cfg: LlavaConfig =
            parse_json(r#"{"vision_feature_layer": -30}"#, path).expect("parses");
        let err = LlavaSpec::from_config(&cfg, path).unwrap_err().to_string();
        assert!(err.contains("vision_feature_layer -30"), "{err}");
    }

    #[test]
    fn rope_scaling_is_refused() {
        let path = Path::new("config.json");
        let cfg: LlavaConfig = parse_json(
            r#"{"text_config": {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}}"#,
            path,
        )
        .expect("parses");
        let err = LlavaSpec::from_config(&cfg, path).unwrap_err().to_string();
        assert!(err.contains("rope_scaling"), "{err}");
    }
}

//! Hugging Face configuration files, mirrored with serde: the parts every model family shares
//! (JSON reading with named errors, activations, `preprocessor_config.json`,
//! `generation_config.json`). Each family's own `config.json` lives in its folder
//! (`llava/config.rs`, `clip/config.rs`, `llama/config.rs`, `instructblip/config.rs`) and is
//! re-exported here.
//!
//! The structs follow the JSON that `save_pretrained` writes. Fields the file may omit get the
//! defaults transformers applies, so a minimal hub config such as `llava-hf/llava-1.5-7b-hf`'s
//! loads exactly as transformers reads it.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{ModelError, Result};

pub use crate::clip::config::ClipVisionConfig;
pub use crate::llama::config::LlamaConfig;
pub use crate::llava::config::{FeatureLayer, LlavaConfig, LlavaSpec, SelectStrategy};

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

pub(crate) fn d_true() -> bool {
    true
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

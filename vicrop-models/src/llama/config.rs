//! `text_config` of a LLaVA or InstructBLIP checkpoint: the LLaMA / Vicuna decoder, with
//! transformers' defaults.

use serde::Deserialize;

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

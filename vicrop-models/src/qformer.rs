//! The InstructBLIP Q-Former (`InstructBlipQFormerModel` with the learned query tokens).
//!
//! A BERT encoder over `[queries, instruction tokens]`: the instruction's word-piece embeddings
//! plus absolute position embeddings (positions from 0; the queries have none) are appended to
//! the learned query tokens and the whole sequence is layer-normed. Every layer runs
//! post-norm self-attention over the whole sequence; on layers `i` with
//! `i % cross_attention_frequency == 0` the query positions then cross-attend to the image
//! states; finally query positions go through the query feed-forward branch
//! (`intermediate_query` / `output_query`) and text positions through the text branch
//! (`intermediate` / `output`). The output is the query positions' last hidden state.
//!
//! One cross-attention (by its index among the cross-attention layers, as transformers'
//! `qformer_outputs.cross_attentions` counts them) can be *probed*: its post-softmax
//! probabilities are computed explicitly in f32 and handed out, optionally as an autodiff leaf
//! tapped into the forward ([`crate::nn::grad_tap`]), so that gradients with respect to it can
//! be read.
//! Every other attention goes through [`crate::kernels::attention`].

use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::config::Activation;
use crate::error::{ModelError, Result};
use crate::instructblip::config::QFormerConfig;
use crate::nn::{activate, grad_tap, softmax_f32, LayerNorm, Linear, LoadCtx};

/// Multi-head attention followed by BERT's `dense -> + residual -> LayerNorm` output.
#[derive(Module, Debug)]
struct QAttention<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    dense: Linear<B>,
    ln: LayerNorm<B>,
}

impl<B: Backend> QAttention<B> {
    /// Loads `{prefix}.attention.{query,key,value}` and `{prefix}.output.{dense,LayerNorm}`;
    /// keys and values read `d_kv`-wide states.
    fn load(ctx: &LoadCtx<B>, prefix: &str, d: usize, d_kv: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            query: Linear::load(ctx, &format!("{prefix}.attention.query"), d, d, true)?,
            key: Linear::load(ctx, &format!("{prefix}.attention.key"), d_kv, d, true)?,
            value: Linear::load(ctx, &format!("{prefix}.attention.value"), d_kv, d, true)?,
            dense: Linear::load(ctx, &format!("{prefix}.output.dense"), d, d, true)?,
            ln: LayerNorm::load(ctx, &format!("{prefix}.output.LayerNorm"), d, eps)?,
        })
    }

    /// `x: [n, t, d]` attends to `kv: [n, s, d_kv]` -> (`[n, t, d]`, probabilities
    /// `[n, heads, t, s]` in f32 when `probe`).
    ///
    /// No mask: InstructBLIP's masks are all ones for one unpadded instruction.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        kv: Tensor<B, 3>,
        heads: usize,
        probe: Option<bool>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let [n, t, d] = x.dims();
        let s = kv.dims()[1];
        let hd = d / heads;
        let q = self
            .query
            .forward(x.clone())
            .reshape([n, t, heads, hd])
            .swap_dims(1, 2); // [n, h, t, hd]
        let k = self
            .key
            .forward(kv.clone())
            .reshape([n, s, heads, hd])
            .swap_dims(1, 2); // [n, h, s, hd]
        let v = self
            .value
            .forward(kv)
            .reshape([n, s, heads, hd])
            .swap_dims(1, 2); // [n, h, s, hd]
        let (ctx, probs) = match probe {
            Some(grad_leaf) => {
                // transformers divides the scores by sqrt(head_dim) after the product.
                let scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt(); // [n, h, t, s]
                let probs = softmax_f32(scores);
                // Under `grad_leaf` the handed-out probabilities are a leaf tapped into the
                // forward: their gradient is read, paths upstream of them stay complete.
                let (used, probs) = if grad_leaf {
                    grad_tap(probs)
                } else {
                    (probs.clone(), probs)
                };
                let ctx = used.cast(v.dtype()).matmul(v); // [n, h, t, hd]
                (ctx.swap_dims(1, 2).reshape([n, t, d]), Some(probs))
            }
            None => (crate::kernels::attention(q, k, v, false), None),
        }; // [n, t, d]
        (self.ln.forward(self.dense.forward(ctx) + x), probs)
    }
}

/// BERT's feed-forward block: `LayerNorm(dense_out(act(dense_in(x))) + x)`.
#[derive(Module, Debug)]
struct FeedForward<B: Backend> {
    dense_in: Linear<B>,
    dense_out: Linear<B>,
    ln: LayerNorm<B>,
}

impl<B: Backend> FeedForward<B> {
    /// Loads `{prefix_in}.dense` and `{prefix_out}.{dense,LayerNorm}`.
    fn load(
        ctx: &LoadCtx<B>,
        prefix_in: &str,
        prefix_out: &str,
        d: usize,
        inter: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            dense_in: Linear::load(ctx, &format!("{prefix_in}.dense"), d, inter, true)?,
            dense_out: Linear::load(ctx, &format!("{prefix_out}.dense"), inter, d, true)?,
            ln: LayerNorm::load(ctx, &format!("{prefix_out}.LayerNorm"), d, eps)?,
        })
    }

    /// `x: [n, t, d] -> [n, t, d]`.
    fn forward(&self, act: Activation, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let y = self
            .dense_out
            .forward(activate(act, self.dense_in.forward(x.clone())));
        self.ln.forward(y + x)
    }
}

#[derive(Module, Debug)]
struct QLayer<B: Backend> {
    self_attn: QAttention<B>,
    cross_attn: Option<QAttention<B>>,
    ffn_text: FeedForward<B>,
    ffn_query: FeedForward<B>,
}

/// Which cross-attention to hand out during a Q-Former forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossProbe {
    /// Index among the cross-attention layers (0-based; ViCrop's default 2 is layer 4 when
    /// `cross_attention_frequency` is 2).
    pub index: usize,
    /// Make the probed probabilities an autodiff leaf (on an autodiff backend).
    pub grad_leaf: bool,
}

/// What a Q-Former forward returns.
#[derive(Debug, Clone)]
pub struct QFormerOutput<B: Backend> {
    /// Last hidden state of the query positions, `[n, queries, d]`.
    pub queries: Tensor<B, 3>,
    /// The probed cross-attention probabilities, `[n, heads, queries, image tokens]`, f32.
    pub cross: Option<Tensor<B, 4>>,
}

/// The Q-Former with its learned query tokens.
#[derive(Module, Debug)]
pub struct QFormer<B: Backend> {
    #[module(skip)]
    cfg: QFormerConfig,
    #[module(skip)]
    act: Activation,
    /// `[queries, d]`.
    query_tokens: Tensor<B, 2>,
    /// `[vocab, d]`.
    word_embeddings: Tensor<B, 2>,
    /// `[max_positions, d]`.
    position_embeddings: Tensor<B, 2>,
    emb_ln: LayerNorm<B>,
    layers: Vec<QLayer<B>>,
}

impl<B: Backend> QFormer<B> {
    /// Loads `query_tokens` (`[1, n_queries, d]`) and the Q-Former under `prefix`
    /// (`qformer`). `cfg.encoder_hidden_size` must be resolved (the vision width).
    pub fn load(
        ctx: &LoadCtx<B>,
        query_tokens_name: &str,
        prefix: &str,
        cfg: &QFormerConfig,
        act: Activation,
        n_queries: usize,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let d_kv = cfg.encoder_hidden_size.unwrap_or(d);
        let eps = cfg.layer_norm_eps;
        let inter = cfg.intermediate_size;
        let query_tokens: Tensor<B, 3> = ctx.tensor(query_tokens_name, [1, n_queries, d])?;
        let emb = format!("{prefix}.embeddings");
        let word_embeddings = ctx.tensor(
            &format!("{emb}.word_embeddings.weight"),
            [cfg.vocab_size, d],
        )?;
        let position_embeddings = ctx.tensor(
            &format!("{emb}.position_embeddings.weight"),
            [cfg.max_position_embeddings, d],
        )?;
        // A non-persistent buffer in transformers; older checkpoints may still carry it.
        ctx.ckpt.skip(&format!("{emb}.position_ids"));
        let emb_ln = LayerNorm::load(ctx, &format!("{emb}.layernorm"), d, eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lp = format!("{prefix}.encoder.layer.{i}");
            let cross_attn = if cfg.has_cross_attention(i) {
                Some(QAttention::load(
                    ctx,
                    &format!("{lp}.crossattention"),
                    d,
                    d_kv,
                    eps,
                )?)
            } else {
                None
            };
            layers.push(QLayer {
                self_attn: QAttention::load(ctx, &format!("{lp}.attention"), d, d, eps)?,
                cross_attn,
                ffn_text: FeedForward::load(
                    ctx,
                    &format!("{lp}.intermediate"),
                    &format!("{lp}.output"),
                    d,
                    inter,
                    eps,
                )?,
                ffn_query: FeedForward::load(
                    ctx,
                    &format!("{lp}.intermediate_query"),
                    &format!("{lp}.output_query"),
                    d,
                    inter,
                    eps,
                )?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            act,
            query_tokens: query_tokens.reshape([n_queries, d]),
            word_embeddings,
            position_embeddings,
            emb_ln,
            layers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &QFormerConfig {
        &self.cfg
    }

    /// Number of learned query tokens.
    pub fn num_queries(&self) -> usize {
        self.query_tokens.dims()[0]
    }

    /// Number of layers with cross-attention.
    pub fn num_cross_layers(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.cross_attn.is_some())
            .count()
    }

    /// Layer-normed embeddings of `[queries, instruction]` for `n` images.
    ///
    /// `ids` (the instruction's word-piece ids, `[CLS] ... [SEP]`) -> `[n, queries + len, d]`.
    pub fn embed(&self, ids: &[u32], n: usize) -> Result<Tensor<B, 3>> {
        let d = self.cfg.hidden_size;
        let nq = self.num_queries();
        let vocab = self.cfg.vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::InvalidInput(format!(
                "Q-Former token id {bad} is outside its vocabulary ({vocab} ids)"
            )));
        }
        let max = self.cfg.max_position_embeddings;
        if ids.len() > max {
            return Err(ModelError::InvalidInput(format!(
                "the instruction has {} Q-Former tokens; the Q-Former takes at most {max}",
                ids.len()
            )));
        }
        let queries = self.query_tokens.clone(); // [nq, d]
        let x = if ids.is_empty() {
            queries
        } else {
            let device = self.word_embeddings.device();
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(
                    ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    [ids.len()],
                ),
                &device,
            );
            let text = self.word_embeddings.clone().select(0, idx)
                + self.position_embeddings.clone().narrow(0, 0, ids.len()); // [len, d]
            Tensor::cat(vec![queries, text], 0)
        };
        let t = nq + ids.len();
        Ok(self.emb_ln.forward(x).reshape([1, t, d]).expand([n, t, d]))
    }

    /// Runs the Q-Former for `n` images.
    ///
    /// `image: [n, image tokens, d_vision]`, `ids`: the instruction ->
    /// queries `[n, queries, d]` and, when probed, the cross-attention
    /// `[n, heads, queries, image tokens]` (f32).
    pub fn forward(
        &self,
        image: Tensor<B, 3>,
        ids: &[u32],
        probe: Option<CrossProbe>,
    ) -> Result<QFormerOutput<B>> {
        let [n, _, dv] = image.dims();
        let d_kv = self.cfg.encoder_hidden_size.unwrap_or(self.cfg.hidden_size);
        if dv != d_kv {
            return Err(ModelError::InvalidInput(format!(
                "image states are {dv} wide; the Q-Former cross-attends to {d_kv}-wide states"
            )));
        }
        if let Some(p) = probe {
            let n_cross = self.num_cross_layers();
            if p.index >= n_cross {
                return Err(ModelError::InvalidInput(format!(
                    "cross-attention index {} is out of range: the Q-Former has {n_cross} \
                     cross-attention layers (0..={})",
                    p.index,
                    n_cross.saturating_sub(1)
                )));
            }
        }
        let heads = self.cfg.num_attention_heads;
        let nq = self.num_queries();
        let mut x = self.embed(ids, n)?; // [n, nq + len, d]
        let t = x.dims()[1];
        let last = self.layers.len().saturating_sub(1);
        let mut cross_seen = 0;
        let mut cross_out = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let (attn, _) = layer.self_attn.forward(x.clone(), x, heads, None); // [n, t, d]
            let mut query = attn.clone().narrow(1, 0, nq); // [n, nq, d]
            if let Some(cross) = &layer.cross_attn {
                let want = probe.filter(|p| p.index == cross_seen).map(|p| p.grad_leaf);
                let (y, probs) = cross.forward(query, image.clone(), heads, want);
                query = y;
                if probs.is_some() {
                    cross_out = probs;
                }
                cross_seen += 1;
            }
            let query = layer.ffn_query.forward(self.act, query);
            // The text positions of the last layer feed nothing that is returned.
            x = if t > nq && i < last {
                let text = layer.ffn_text.forward(self.act, attn.narrow(1, nq, t - nq));
                Tensor::cat(vec![query, text], 1)
            } else {
                query
            };
        }
        Ok(QFormerOutput {
            queries: x.narrow(1, 0, nq),
            cross: cross_out,
        })
    }
}

//! The LLaMA decoder (Vicuna in LLaVA-1.5): RMSNorm, rotary embeddings in transformers'
//! `rotate_half` convention, grouped-query attention, SwiGLU MLP, a KV cache, and an optional
//! *probe* that hands out the last query's attention probabilities at one layer.
//!
//! The probe is the ViCrop primitive: only one attention row of one layer is ever read, so it
//! is computed explicitly (and in f32) while every other row and layer goes through the fused
//! attention kernel without materialising probabilities. The probed row also feeds the layer's
//! output, so under an autodiff backend gradients with respect to it are exactly the
//! reference's `d v / d attn[layer][:, L-1, :]`.

pub mod config;

use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    DType, Int, Tensor, TensorData,
};

use burn::module::Module;

use crate::config::{Activation, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::kernels;
use crate::nn::{grad_tap, Linear, LoadCtx, Projections, RmsNorm};

/// Vocabulary entries per LM-head block when a gradient flows through the LM head
/// ([`Llama::top_log_prob`]).
pub const VOCAB_BLOCK: usize = 2048;

#[derive(Module, Debug)]
struct DecoderLayer<B: Backend> {
    input_norm: RmsNorm<B>,
    /// q, k and v.
    qkv: Projections<B>,
    o: Linear<B>,
    post_norm: RmsNorm<B>,
    /// The MLP's gate and up projections.
    gate_up: Projections<B>,
    down: Linear<B>,
}

/// Positions by which a layer's key and value buffers grow: a decoding step writes its
/// position in place, and only every `CACHE_STEP`-th step or so moves the cache to a larger
/// buffer (instead of concatenating, which copies the whole cache at every step).
pub const CACHE_STEP: usize = 64;

/// One layer's keys and values: buffers `[b, kv_heads, capacity, head_dim]` whose first `len`
/// positions hold data.
#[derive(Debug, Clone)]
struct LayerKv<B: Backend> {
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    len: usize,
}

impl<B: Backend> LayerKv<B> {
    /// The cached positions, as views of the buffers.
    fn views(&self) -> (Tensor<B, 4>, Tensor<B, 4>) {
        (
            self.k.clone().narrow(2, 0, self.len),
            self.v.clone().narrow(2, 0, self.len),
        )
    }
}

/// Room for `need` positions and up to [`CACHE_STEP`] more.
fn capacity_for(need: usize) -> usize {
    (need / CACHE_STEP + 1) * CACHE_STEP
}

/// `x [b, h, n, d]` followed by zeros up to `capacity` positions.
fn with_room<B: Backend>(x: Tensor<B, 4>, capacity: usize) -> Tensor<B, 4> {
    let [b, h, n, d] = x.dims();
    let pad = Tensor::zeros([b, h, capacity - n, d], (&x.device(), x.dtype()));
    Tensor::cat(vec![x, pad], 2)
}

/// Per-layer keys and values of the positions processed so far.
///
/// Each layer keeps preallocated buffers and writes new positions into them in place
/// (`slice_assign` on a buffer this cache alone holds; a clone shares the buffers and the
/// first write to a shared one copies it, so clones never see each other's positions).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<LayerKv<B>>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            len: 0,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the first `len` positions (e.g. a shared `[BOS, image]` prefix). The
    /// buffers keep their size; later positions are overwritten by the next forward.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for layer in self.layers.iter_mut().flatten() {
            layer.len = layer.len.min(len);
        }
        self.len = len;
    }

    /// Number of leading layers that hold keys (a forward that stopped early leaves the later
    /// ones empty; such a cache can only feed forwards that stop at or before that depth).
    pub fn depth(&self) -> usize {
        self.layers.iter().take_while(|l| l.is_some()).count()
    }

    /// Appends `k`, `v` (`[b, kv_heads, t, head_dim]`) to layer `index` and returns all of its
    /// cached positions, new ones included, as views.
    fn append(
        &mut self,
        index: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let t = k.dims()[2];
        let layer = match self.layers[index].take() {
            None => LayerKv {
                k: with_room(k, capacity_for(t)),
                v: with_room(v, capacity_for(t)),
                len: t,
            },
            Some(mut layer) => {
                let need = layer.len + t;
                if need > layer.k.dims()[2] {
                    let (pk, pv) = layer.views();
                    layer.k = with_room(pk, capacity_for(need));
                    layer.v = with_room(pv, capacity_for(need));
                }
                let [b, h, _, d] = k.dims();
                let at = [0..b, 0..h, layer.len..need, 0..d];
                layer.k = layer.k.slice_assign(at.clone(), k);
                layer.v = layer.v.slice_assign(at, v);
                layer.len = need;
                layer
            }
        };
        let views = layer.views();
        self.layers[index] = Some(layer);
        views
    }

    /// The same keys and values on an autodiff backend (not tracked: gradients stop here).
    pub fn lift<A: AutodiffBackend<InnerBackend = B>>(&self) -> KvCache<A> {
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|l| {
                    l.as_ref().map(|l| LayerKv {
                        k: Tensor::from_inner(l.k.clone()),
                        v: Tensor::from_inner(l.v.clone()),
                        len: l.len,
                    })
                })
                .collect(),
            len: self.len,
        }
    }
}

impl<A: AutodiffBackend> KvCache<A> {
    /// The same keys and values on the inner backend, off the autodiff graph (a prefix
    /// computed during a differentiated forward, kept for later plain forwards).
    pub fn inner(&self) -> KvCache<A::InnerBackend> {
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|l| {
                    l.as_ref().map(|l| LayerKv {
                        k: l.k.clone().inner(),
                        v: l.v.clone().inner(),
                        len: l.len,
                    })
                })
                .collect(),
            len: self.len,
        }
    }
}

/// Which attention row to hand out during a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Decoder layer (0-based).
    pub layer: usize,
    /// Stop after that layer: no later layer, no final norm (rel-att needs nothing more).
    pub stop_after: bool,
    /// Make the probed probabilities an autodiff leaf (on an autodiff backend), so that the
    /// gradient of any later quantity with respect to them can be read (grad-att).
    pub grad_leaf: bool,
}

impl Probe {
    /// Probe `layer` and stop there.
    pub fn stop_at(layer: usize) -> Self {
        Self {
            layer,
            stop_after: true,
            grad_leaf: false,
        }
    }

    /// Probe `layer` and run the whole model.
    pub fn through(layer: usize) -> Self {
        Self {
            layer,
            stop_after: false,
            grad_leaf: false,
        }
    }
}

/// What a decoder forward returns.
#[derive(Debug, Clone)]
pub struct DecoderOutput<B: Backend> {
    /// Final-norm hidden states of the new positions, `[t, d]`; `None` when stopped early.
    pub hidden: Option<Tensor<B, 2>>,
    /// Probed post-softmax attention of the last new position, `[heads, cached + t]`, f32.
    pub probe: Option<Tensor<B, 2>>,
}

/// The LLaMA decoder with its embedding and LM head.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    #[module(skip)]
    cfg: LlamaConfig,
    #[module(skip)]
    act: Activation,
    /// `[vocab, d]`.
    embed: Tensor<B, 2>,
    layers: Vec<DecoderLayer<B>>,
    norm: RmsNorm<B>,
    /// `[d, vocab]`.
    lm_head_t: Tensor<B, 2>,
    /// `[head_dim / 2]` rotary inverse frequencies, as transformers computes them in f32.
    #[module(skip)]
    inv_freq: Vec<f32>,
    /// Rotary `cos` and `sin` for the first [`ROPE_TABLE`] positions (or the model's
    /// maximum, if smaller), `[positions, head_dim]` in the compute dtype, made once at load
    /// time on the device: a forward reads its rows as a view instead of computing and
    /// uploading them.
    rope_cos: Tensor<B, 2>,
    rope_sin: Tensor<B, 2>,
}

/// Positions of the precomputed rotary table at most (4 MB in f32 at head dim 128); later
/// positions are computed per forward.
pub const ROPE_TABLE: usize = 8192;

/// Rotary `(cos, sin)` for positions `start..start + t`, `t x head_dim` values each in
/// transformers' layout (the frequencies repeated across the two halves), in f32.
fn rotary_values(inv_freq: &[f32], start: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
    let hd = 2 * inv_freq.len();
    let mut cos = Vec::with_capacity(t * hd);
    let mut sin = Vec::with_capacity(t * hd);
    for pos in start..start + t {
        for _ in 0..2 {
            for &f in inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (cos, sin)
}

impl<B: Backend> Llama<B> {
    /// Loads `{prefix}.model.*` and `{prefix}.lm_head.weight` (or ties it to the embedding).
    pub fn load(ctx: &LoadCtx<B>, prefix: &str, cfg: &LlamaConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let h = cfg.num_attention_heads;
        let kv = cfg.kv_heads();
        let hd = cfg.head_dim();
        let inter = cfg.intermediate_size;
        let act = Activation::parse(&cfg.hidden_act).unwrap_or(Activation::Silu);
        let embed: Tensor<B, 2> = ctx.tensor(
            &format!("{prefix}.model.embed_tokens.weight"),
            [cfg.vocab_size, d],
        )?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let fuse = crate::kernels::fuses_projections::<B>();
        for i in 0..cfg.num_hidden_layers {
            let lp = format!("{prefix}.model.layers.{i}");
            let eps = cfg.rms_norm_eps;
            let ab = cfg.attention_bias;
            let mb = cfg.mlp_bias;
            let qkv = vec![
                Linear::load(ctx, &format!("{lp}.self_attn.q_proj"), d, h * hd, ab)?,
                Linear::load(ctx, &format!("{lp}.self_attn.k_proj"), d, kv * hd, ab)?,
                Linear::load(ctx, &format!("{lp}.self_attn.v_proj"), d, kv * hd, ab)?,
            ];
            let gate_up = vec![
                Linear::load(ctx, &format!("{lp}.mlp.gate_proj"), d, inter, mb)?,
                Linear::load(ctx, &format!("{lp}.mlp.up_proj"), d, inter, mb)?,
            ];
            layers.push(DecoderLayer {
                input_norm: RmsNorm::load(ctx, &format!("{lp}.input_layernorm"), d, eps)?,
                qkv: Projections::new(qkv, fuse),
                o: Linear::load(ctx, &format!("{lp}.self_attn.o_proj"), h * hd, d, ab)?,
                post_norm: RmsNorm::load(ctx, &format!("{lp}.post_attention_layernorm"), d, eps)?,
                gate_up: Projections::new(gate_up, fuse),
                down: Linear::load(ctx, &format!("{lp}.mlp.down_proj"), inter, d, mb)?,
            });
            // Old checkpoints may carry precomputed rotary tables; they are derived here.
            ctx.ckpt
                .skip(&format!("{lp}.self_attn.rotary_emb.inv_freq"));
        }
        let norm = RmsNorm::load(ctx, &format!("{prefix}.model.norm"), d, cfg.rms_norm_eps)?;
        let head_name = format!("{prefix}.lm_head.weight");
        let lm_head_t = if cfg.tie_word_embeddings {
            ctx.ckpt.skip(&head_name);
            ctx.transposed(
                &format!("{prefix}.model.embed_tokens.weight"),
                &[cfg.vocab_size, d],
            )?
        } else {
            ctx.transposed(&head_name, &[cfg.vocab_size, d])?
        };
        let inv_freq: Vec<f32> = (0..hd / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / hd as f32;
                1.0 / (cfg.rope_theta as f32).powf(exponent)
            })
            .collect();
        let table = ROPE_TABLE.min(cfg.max_position_embeddings.max(1));
        let (cos, sin) = rotary_values(&inv_freq, 0, table);
        let on_device = |v: Vec<f32>| {
            Tensor::<B, 2>::from_data(
                TensorData::new(v, [table, hd]).convert_dtype(ctx.dtype),
                (ctx.device, ctx.dtype),
            )
        };
        Ok(Self {
            cfg: cfg.clone(),
            act,
            embed,
            layers,
            norm,
            lm_head_t,
            inv_freq,
            rope_cos: on_device(cos),
            rope_sin: on_device(sin),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// A fresh cache sized for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.layers.len())
    }

    /// Token embeddings. `ids` -> `[len, d]`.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Tensor<B, 2>> {
        let vocab = self.cfg.vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary ({vocab} ids)"
            )));
        }
        let device = self.embed.device();
        let data = TensorData::new(
            ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [ids.len()],
        );
        let idx = Tensor::<B, 1, Int>::from_data(data, &device);
        Ok(self.embed.clone().select(0, idx))
    }

    /// `log softmax(logits[last])[argmax]` as a scalar tensor (the quantity ViCrop's gradient
    /// methods differentiate), and the argmax. `hidden: [t, d]`, final-normed.
    ///
    /// The LM head runs in blocks of [`VOCAB_BLOCK`] vocabulary entries. The gradient of this
    /// value with respect to the hidden state is `W[top] - sum_i p_i W[i]` over the whole
    /// vocabulary, a sum with heavy cancellation; GPU matrix kernels accumulate such a
    /// reduction sequentially per output element, which cost 1e-4 of the gradient's maximum on
    /// the trained demo model under wgpu. In blocks, autodiff adds per-block partial sums, as a
    /// CPU BLAS does, and the gradient agrees with the reference's to 1e-5 on every backend.
    pub fn top_log_prob(&self, hidden: Tensor<B, 2>) -> Result<(Tensor<B, 1>, u32)> {
        let t = hidden.dims()[0];
        let last = hidden.narrow(0, t - 1, 1);
        let vocab = self.lm_head_t.dims()[1];
        let blocks: Vec<Tensor<B, 2>> = (0..vocab)
            .step_by(VOCAB_BLOCK)
            .map(|start| {
                let width = VOCAB_BLOCK.min(vocab - start);
                last.clone()
                    .matmul(self.lm_head_t.clone().narrow(1, start, width))
            })
            .collect();
        let logits = Tensor::cat(blocks, 1).cast(DType::F32); // [1, vocab]
        let top = argmax_host(logits.clone().detach())?;
        let logp = burn::tensor::activation::log_softmax(logits, 1);
        Ok((logp.narrow(1, top as usize, 1).reshape([1]), top))
    }

    /// LM head. `hidden: [t, d]` -> logits `[t, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        crate::kernels::linear(hidden, &self.lm_head_t)
    }

    /// Rotary tables for `t` positions from `start`: `(cos, sin)`, each `[1, 1, t, head_dim]`.
    fn rotary(
        &self,
        start: usize,
        t: usize,
        device: &B::Device,
        dtype: DType,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let hd = 2 * self.inv_freq.len();
        if start + t <= self.rope_cos.dims()[0] {
            let rows = |table: &Tensor<B, 2>| {
                let r = table.clone().narrow(0, start, t).reshape([1, 1, t, hd]);
                if r.dtype() == dtype {
                    r
                } else {
                    r.cast(dtype)
                }
            };
            return (rows(&self.rope_cos), rows(&self.rope_sin));
        }
        let (cos, sin) = rotary_values(&self.inv_freq, start, t);
        let make = |v: Vec<f32>| {
            Tensor::<B, 4>::from_data(
                TensorData::new(v, [1, 1, t, hd]).convert_dtype(dtype),
                (device, dtype),
            )
        };
        (make(cos), make(sin))
    }

    /// Runs new positions through the decoder, appending their keys/values to `cache`.
    ///
    /// `x: [1, t, d]` (already embedded, image features spliced in).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        probe: Option<Probe>,
    ) -> Result<DecoderOutput<B>> {
        let [_, t, _] = x.dims();
        if t == 0 {
            return Err(ModelError::InvalidInput("empty input sequence".into()));
        }
        if let Some(p) = probe {
            if p.layer >= self.layers.len() {
                return Err(ModelError::InvalidInput(format!(
                    "layer {} is out of range: the language model has {} layers (0..={})",
                    p.layer,
                    self.layers.len(),
                    self.layers.len() - 1
                )));
            }
        }
        let n_layers = self.layers.len();
        let last_layer = match probe {
            Some(p) if p.stop_after => p.layer,
            _ => n_layers - 1,
        };
        if !cache.is_empty() && cache.depth() <= last_layer {
            return Err(ModelError::InvalidInput(format!(
                "the KV cache holds {} of {n_layers} layers (it comes from a forward that \
                 stopped early); this forward needs {}",
                cache.depth(),
                last_layer + 1
            )));
        }
        let start = cache.len;
        let device = x.device();
        let (cos, sin) = self.rotary(start, t, &device, x.dtype());
        let mut x = x;
        let mut probe_out = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let want = probe.filter(|p| p.layer == i);
            let (y, row) = self.layer(i, layer, x, cache, &cos, &sin, want);
            x = y;
            if want.is_some() {
                probe_out = row;
                if probe.is_some_and(|p| p.stop_after) {
                    // Later layers are not run: mark the cache as partial.
                    cache.len = start + t;
                    return Ok(DecoderOutput {
                        hidden: None,
                        probe: probe_out,
                    });
                }
            }
        }
        cache.len = start + t;
        let [_, t, d] = x.dims();
        let hidden = self.norm.forward(x).reshape([t, d]);
        Ok(DecoderOutput {
            hidden: Some(hidden),
            probe: probe_out,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        index: usize,
        layer: &DecoderLayer<B>,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        want_probe: Option<Probe>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 2>>) {
        let [b, t, _] = x.dims();
        let h = self.cfg.num_attention_heads;
        let kvh = self.cfg.kv_heads();
        let hd = self.cfg.head_dim();
        let y = layer.input_norm.forward(x.clone());
        let [q, k, v] = layer.qkv.forward(y);
        let q = q.reshape([b, t, h, hd]).swap_dims(1, 2);
        let k = k.reshape([b, t, kvh, hd]).swap_dims(1, 2);
        let v = v.reshape([b, t, kvh, hd]).swap_dims(1, 2);
        let q = kernels::rotary(q, cos, sin);
        let k = kernels::rotary(k, cos, sin);
        let (k, v) = cache.append(index, k, v);
        let s = k.dims()[2];
        let k = repeat_kv(k, h / kvh);
        let v = repeat_kv(v, h / kvh);
        // One new position sees every cached key: no mask to build.
        let causal = t > 1;
        let (ctx, row) = if let Some(probe) = want_probe {
            // Rows 0..t-1 see keys 0..s-1 (causal, bottom-right aligned); the last row is
            // computed explicitly so its probabilities can be handed out.
            let q_last = q.clone().narrow(2, t - 1, 1);
            let scale = (hd as f64).powf(-0.5);
            // [h, s], f32. Under `grad_leaf` the handed-out row is an autodiff leaf tapped into
            // the forward (see `grad_tap`: gradients upstream of it stay complete).
            let row = kernels::attention_row(q_last, k.clone(), scale).reshape([h, s]);
            let (used, row) = if probe.grad_leaf {
                grad_tap(row)
            } else {
                (row.clone(), row)
            };
            let probs = used.reshape([b, h, 1, s]);
            let last = probs
                .clone()
                .cast(v.dtype())
                .matmul(v.clone()) // [b, h, 1, hd]
                .swap_dims(1, 2)
                .reshape([b, 1, h * hd]);
            let ctx = if t > 1 {
                let rest = kernels::attention(
                    q.narrow(2, 0, t - 1),
                    k.narrow(2, 0, s - 1),
                    v.narrow(2, 0, s - 1),
                    causal,
                );
                Tensor::cat(vec![rest, last], 1)
            } else {
                last
            };
            (ctx, Some(row))
        } else {
            (kernels::attention(q, k, v, causal), None)
        }; // [b, t, h * hd]
        let x = x + layer.o.forward(ctx);
        let y = layer.post_norm.forward(x.clone());
        let [gate, up] = layer.gate_up.forward(y);
        let y = layer
            .down
            .forward(kernels::gated_product(self.act, gate, up));
        (x + y, row)
    }
}

/// `[b, kv, s, hd]` -> `[b, kv * n, s, hd]`, each key/value head repeated `n` times in place.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
    if n == 1 {
        return x;
    }
    let [b, kv, s, hd] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, n, s, hd])
        .reshape([b, kv * n, s, hd])
}

/// Index of the largest logit (first on ties, NaN ignored), computed on the host.
/// `logits: [1, vocab]`.
pub fn argmax_host<B: Backend>(logits: Tensor<B, 2>) -> Result<u32> {
    let values: Vec<f32> = logits
        .cast(DType::F32)
        .into_data()
        .to_vec()
        .map_err(|e| ModelError::InvalidInput(format!("cannot read logits: {e:?}")))?;
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in values.into_iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i as u32)
        .ok_or_else(|| ModelError::InvalidInput("all logits are NaN".into()))
}

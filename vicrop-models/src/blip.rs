//! The BLIP / EVA vision transformer of InstructBLIP (`InstructBlipVisionModel`).
//!
//! Patch embedding (a stride-`p` convolution with bias, computed as one matmul over unfolded
//! patches), a learned class embedding and position embeddings (no pre-norm), then pre-norm
//! encoder layers whose attention uses one fused `qkv` projection (its bias, when
//! `qkv_bias`, is `cat(q_bias, 0, v_bias)`: stored whole as `qkv.bias` by transformers, or as
//! `q_bias` / `v_bias` in the LAVIS layout), a `projection`, and an
//! `fc1 -> act -> fc2` MLP; finally `post_layernorm` over every token. The output is that
//! post-layernormed last hidden state, `[n, 1 + patches, d]`, which the Q-Former
//! cross-attends to.

use burn::module::Module;
use burn::tensor::{backend::Backend, module::attention, ops::AttentionModuleOptions, Tensor};

use crate::config::Activation;
use crate::error::{ModelError, Result};
use crate::instructblip::config::BlipVisionConfig;
use crate::nn::{activate, LayerNorm, Linear, LoadCtx};

#[derive(Module, Debug)]
struct BlipLayer<B: Backend> {
    ln1: LayerNorm<B>,
    /// Fused `[d, 3d]` projection, bias `cat(q_bias, 0, v_bias)`.
    qkv: Linear<B>,
    projection: Linear<B>,
    ln2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

impl<B: Backend> BlipLayer<B> {}

/// The fused attention bias `[3d]` under `prefix` (`...self_attn`).
///
/// transformers registers it as `qkv.bias` (built from `q_bias`, zeros and `v_bias` at init,
/// then stored whole); the original LAVIS layout stores `q_bias` and `v_bias` only, the key
/// bias being zero. Both load.
fn load_qkv_bias<B: Backend>(ctx: &LoadCtx<B>, prefix: &str, d: usize) -> Result<Tensor<B, 1>> {
    let fused = format!("{prefix}.qkv.bias");
    if ctx.ckpt.contains(&fused) || !ctx.ckpt.contains(&format!("{prefix}.q_bias")) {
        return ctx.tensor(&fused, [3 * d]);
    }
    let q_bias: Tensor<B, 1> = ctx.tensor(&format!("{prefix}.q_bias"), [d])?;
    let v_bias: Tensor<B, 1> = ctx.tensor(&format!("{prefix}.v_bias"), [d])?;
    let k_bias = q_bias.zeros_like();
    Ok(Tensor::cat(vec![q_bias, k_bias, v_bias], 0))
}

/// The vision transformer.
#[derive(Module, Debug)]
pub struct BlipVision<B: Backend> {
    #[module(skip)]
    cfg: BlipVisionConfig,
    #[module(skip)]
    act: Activation,
    /// `[3*p*p, d]`: the patch convolution as a matrix over (channel, row, column) patches.
    patch_t: Tensor<B, 2>,
    /// `[d]`.
    patch_bias: Tensor<B, 1>,
    /// `[d]`.
    class_embedding: Tensor<B, 1>,
    /// `[grid*grid + 1, d]`.
    position_embedding: Tensor<B, 2>,
    layers: Vec<BlipLayer<B>>,
    post_ln: LayerNorm<B>,
}

impl<B: Backend> BlipVision<B> {
    /// Loads the tower under `prefix` (`vision_model`).
    pub fn load(
        ctx: &LoadCtx<B>,
        prefix: &str,
        cfg: &BlipVisionConfig,
        act: Activation,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let t = cfg.tokens();
        let emb = format!("{prefix}.embeddings");
        let patch_t = ctx.transposed(&format!("{emb}.patch_embedding.weight"), &[d, 3, p, p])?;
        let patch_bias = ctx.tensor(&format!("{emb}.patch_embedding.bias"), [d])?;
        let class_embedding: Tensor<B, 3> =
            ctx.tensor(&format!("{emb}.class_embedding"), [1, 1, d])?;
        let position_embedding: Tensor<B, 3> =
            ctx.tensor(&format!("{emb}.position_embedding"), [1, t, d])?;
        let eps = cfg.layer_norm_eps;
        let inter = cfg.intermediate_size;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lp = format!("{prefix}.encoder.layers.{i}");
            let mut qkv = Linear::load(ctx, &format!("{lp}.self_attn.qkv"), d, 3 * d, false)?;
            if cfg.qkv_bias {
                qkv.bias = Some(load_qkv_bias(ctx, &format!("{lp}.self_attn"), d)?);
            }
            layers.push(BlipLayer {
                ln1: LayerNorm::load(ctx, &format!("{lp}.layer_norm1"), d, eps)?,
                qkv,
                projection: Linear::load(ctx, &format!("{lp}.self_attn.projection"), d, d, true)?,
                ln2: LayerNorm::load(ctx, &format!("{lp}.layer_norm2"), d, eps)?,
                fc1: Linear::load(ctx, &format!("{lp}.mlp.fc1"), d, inter, true)?,
                fc2: Linear::load(ctx, &format!("{lp}.mlp.fc2"), inter, d, true)?,
            });
        }
        let post_ln = LayerNorm::load(ctx, &format!("{prefix}.post_layernorm"), d, eps)?;
        Ok(Self {
            cfg: cfg.clone(),
            act,
            patch_t,
            patch_bias,
            class_embedding: class_embedding.reshape([d]),
            position_embedding: position_embedding.reshape([t, d]),
            layers,
            post_ln,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BlipVisionConfig {
        &self.cfg
    }

    /// Patch, class and position embeddings.
    ///
    /// `pixels: [n, 3, r, r]` with `r = image_size` -> `[n, grid*grid + 1, d]`.
    pub fn embed(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let [n, c, h, w] = pixels.dims();
        let r = self.cfg.image_size;
        if (c, h, w) != (3, r, r) {
            return Err(ModelError::InvalidInput(format!(
                "pixel values have shape [{n}, {c}, {h}, {w}]; the vision tower takes [n, 3, {r}, {r}]"
            )));
        }
        let p = self.cfg.patch_size;
        let g = self.cfg.grid();
        let d = self.cfg.hidden_size;
        // A convolution without padding ignores a ragged border: crop to g*p first.
        let pixels = pixels.narrow(2, 0, g * p).narrow(3, 0, g * p);
        // [n, 3, g, p, g, p] -> [n, g, g, 3, p, p] -> [n, g*g, 3*p*p]
        let patches = pixels
            .reshape([n, c, g, p, g, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n, g * g, c * p * p]);
        let patch_emb =
            patches.matmul(self.patch_t.clone().unsqueeze()) + self.patch_bias.clone().unsqueeze(); // [n, g*g, d]
        let class = self
            .class_embedding
            .clone()
            .reshape([1, 1, d])
            .expand([n, 1, d]);
        Ok(Tensor::cat(vec![class, patch_emb], 1) + self.position_embedding.clone().unsqueeze())
    }

    /// The post-layernormed last hidden state (`vision_outputs.last_hidden_state`).
    ///
    /// `pixels: [n, 3, r, r]` -> `[n, grid*grid + 1, d]`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let mut x = self.embed(pixels)?;
        for layer in &self.layers {
            x = self.layer(layer, x);
        }
        Ok(self.post_ln.forward(x))
    }

    /// One pre-norm encoder layer. `x: [n, t, d] -> [n, t, d]`.
    fn layer(&self, layer: &BlipLayer<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, t, d] = x.dims();
        let h = self.cfg.num_attention_heads;
        let hd = d / h;
        let y = layer.ln1.forward(x.clone());
        // [n, t, 3d] -> [n, t, 3, h, hd] -> [3, n, h, t, hd]
        let qkv = layer
            .qkv
            .forward(y)
            .reshape([n, t, 3, h, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([n, h, t, hd]);
        let (q, k, v) = (part(0), part(1), part(2));
        let ctx = attention(q, k, v, None, None, AttentionModuleOptions::default()); // [n, h, t, hd]
        let ctx = ctx.swap_dims(1, 2).reshape([n, t, d]);
        let x = x + layer.projection.forward(ctx);
        let y = layer.ln2.forward(x.clone());
        let y = layer.fc2.forward(activate(self.act, layer.fc1.forward(y)));
        x + y
    }
}

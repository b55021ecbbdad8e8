//! The CLIP vision transformer (`CLIPVisionModel`) as LLaVA uses it.
//!
//! Patch embedding (a stride-`p` convolution, computed as one matmul over unfolded patches),
//! a learned class embedding and position embeddings, `pre_layrnorm`, then pre-norm encoder
//! layers with quick-GELU MLPs. Only the layers up to the requested hidden state are built and
//! run; CLIP's `post_layernorm` only serves the pooled output, which LLaVA never reads.

pub mod config;

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::config::{Activation, ClipVisionConfig};
use crate::error::Result;
use crate::nn::{activate, LayerNorm, Linear, LoadCtx};

#[derive(Module, Debug)]
struct ClipLayer<B: Backend> {
    ln1: LayerNorm<B>,
    /// q, k and v side by side: `[d, 3d]`, one product per layer instead of three.
    qkv: Linear<B>,
    out: Linear<B>,
    ln2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// The vision tower, truncated after the deepest hidden state LLaVA reads.
#[derive(Module, Debug)]
pub struct ClipVision<B: Backend> {
    #[module(skip)]
    cfg: ClipVisionConfig,
    #[module(skip)]
    act: Activation,
    /// `[3*p*p, d]`: the patch convolution as a matrix over (channel, row, column) patches.
    patch_t: Tensor<B, 2>,
    /// `[d]`.
    class_embedding: Tensor<B, 1>,
    /// `[grid*grid + 1, d]`.
    position_embedding: Tensor<B, 2>,
    pre_ln: LayerNorm<B>,
    layers: Vec<ClipLayer<B>>,
}

impl<B: Backend> ClipVision<B> {
    /// Loads the tower under `prefix` (e.g. `vision_tower.vision_model`), building only the
    /// first `n_layers` encoder layers. Tensors of the skipped layers are marked as known.
    pub fn load(
        ctx: &LoadCtx<B>,
        prefix: &str,
        cfg: &ClipVisionConfig,
        act: Activation,
        n_layers: usize,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let c = cfg.num_channels;
        let g = cfg.grid();
        let patch_t = ctx.transposed(
            &format!("{prefix}.embeddings.patch_embedding.weight"),
            &[d, c, p, p],
        )?;
        let class_embedding = ctx.tensor(&format!("{prefix}.embeddings.class_embedding"), [d])?;
        let position_embedding = ctx.tensor(
            &format!("{prefix}.embeddings.position_embedding.weight"),
            [g * g + 1, d],
        )?;
        let eps = cfg.layer_norm_eps;
        let pre_ln = LayerNorm::load(ctx, &format!("{prefix}.pre_layrnorm"), d, eps)?;
        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let lp = format!("{prefix}.encoder.layers.{i}");
            let inter = cfg.intermediate_size;
            let proj =
                |name: &str| Linear::load(ctx, &format!("{lp}.self_attn.{name}"), d, d, true);
            layers.push(ClipLayer {
                ln1: LayerNorm::load(ctx, &format!("{lp}.layer_norm1"), d, eps)?,
                qkv: Linear::concat(vec![proj("q_proj")?, proj("k_proj")?, proj("v_proj")?]),
                out: Linear::load(ctx, &format!("{lp}.self_attn.out_proj"), d, d, true)?,
                ln2: LayerNorm::load(ctx, &format!("{lp}.layer_norm2"), d, eps)?,
                fc1: Linear::load(ctx, &format!("{lp}.mlp.fc1"), d, inter, true)?,
                fc2: Linear::load(ctx, &format!("{lp}.mlp.fc2"), inter, d, true)?,
            });
        }
        for i in n_layers..cfg.num_hidden_layers {
            ctx.ckpt
                .skip_prefix(&format!("{prefix}.encoder.layers.{i}."));
        }
        ctx.ckpt.skip_prefix(&format!("{prefix}.post_layernorm."));
        Ok(Self {
            cfg: cfg.clone(),
            act,
            patch_t,
            class_embedding,
            position_embedding,
            pre_ln,
            layers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    /// Embeddings after `pre_layrnorm` (= `hidden_states[0]`).
    ///
    /// `pixels: [n, c, r, r]` -> `[n, grid*grid + 1, d]`.
    pub fn embed(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, c, _, _] = pixels.dims();
        let p = self.cfg.patch_size;
        let g = self.cfg.grid();
        let d = self.cfg.hidden_size;
        // A convolution without padding ignores a ragged border: crop to g*p first.
        let pixels = pixels.narrow(2, 0, g * p).narrow(3, 0, g * p);
        // [n, c, g, p, g, p] -> [n, g, g, c, p, p] -> [n, g*g, c*p*p]
        let patches = pixels
            .reshape([n, c, g, p, g, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n, g * g, c * p * p]);
        let patch_emb = patches.matmul(self.patch_t.clone().unsqueeze()); // [n, g*g, d]
        let class = self
            .class_embedding
            .clone()
            .reshape([1, 1, d])
            .expand([n, 1, d]);
        let x =
            Tensor::cat(vec![class, patch_emb], 1) + self.position_embedding.clone().unsqueeze();
        self.pre_ln.forward(x)
    }

    /// Runs the embeddings and the first `upto` layers, returning `hidden_states[i]` for every
    /// requested index `i` (0 = embeddings), in the order asked.
    ///
    /// `pixels: [n, c, r, r]` -> each `[n, grid*grid + 1, d]`.
    pub fn hidden_states(&self, pixels: Tensor<B, 4>, wanted: &[usize]) -> Vec<Tensor<B, 3>> {
        let mut out: Vec<Option<Tensor<B, 3>>> = vec![None; wanted.len()];
        let mut x = self.embed(pixels);
        let deepest = wanted.iter().copied().max().unwrap_or(0);
        for depth in 0..=deepest {
            if depth > 0 {
                x = self.layer(&self.layers[depth - 1], x);
            }
            for (slot, &w) in out.iter_mut().zip(wanted) {
                if w == depth {
                    *slot = Some(x.clone());
                }
            }
        }
        out.into_iter().flatten().collect()
    }

    /// One pre-norm encoder layer. `x: [n, t, d] -> [n, t, d]`.
    fn layer(&self, layer: &ClipLayer<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, t, d] = x.dims();
        let h = self.cfg.num_attention_heads;
        let hd = d / h;
        let y = layer.ln1.forward(x.clone());
        // [n, t, 3d] -> [n, t, 3h, hd] -> three [n, h, t, hd] views, no copy.
        let qkv = layer.qkv.forward(y).reshape([n, t, 3 * h, hd]);
        let part = |i: usize| qkv.clone().narrow(2, i * h, h).swap_dims(1, 2);
        let (q, k, v) = (part(0), part(1), part(2));
        let ctx = crate::kernels::attention(q, k, v, false); // [n, t, d]
        let x = x + layer.out.forward(ctx);
        let y = layer.ln2.forward(x.clone());
        let y = layer.fc2.forward(activate(self.act, layer.fc1.forward(y)));
        x + y
    }
}

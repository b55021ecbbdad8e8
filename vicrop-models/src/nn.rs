//! Small building blocks shared by the vision tower and the language model.
//!
//! Modules are plain structs of tensors, built from checkpoint weights (never randomly
//! initialised first: a 7B model is loaded once, straight into its final tensors).

use burn::module::Module;
use burn::tensor::{activation, backend::Backend, DType, Tensor};

use crate::config::Activation;
use vicrop_core::{Meter, Stage};

use crate::error::{ModelError, Result};
use crate::weights::Checkpoint;

/// Where and in which dtype weights are materialised.
#[derive(Debug, Clone)]
pub struct LoadCtx<'a, B: Backend> {
    /// The checkpoint.
    pub ckpt: &'a Checkpoint,
    /// The device.
    pub device: &'a B::Device,
    /// Compute dtype of the weights.
    pub dtype: DType,
}

impl<B: Backend> LoadCtx<'_, B> {
    /// Loads `name` with the given shape.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        self.ckpt.load(name, shape, self.device, self.dtype)
    }

    /// Loads `name` stored with `shape` and returns it transposed to `[rest, shape[0]]`,
    /// contiguous.
    pub fn transposed(&self, name: &str, shape: &[usize]) -> Result<Tensor<B, 2>> {
        self.ckpt
            .load_transposed(name, shape, self.device, self.dtype)
    }
}

/// `y = x W^T + b`.
///
/// A burn [`Module`] (plain tensors are constant sub-modules: never trained, never randomly
/// initialised; [`Linear::load`] builds it straight from the checkpoint), so the autodiff copy
/// is burn's own [`burn::module::AutodiffModule::from_inner`].
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[in, out]`: stored transposed once at load time, so the forward is a plain matmul.
    pub weight_t: Tensor<B, 2>,
    /// `[out]`.
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    /// Loads `{prefix}.weight` (`[out, in]`) and, if `bias`, `{prefix}.bias`.
    pub fn load(
        ctx: &LoadCtx<B>,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight_t = ctx.transposed(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let bias = if bias {
            Some(ctx.tensor(&format!("{prefix}.bias"), [d_out])?)
        } else {
            None
        };
        Ok(Self { weight_t, bias })
    }

    /// Layers that read the same input, side by side as one: the output is the parts' outputs
    /// concatenated in order, from one product instead of several (CLIP's q/k/v projections).
    /// Either every part has a bias or none has.
    pub fn concat(parts: Vec<Self>) -> Self {
        let (weights, biases): (Vec<_>, Vec<_>) =
            parts.into_iter().map(|l| (l.weight_t, l.bias)).unzip();
        let biases: Option<Vec<_>> = biases.into_iter().collect();
        Self {
            weight_t: Tensor::cat(weights, 1),
            bias: biases.map(|b| Tensor::cat(b, 0)),
        }
    }

    /// `x: [.., T, in] -> [.., T, out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::kernels::affine(x, &self.weight_t, self.bias.as_ref())
    }
}

/// Several layers that read the same input (LLaMA's q/k/v, its gate and up): kept apart, or
/// fused into one product whose output is split into the parts' outputs, which are views.
///
/// The models fuse on the GPU backends ([`crate::kernels::fuses_projections`]): one wide
/// product per step, instead of several launches each too small to fill the device in a
/// decoding step. On the CPU they stay apart: burn-flex's one-row kernel streams the wider
/// weight more slowly (a decoding step measured 138 ms fused against 110 ms apart).
#[derive(Module, Debug)]
pub struct Projections<B: Backend> {
    /// The parts, or one layer holding them side by side.
    parts: Vec<Linear<B>>,
    /// Each part's output width.
    #[module(skip)]
    widths: Vec<usize>,
}

impl<B: Backend> Projections<B> {
    /// `parts` (each `[in, out_i]`, the same `in`), fused into one product if `fuse`.
    pub fn new(parts: Vec<Linear<B>>, fuse: bool) -> Self {
        let widths = parts.iter().map(|l| l.weight_t.dims()[1]).collect();
        let parts = if fuse && parts.len() > 1 {
            vec![Linear::concat(parts)]
        } else {
            parts
        };
        Self { parts, widths }
    }

    /// Whether the parts run as one product.
    pub fn is_fused(&self) -> bool {
        self.parts.len() != self.widths.len()
    }

    /// `x: [.., T, in] -> [[.., T, out_i]; N]`, one output per part, in order (`N` is the
    /// number of parts given to [`Projections::new`]). Fused, the outputs are views of one
    /// product's output.
    pub fn forward<const N: usize, const D: usize>(&self, x: Tensor<B, D>) -> [Tensor<B, D>; N] {
        debug_assert_eq!(N, self.widths.len());
        if !self.is_fused() {
            return std::array::from_fn(|i| self.parts[i].forward(x.clone()));
        }
        let y = self.parts[0].forward(x);
        let mut start = 0;
        std::array::from_fn(|i| {
            let part = y.clone().narrow(D - 1, start, self.widths[i]);
            start += self.widths[i];
            part
        })
    }
}

/// LayerNorm over the last axis (biased variance, as torch).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// `[d]`.
    pub weight: Tensor<B, 1>,
    /// `[d]`.
    pub bias: Tensor<B, 1>,
    /// Epsilon.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub fn load(ctx: &LoadCtx<B>, prefix: &str, d: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: ctx.tensor(&format!("{prefix}.weight"), [d])?,
            bias: ctx.tensor(&format!("{prefix}.bias"), [d])?,
            eps,
        })
    }

    /// `x: [.., d] -> [.., d]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::kernels::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// LLaMA's RMSNorm: `w * x / sqrt(mean(x^2) + eps)`, computed in f32.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[d]`.
    pub weight: Tensor<B, 1>,
    /// Epsilon.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Loads `{prefix}.weight`.
    pub fn load(ctx: &LoadCtx<B>, prefix: &str, d: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: ctx.tensor(&format!("{prefix}.weight"), [d])?,
            eps,
        })
    }

    /// `x: [.., d] -> [.., d]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::kernels::rms_norm(x, &self.weight, self.eps)
    }
}

/// Applies an activation element-wise (fused where [`crate::kernels::fused_activation`] can).
pub fn activate<B: Backend, const D: usize>(act: Activation, x: Tensor<B, D>) -> Tensor<B, D> {
    if let Some(y) = crate::kernels::fused_activation(act, &x) {
        return y;
    }
    match act {
        // Written out, not `activation::gelu`: burn 0.21 differentiates its GELU as the tanh
        // approximation, which skews input gradients (pure-grad) by ~1e-4.
        Activation::Gelu => x.clone() * ((x * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5,
        Activation::GeluTanh => activation::gelu_approximate(x),
        Activation::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
        Activation::Silu => activation::silu(x),
        Activation::Relu => activation::relu(x),
    }
}

/// Softmax over the last axis in f32, returned in f32 (attention probabilities for maps).
pub fn softmax_f32<B: Backend, const D: usize>(scores: Tensor<B, D>) -> Tensor<B, D> {
    activation::softmax(scores.cast(DType::F32), D - 1)
}

/// Taps an intermediate tensor for its gradient: returns `(used, leaf)` where `leaf` is a new
/// autodiff leaf holding `x`'s values and `used = x + (leaf - detach(leaf))` equals `x` exactly.
///
/// Feeding `used` forward makes `leaf.grad()` the gradient with respect to `x` (as torch's
/// `autograd.grad(loss, x)` for an intermediate `x`), while every path through `x`'s own
/// inputs stays in the graph, so that gradients with respect to tensors upstream of `x` (for
/// instance another tapped tensor) are complete. A plain `x.detach().require_grad()` would
/// cut those paths. On untracked inputs the extra path costs nothing in the backward pass; on
/// a backend without autodiff `used` is `x` plus zeros.
pub fn grad_tap<B: Backend, const D: usize>(x: Tensor<B, D>) -> (Tensor<B, D>, Tensor<B, D>) {
    let leaf = x.clone().detach().require_grad();
    let used = x + (leaf.clone() - leaf.clone().detach());
    (used, leaf)
}

/// Copies a tensor to the host as `f32` (the only device-to-host transfer of ViCrop's signals).
pub fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.cast(DType::F32)
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| crate::error::ModelError::InvalidInput(format!("cannot read a tensor: {e:?}")))
}

/// Counts one vision pass whose output is `encoded` and, once the device has finished it,
/// charges the time to [`Stage::Vision`] (see [`Meter`]'s timing protocol). The wait is one
/// device synchronisation, between the vision tower and the language model.
pub fn vision_lap<B: Backend, const D: usize>(
    meter: &mut Meter,
    encoded: &Tensor<B, D>,
) -> Result<()> {
    B::sync(&encoded.device()).map_err(|e| ModelError::Device(format!("{e:?}")))?;
    meter.vision(1);
    meter.lap(Stage::Vision);
    Ok(())
}

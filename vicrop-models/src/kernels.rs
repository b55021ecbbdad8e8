//! The operations the CPU backend does poorly at our shapes: a single row times a weight
//! matrix, attention over a few hundred positions, and the sigmoid-gated activations.
//!
//! **One row times a matrix.** Every generated token runs each linear layer and the LM head on
//! one row (`m = 1`). For that shape the `gemm` crate under burn-flex reaches about two thirds
//! of the memory bandwidth, and burn-flex multiplies bf16 by first converting both operands,
//! the whole weight included, to f32 on every call (about 150 ms for one `4096 x 11008`
//! projection, against 10 ms in f16). [`linear`] therefore computes `m = 1` products in f32
//! and bf16 on burn-flex itself: the weight is streamed once, in row blocks, a few per thread,
//! each accumulating a partial output row in f32 (widening bf16 rows as it goes), and the
//! partial rows are summed. f16 stays with gemm's kernels, which are faster there. Every other
//! shape, and every other backend (autodiff included, so gradients are untouched), goes to
//! burn's `matmul`.
//!
//! **Attention.** burn-flex 0.21's fused attention walks the `(batch, head)` pairs one after
//! the other on a single thread, and once `queries x keys` exceeds 256K scores (CLIP's 577
//! positions, a 600-token prefill) it switches to a tiled kernel made of many small products.
//! [`attention`] hands it independent pieces instead, in parallel on rayon's pool: one head
//! and a block of query rows each, the block small enough for burn-flex's untiled path. For a
//! causal block only the keys its rows can see are passed, which keeps the bottom-right
//! alignment exact and skips the masked tail. Rows are copied out of strided views directly
//! (burn-flex's generic strided copy walks them an element at a time), and the output comes
//! back with the heads already merged, `[b, t, h * d]`, the layout the output projection
//! reads. Other backends, and autodiff, get burn's `attention` unchanged.
//!
//! **Activations.** burn-flex builds quick-GELU (CLIP) and SiLU (LLaMA) out of three or four
//! full passes with a scalar `exp` each; [`fused_activation`] does one parallel pass, with
//! torch's formulas.
//!
//! `tools/bench_cpu.py`, `examples/llm_step.rs` and `examples/cpu_kernels.rs` measure them;
//! the numbers are in `docs/performance.md`.

use burn::tensor::{
    backend::Backend, module::attention as burn_attention, ops::AttentionModuleOptions, Tensor,
};

/// `x [.., k] · w [k, n] -> [.., n]` for a weight stored `[in, out]` (see [`crate::nn::Linear`]).
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, w: &Tensor<B, 2>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::row_times_matrix(&x, w) {
        return y;
    }
    x.matmul(w.clone().unsqueeze())
}

/// Scaled dot-product attention without mask, scaled by `1/sqrt(d)`, with the heads merged:
/// `q [b, h, tq, d]`, `k [b, h, tk, d]`, `v [b, h, tk, dv]` -> `[b, tq, h * dv]`.
///
/// `causal` aligns the mask bottom-right, as a KV cache needs: query `i` sees keys
/// `0..=i + tk - tq`. Same result as burn's `attention` (then `swap_dims(1, 2)` and a reshape)
/// up to the order of f32 sums. The inputs may be views, e.g. heads split off a projection
/// by `reshape` and `swap_dims`: on burn-flex their rows are copied out directly.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal: bool,
) -> Tensor<B, 3> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::parallel_attention(&q, &k, &v, causal) {
        return y;
    }
    let [b, h, tq, _] = q.dims();
    let dv = v.dims()[3];
    let options = AttentionModuleOptions {
        is_causal: causal,
        ..Default::default()
    };
    burn_attention(q, k, v, None, None, options)
        .swap_dims(1, 2)
        .reshape([b, tq, h * dv])
}

/// `act(x)` in one fused pass where the backend has one (burn-flex, f32, quick-GELU and SiLU);
/// `None` elsewhere, and [`crate::nn::activate`] composes it from burn's operations.
pub fn fused_activation<B: Backend, const D: usize>(
    act: crate::config::Activation,
    x: &Tensor<B, D>,
) -> Option<Tensor<B, D>> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::activation(act, x) {
        return Some(y);
    }
    let _ = (act, x);
    None
}

#[cfg(feature = "flex")]
mod flex {
    use std::any::{Any, TypeId};

    use burn::tensor::{
        backend::Backend, ops::AttentionModuleOptions, DType, Tensor, TensorData, TensorPrimitive,
    };
    use burn_flex::FlexTensor;
    use half::bf16;
    use half::slice::HalfFloatSliceExt;
    use rayon::prelude::*;

    use crate::config::Activation;

    /// The backend tensor behind `t` when `B` is burn-flex (not wrapped in autodiff). Other
    /// backends are told apart by type alone, without touching the tensor.
    fn as_flex<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<FlexTensor> {
        if TypeId::of::<B::FloatTensorPrimitive>() != TypeId::of::<FlexTensor>() {
            return None;
        }
        match t.clone().into_primitive() {
            TensorPrimitive::Float(p) => {
                let boxed: Box<dyn Any> = Box::new(p);
                boxed.downcast::<FlexTensor>().ok().map(|b| *b)
            }
            TensorPrimitive::QFloat(_) => None,
        }
    }

    fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Option<Tensor<B, D>> {
        let boxed: Box<dyn Any> = Box::new(t);
        let p = boxed.downcast::<B::FloatTensorPrimitive>().ok()?;
        Some(Tensor::from_primitive(TensorPrimitive::Float(*p)))
    }

    /// `Some(x · w)` when `x` is one row on burn-flex in the weight's dtype; `None` otherwise.
    pub(super) fn row_times_matrix<B: Backend, const D: usize>(
        x: &Tensor<B, D>,
        w: &Tensor<B, 2>,
    ) -> Option<Tensor<B, D>> {
        let dims = x.dims();
        let [k, n] = w.dims();
        if dims[..D - 1].iter().product::<usize>() != 1 || dims[D - 1] != k || n == 0 {
            return None;
        }
        let xf = as_flex(x)?;
        let wf = as_flex(w)?;
        let dtype = wf.dtype();
        if xf.dtype() != dtype {
            return None;
        }
        let xf = xf.to_contiguous();
        let y = match dtype {
            DType::F32 => product(xf.as_slice::<f32>()?, wf.as_slice::<f32>()?, n),
            DType::BF16 => product(
                &xf.as_slice::<bf16>()?.to_f32_vec(),
                wf.as_slice::<bf16>()?,
                n,
            ),
            // gemm's own f16 kernels are faster here than converting rows.
            _ => return None,
        };
        let mut shape = dims;
        shape[D - 1] = n;
        let data = TensorData::new(y, shape.to_vec()).convert_dtype(dtype);
        from_flex(FlexTensor::from_data(data))
    }

    /// burn-flex's limit on `queries x keys` for its untiled attention (`NAIVE_SCORE_BUDGET`).
    const UNTILED_SCORES: usize = 256 * 1024;

    /// Below this many multiply-adds (`b h tq tk d`) one call is cheaper than the split.
    const SPLIT_WORK: usize = 1 << 22;

    /// Elements per task of an element-wise kernel.
    const CHUNK: usize = 1 << 14;

    /// Rows `from..from + n` of head `(b, h)` of a `[b, h, t, d]` f32 view whose last axis is
    /// contiguous, copied out row by row into a `[1, 1, n, d]` tensor.
    fn head_rows(t: &FlexTensor, b: usize, h: usize, from: usize, n: usize) -> FlexTensor {
        let layout = t.layout();
        let s = layout.strides();
        let d = layout.shape()[3];
        let data = t.storage::<f32>();
        let base = layout.start_offset() as isize + b as isize * s[0] + h as isize * s[1];
        let mut out = Vec::with_capacity(n * d);
        for r in from..from + n {
            let at = (base + r as isize * s[2]) as usize;
            out.extend_from_slice(&data[at..at + d]);
        }
        FlexTensor::from_data(TensorData::new(out, vec![1, 1, n, d]))
    }

    /// A flex f32 view of `t` whose last axis is contiguous.
    fn rows_view<B: Backend>(t: &Tensor<B, 4>) -> Option<FlexTensor> {
        let f = as_flex(t)?;
        if f.dtype() != DType::F32 {
            return None;
        }
        Some(if f.layout().strides()[3] == 1 {
            f
        } else {
            f.to_contiguous()
        })
    }

    pub(super) fn parallel_attention<B: Backend>(
        q: &Tensor<B, 4>,
        k: &Tensor<B, 4>,
        v: &Tensor<B, 4>,
        causal: bool,
    ) -> Option<Tensor<B, 3>> {
        let [b, h, tq, d] = q.dims();
        let tk = k.dims()[2];
        let dv = v.dims()[3];
        if b * h * tq * tk * d < SPLIT_WORK || (causal && tk < tq) {
            return None;
        }
        let (qf, kf, vf) = (rows_view(q)?, rows_view(k)?, rows_view(v)?);
        // Query blocks of equal size, each small enough for the untiled path.
        let rows = tq.div_ceil(tq.div_ceil((UNTILED_SCORES / tk).max(1)));
        let options = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        let pieces: Vec<(usize, usize, usize)> = (0..b)
            .flat_map(|bi| (0..h).map(move |hi| (bi, hi)))
            .flat_map(|(bi, hi)| (0..tq).step_by(rows).map(move |start| (bi, hi, start)))
            .collect();
        let outputs: Vec<FlexTensor> = pieces
            .par_iter()
            .map(|&(bi, hi, start)| {
                let n = rows.min(tq - start);
                // A causal block sees the keys up to its last row's, no further.
                let keys = if causal { start + n + tk - tq } else { tk };
                burn_flex::ops::attention::attention(
                    head_rows(&qf, bi, hi, start, n),
                    head_rows(&kf, bi, hi, 0, keys),
                    head_rows(&vf, bi, hi, 0, keys),
                    None,
                    None,
                    options,
                )
            })
            .collect();
        // Each block's rows go to their heads' columns of `[b, tq, h * dv]`.
        let mut merged = vec![0f32; b * tq * h * dv];
        for (&(bi, hi, start), out) in pieces.iter().zip(&outputs) {
            let block = out.as_slice::<f32>()?;
            for (r, row) in block.chunks_exact(dv).enumerate() {
                let at = ((bi * tq + start + r) * h + hi) * dv;
                merged[at..at + dv].copy_from_slice(row);
            }
        }
        from_flex(FlexTensor::from_data(TensorData::new(
            merged,
            vec![b, tq, h * dv],
        )))
    }

    /// `act(x)` element-wise in one parallel pass, for f32 quick-GELU and SiLU (burn-flex
    /// composes them from three or four full passes with a scalar `exp` each). The formulas are
    /// torch's: `x * sigmoid(a x)` with `sigmoid(z) = 1 / (1 + exp(-z))`.
    pub(super) fn activation<B: Backend, const D: usize>(
        act: Activation,
        x: &Tensor<B, D>,
    ) -> Option<Tensor<B, D>> {
        let a: f32 = match act {
            Activation::QuickGelu => 1.702,
            Activation::Silu => 1.0,
            _ => return None,
        };
        let xf = as_flex(x)?;
        if xf.dtype() != DType::F32 {
            return None;
        }
        let xf = xf.to_contiguous();
        let src = xf.as_slice::<f32>()?;
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(o, s)| {
                for (o, &v) in o.iter_mut().zip(s) {
                    *o = v * (1.0 / (1.0 + (-(a * v)).exp()));
                }
            });
        from_flex(FlexTensor::from_data(TensorData::new(
            out,
            x.dims().to_vec(),
        )))
    }

    /// A weight element type, read as f32 a row at a time.
    trait Widen: Sized + Sync {
        /// Whether rows need a conversion buffer.
        const CONVERTS: bool;
        /// `row` as f32: itself, or converted into `buf`.
        fn widen<'a>(row: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];
    }

    impl Widen for f32 {
        const CONVERTS: bool = false;
        fn widen<'a>(row: &'a [f32], _buf: &'a mut [f32]) -> &'a [f32] {
            row
        }
    }

    impl Widen for bf16 {
        const CONVERTS: bool = true;
        fn widen<'a>(row: &'a [bf16], buf: &'a mut [f32]) -> &'a [f32] {
            row.convert_to_f32_slice(buf);
            buf
        }
    }

    /// Weight rows combined per pass over the accumulator (the loop below is written for 4).
    const GROUP: usize = 4;

    /// `x [k] · w [k, n]`, accumulated in f32.
    fn product<W: Widen>(x: &[f32], w: &[W], n: usize) -> Vec<f32> {
        let k = x.len();
        // A few blocks per thread keep the threads busy to the end; each block streams a
        // contiguous run of weight rows.
        let blocks = (rayon::current_num_threads() * 4).clamp(1, k);
        let rows_per_block = k.div_ceil(blocks);
        let partials: Vec<Vec<f32>> = (0..k.div_ceil(rows_per_block))
            .into_par_iter()
            .map(|b| {
                let mut acc = vec![0f32; n];
                let buf_len = if W::CONVERTS { n } else { 0 };
                let [mut b0, mut b1, mut b2, mut b3] = std::array::from_fn(|_| vec![0f32; buf_len]);
                let end = ((b + 1) * rows_per_block).min(k);
                let mut i = b * rows_per_block;
                // Four rows per pass over the accumulator: it is read and written a quarter as
                // often, which keeps the loop bound by the weight stream alone.
                while i + GROUP <= end {
                    let r0 = W::widen(&w[i * n..(i + 1) * n], &mut b0);
                    let r1 = W::widen(&w[(i + 1) * n..(i + 2) * n], &mut b1);
                    let r2 = W::widen(&w[(i + 2) * n..(i + 3) * n], &mut b2);
                    let r3 = W::widen(&w[(i + 3) * n..(i + 4) * n], &mut b3);
                    let (x0, x1, x2, x3) = (x[i], x[i + 1], x[i + 2], x[i + 3]);
                    let rows = r0.iter().zip(r1).zip(r2).zip(r3);
                    for (a, (((&v0, &v1), &v2), &v3)) in acc.iter_mut().zip(rows) {
                        *a += x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3;
                    }
                    i += GROUP;
                }
                for i in i..end {
                    let row = W::widen(&w[i * n..(i + 1) * n], &mut b0);
                    let xi = x[i];
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += xi * v;
                    }
                }
                acc
            })
            .collect();
        let mut parts = partials.into_iter();
        let mut y = parts.next().unwrap_or_else(|| vec![0f32; n]);
        for p in parts {
            for (a, v) in y.iter_mut().zip(p) {
                *a += v;
            }
        }
        y
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::tensor::{DType, Distribution, Tensor};

    use crate::backend::Cpu;

    /// The row kernel (f32 and bf16 weights; f16 stays with gemm) agrees with an f32 matmul
    /// of the same values, up to the order of the f32 sums and the output's rounding to
    /// its dtype. 301 rows: four-row groups plus a remainder.
    #[test]
    fn row_kernel_matches_matmul() {
        let device = Default::default();
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
            let w = Tensor::<Cpu, 2>::random([301, 70], Distribution::Normal(0.0, 1.0), &device)
                .cast(dtype);
            let x = Tensor::<Cpu, 3>::random([1, 1, 301], Distribution::Normal(0.0, 1.0), &device)
                .cast(dtype);
            let fast = super::linear(x.clone(), &w).cast(DType::F32);
            let slow = x
                .cast(DType::F32)
                .matmul(w.cast(DType::F32).unsqueeze())
                .cast(DType::F32);
            assert_eq!(fast.dims(), [1, 1, 70]);
            let scale = slow.clone().abs().max().into_scalar();
            let diff = (fast - slow).abs().max().into_scalar();
            assert!(diff <= tol * scale, "{dtype:?}: {diff} > {tol} x {scale}");
        }
    }

    /// The split attention agrees with burn's own, causal (a cache longer than the queries) or
    /// not, across batch, heads and query blocks (`520 x 530` scores take two blocks), with
    /// the queries given as a strided view (heads split off a projection).
    #[test]
    fn split_attention_matches_burn() {
        use burn::tensor::{module::attention, ops::AttentionModuleOptions};
        let device = Default::default();
        let q = Tensor::<Cpu, 4>::random([2, 520, 3, 8], Distribution::Normal(0.0, 1.0), &device)
            .swap_dims(1, 2);
        let k = Tensor::<Cpu, 4>::random([2, 3, 530, 8], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<Cpu, 4>::random([2, 3, 530, 5], Distribution::Normal(0.0, 1.0), &device);
        for causal in [false, true] {
            let fast = super::attention(q.clone(), k.clone(), v.clone(), causal);
            let options = AttentionModuleOptions {
                is_causal: causal,
                ..Default::default()
            };
            let slow = attention(q.clone(), k.clone(), v.clone(), None, None, options)
                .swap_dims(1, 2)
                .reshape([2, 520, 15]);
            assert_eq!(fast.dims(), [2, 520, 15]);
            let diff = (fast - slow).abs().max().into_scalar();
            assert!(diff <= 1e-5, "causal {causal}: {diff}");
        }
    }

    /// The fused quick-GELU and SiLU agree with burn's composed ones; other activations, and
    /// other dtypes, are left to them.
    #[test]
    fn fused_activations_match_burn() {
        use crate::config::Activation;
        let device = Default::default();
        let x = Tensor::<Cpu, 3>::random([2, 70, 300], Distribution::Normal(0.0, 3.0), &device);
        for act in [Activation::QuickGelu, Activation::Silu] {
            let fast = super::fused_activation(act, &x).expect("fused on burn-flex f32");
            let slow = match act {
                Activation::QuickGelu => {
                    x.clone() * burn::tensor::activation::sigmoid(x.clone() * 1.702)
                }
                _ => burn::tensor::activation::silu(x.clone()),
            };
            let diff = (fast - slow).abs().max().into_scalar();
            assert!(diff <= 1e-6, "{act:?}: {diff}");
        }
        assert!(super::fused_activation(Activation::Gelu, &x).is_none());
        assert!(super::fused_activation(Activation::Silu, &x.cast(DType::BF16)).is_none());
    }

    /// More than one row, or a transposed view, goes to burn's matmul unchanged.
    #[test]
    fn other_shapes_fall_back() {
        let device = Default::default();
        let w = Tensor::<Cpu, 2>::random([16, 8], Distribution::Default, &device);
        let x = Tensor::<Cpu, 2>::random([3, 16], Distribution::Default, &device);
        let y = super::linear(x.clone(), &w);
        let expected = x.matmul(w);
        let diff = (y - expected).abs().max().into_scalar();
        assert_eq!(diff, 0.0);
    }
}

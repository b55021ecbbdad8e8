//! The operations burn's backends do poorly at our shapes, and the dispatch to vicrop's own
//! kernels for them. On the CPU: a single row times a weight matrix, attention over a few
//! hundred positions, the sigmoid-gated activations, the norms and bias adds.
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
//! the other on a single thread, with a scalar `exp`, and once `queries x keys` exceeds 256K
//! scores (CLIP's 577 positions, a 600-token prefill) it switches to a tiled kernel made of
//! many small products. [`attention`] cuts the work into independent pieces instead, in
//! parallel on rayon's pool: one head and a block of query rows each. A piece calls gemm
//! itself, straight on the strided head views (heads split off a projection need no copy):
//! `scores = q kᵀ / sqrt(d)`, a softmax per row with a vectorised `exp` over only the keys
//! the row may see (a causal block skips the masked tail; the alignment is bottom-right, as a
//! KV cache needs), then `scores v` written straight into the row's head columns of the
//! output, which comes back with the heads merged, `[b, t, h * d]`, the layout the output
//! projection reads. Other backends, and autodiff, get burn's `attention` unchanged.
//!
//! **Element-wise work.** burn-flex builds quick-GELU (CLIP) and SiLU (LLaMA) out of three or
//! four full passes with a scalar `exp` each, LayerNorm and RMSNorm out of four to six, and
//! adds a bias as a pass of its own after the product. [`fused_activation`], [`layer_norm`]
//! and [`rms_norm`] do one parallel pass each (torch's formulas, in the composed versions'
//! order), and [`affine`] starts the product's output from the bias rows and lets gemm add
//! onto them. The loops are compiled for AVX2 and FMA as well as the baseline target and the
//! CPU picks at run time.
//!
//! `tools/bench_cpu.py`, `examples/llm_step.rs` and `examples/cpu_kernels.rs` measure them;
//! the numbers are in `docs/performance.md`.
//!
//! **GPU backends.** On burn-cuda and burn-wgpu, RMSNorm, the gated product, rotary embedding,
//! ViCrop's attention row ([`attention_row`]) and one-row products run on vicrop's own cubecl
//! kernels (the `cube` submodule, built with the `cuda` or `wgpu` feature).

use burn::tensor::{
    backend::Backend, module::attention as burn_attention, ops::AttentionModuleOptions, Tensor,
};

/// `x [.., k] · w [k, n] -> [.., n]` for a weight stored `[in, out]` (see [`crate::nn::Linear`]).
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, w: &Tensor<B, 2>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::row_times_matrix(&x, w) {
        return y;
    }
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(y) = cube::row_times_matrix(&x, w) {
        return y;
    }
    x.matmul(w.clone().unsqueeze())
}

/// `x [.., k] · w [k, n] + bias [n] -> [.., n]`: [`linear`] with a bias. On burn-flex in f32,
/// for more than one row, the bias rows are written first and gemm accumulates the product
/// onto them, which saves a pass over the output.
pub fn affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(b) = bias {
        if let Some(y) = flex::product_onto_bias(&x, w, b) {
            return y;
        }
    }
    let y = linear(x, w);
    match bias {
        Some(b) => y + b.clone().unsqueeze(),
        None => y,
    }
}

/// LayerNorm over the last axis (biased variance, as torch): `(x - mean) / sqrt(var + eps) *
/// weight + bias`. One parallel pass per row block on burn-flex in f32; burn's operations
/// elsewhere.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    bias: &Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::norm(&x, weight, Some(bias), eps) {
        return y;
    }
    let mean = x.clone().mean_dim(D - 1);
    let centred = x - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(D - 1);
    let normed = centred / (var + eps).sqrt();
    normed * weight.clone().unsqueeze() + bias.clone().unsqueeze()
}

/// LLaMA's RMSNorm: `weight * x / sqrt(mean(x^2) + eps)`, computed in f32 and rounded back to
/// `x`'s dtype before the weight is applied (as transformers does). One parallel pass on
/// burn-flex in f32; burn's operations elsewhere.
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::norm(&x, weight, None, eps) {
        return y;
    }
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(y) = cube::rms_norm(&x, weight, eps) {
        return y;
    }
    let dtype = x.dtype();
    let x32 = x.cast(burn::tensor::DType::F32);
    let var = x32.clone().powi_scalar(2).mean_dim(D - 1);
    let normed = (x32 * (var + eps).sqrt().recip()).cast(dtype);
    normed * weight.clone().unsqueeze()
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
    // On the GPU backends burn's `attention`, once the `autotune` feature lets it pick its
    // flash kernels, aligns a causal mask top-left (wrong as soon as a KV cache holds more keys
    // than there are queries: a question after a cached image prefix) and computes in f16. Its
    // composed version, which it runs without `autotune`, aligns bottom-right in the tensors'
    // dtype: that one is called directly there, with or without `autotune`. (Autodiff runs
    // the composed version anyway.)
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if cube::is_cube_backend::<B>() {
        use burn::tensor::{ops::attention::attention_fallback, TensorPrimitive};
        let out = attention_fallback::<B>(
            q.into_primitive().tensor(),
            k.into_primitive().tensor(),
            v.into_primitive().tensor(),
            None,
            None,
            options,
        );
        return Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(out))
            .swap_dims(1, 2)
            .reshape([b, tq, h * dv]);
    }
    burn_attention(q, k, v, None, None, options)
        .swap_dims(1, 2)
        .reshape([b, tq, h * dv])
}

/// `act(gate) * up` (LLaMA's gated MLP): one pass on burn-flex in f32 for SiLU and
/// quick-GELU; burn's operations elsewhere.
pub fn gated_product<B: Backend, const D: usize>(
    act: crate::config::Activation,
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::gated_product(act, &gate, &up) {
        return y;
    }
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(y) = cube::gated_product(act, &gate, &up) {
        return y;
    }
    crate::nn::activate(act, gate) * up
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

/// Whether layers that read the same input should run as one product on backend `B`
/// ([`crate::nn::Projections`]): on the GPU backends, unless `VICROP_CUBE_KERNELS=0`.
pub fn fuses_projections<B: Backend>() -> bool {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if cube::is_cube::<B>() {
        return true;
    }
    false
}

/// Rotary position embedding, `x cos + rotate_half(x) sin` with `rotate_half(x) = cat(-x2,
/// x1)` over the last axis: `x [b, h, t, d]` (any strides), `cos`, `sin` `[1, 1, t, d]` in `x`'s
/// dtype. One kernel on the GPU backends; burn's operations elsewhere.
pub fn rotary<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(y) = cube::rotary(&x, cos, sin) {
        return y;
    }
    let hd = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, hd / 2);
    let x2 = x.clone().narrow(3, hd / 2, hd / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// The attention probabilities of one query over every key, per head, in f32: `softmax(q kᵀ ·
/// scale)` for `q [b, h, 1, d]`, `k [b, h, s, d]` -> `[b * h, s]`. The scores are rounded to the
/// inputs' dtype (as a product in that dtype is) before the f32 softmax. One kernel on the GPU
/// backends; burn's product and softmax elsewhere, autodiff included.
pub fn attention_row<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, scale: f64) -> Tensor<B, 2> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(y) = cube::attention_row(&q, &k, scale) {
        return y;
    }
    let [b, h, _, _] = q.dims();
    let s = k.dims()[2];
    let scores = q.matmul(k.swap_dims(2, 3)) * scale; // [b, h, 1, s]
    crate::nn::softmax_f32(scores).reshape([b * h, s])
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cube;

#[cfg(feature = "flex")]
mod flex {
    use std::any::{Any, TypeId};

    use burn::tensor::{backend::Backend, DType, Tensor, TensorData, TensorPrimitive};
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

    /// `Some(x · w + bias)` for f32 `x` of more than one row on burn-flex: the output starts
    /// as the bias rows and gemm adds the product onto them (`read_dst`), on all threads.
    pub(super) fn product_onto_bias<B: Backend, const D: usize>(
        x: &Tensor<B, D>,
        w: &Tensor<B, 2>,
        bias: &Tensor<B, 1>,
    ) -> Option<Tensor<B, D>> {
        let dims = x.dims();
        let [k, n] = w.dims();
        let m = dims[..D - 1].iter().product::<usize>();
        if m < 2 || dims[D - 1] != k || bias.dims() != [n] {
            return None;
        }
        let (xf, wf, bf) = (as_flex(x)?, as_flex(w)?, as_flex(bias)?);
        if [xf.dtype(), wf.dtype(), bf.dtype()] != [DType::F32; 3] {
            return None;
        }
        let xf = xf.to_contiguous();
        let bf = bf.to_contiguous();
        let b = bf.as_slice::<f32>()?;
        let mut out = Vec::with_capacity(m * n);
        for _ in 0..m {
            out.extend_from_slice(b);
        }
        let (ws, wo) = (wf.layout().strides(), wf.layout().start_offset());
        let wdata = wf.storage::<f32>();
        if ws.iter().any(|&s| s < 0) || wo >= wdata.len() {
            return None;
        }
        // SAFETY: `x` is a contiguous `[m, k]` f32 buffer, `w` a `[k, n]` view described by
        // its non-negative strides from its start offset, `out` an `[m, n]` buffer.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                true,
                xf.as_slice::<f32>()?.as_ptr(),
                1,
                k as isize,
                wdata[wo..].as_ptr(),
                ws[1],
                ws[0],
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        let mut shape = dims;
        shape[D - 1] = n;
        from_flex(FlexTensor::from_data(TensorData::new(out, shape.to_vec())))
    }

    /// LayerNorm (with `bias`) or RMSNorm (without) of f32 rows on burn-flex, in parallel
    /// row blocks, one pass over each row after its statistics. The formulas keep the
    /// composed versions' order: LayerNorm centres, then takes the mean square of the
    /// centred row; RMSNorm the mean square of the row itself.
    pub(super) fn norm<B: Backend, const D: usize>(
        x: &Tensor<B, D>,
        weight: &Tensor<B, 1>,
        bias: Option<&Tensor<B, 1>>,
        eps: f64,
    ) -> Option<Tensor<B, D>> {
        let d = x.dims()[D - 1];
        let xf = as_flex(x)?;
        let wf = as_flex(weight)?;
        let bf = match bias {
            Some(b) => Some(as_flex(b)?.to_contiguous()),
            None => None,
        };
        if xf.dtype() != DType::F32 || wf.dtype() != DType::F32 || d == 0 {
            return None;
        }
        if bf.as_ref().is_some_and(|b| b.dtype() != DType::F32) || weight.dims() != [d] {
            return None;
        }
        let xf = xf.to_contiguous();
        let wf = wf.to_contiguous();
        let src = xf.as_slice::<f32>()?;
        let w = wf.as_slice::<f32>()?;
        let b = match &bf {
            Some(b) => Some(b.as_slice::<f32>()?),
            None => None,
        };
        let mut out = vec![0f32; src.len()];
        let rows = (CHUNK / d).max(1);
        out.par_chunks_mut(rows * d)
            .zip(src.par_chunks(rows * d))
            .for_each(|(o, s)| {
                for (o, s) in o.chunks_exact_mut(d).zip(s.chunks_exact(d)) {
                    match b {
                        Some(b) => fastmath::layer_norm(s, w, b, eps as f32, o),
                        None => fastmath::rms_norm(s, w, eps as f32, o),
                    }
                }
            });
        from_flex(FlexTensor::from_data(TensorData::new(
            out,
            x.dims().to_vec(),
        )))
    }

    /// Below this many multiply-adds (`b h tq tk d`) one call to burn's attention is cheaper
    /// than the split. Low enough that a decoding step (one query against the cache) takes
    /// the split: it reads the cache's views in place, where burn's attention first copies
    /// the strided keys and values out of the preallocated buffers.
    const SPLIT_WORK: usize = 1 << 16;

    /// Query rows per attention piece, at most. Larger pieces pack each head's keys and
    /// values for gemm fewer times (64 rows measured slower at CLIP's and LLaMA's shapes);
    /// CLIP's 16 heads still make 48 pieces for the threads to share.
    const PIECE_ROWS: usize = 256;

    /// Elements per task of an element-wise kernel.
    const CHUNK: usize = 1 << 14;

    /// A flex f32 view of `t` whose last axis is contiguous.
    fn rows_view<B: Backend>(t: &Tensor<B, 4>) -> Option<FlexTensor> {
        let f = as_flex(t)?;
        if f.dtype() != DType::F32 {
            return None;
        }
        let strides = f.layout().strides();
        Some(if strides[3] == 1 && strides.iter().all(|&s| s >= 0) {
            f
        } else {
            f.to_contiguous()
        })
    }

    /// A `[b, h, t, d]` f32 view (last axis contiguous) as gemm reads it: the element at
    /// `(b, h, t, 0)` and the stride between rows.
    struct Heads<'a> {
        data: &'a [f32],
        start: isize,
        strides: [isize; 3],
    }

    impl<'a> Heads<'a> {
        fn new(t: &'a FlexTensor) -> Self {
            let layout = t.layout();
            let s = layout.strides();
            Self {
                data: t.storage::<f32>(),
                start: layout.start_offset() as isize,
                strides: [s[0], s[1], s[2]],
            }
        }

        /// Storage index of row `t` of head `(b, h)` (in bounds: `(b, h, t)` indexes the
        /// view, whose non-negative strides address its storage).
        fn at(&self, b: usize, h: usize, t: usize) -> usize {
            let [sb, sh, st] = self.strides;
            (self.start + b as isize * sb + h as isize * sh + t as isize * st) as usize
        }

        /// The first `len` elements of row `t` of head `(b, h)`.
        fn slice(&self, b: usize, h: usize, t: usize, len: usize) -> &'a [f32] {
            let at = self.at(b, h, t);
            &self.data[at..at + len]
        }

        /// Pointer to row `t` of head `(b, h)`, for gemm to read with the view's strides.
        fn row(&self, b: usize, h: usize, t: usize) -> *const f32 {
            self.data[self.at(b, h, t)..].as_ptr()
        }
    }

    /// The merged output, written by the pieces in parallel, each to its own rows of its own
    /// head's columns.
    #[derive(Clone, Copy)]
    struct Merged(*mut f32);
    // SAFETY: the pieces write disjoint elements and the buffer outlives the parallel loop.
    unsafe impl Send for Merged {}
    unsafe impl Sync for Merged {}

    impl Merged {
        /// The element `offset` past the start (a method, so that closures capture the whole
        /// `Send` wrapper rather than its raw pointer).
        fn at(self, offset: usize) -> *mut f32 {
            self.0.wrapping_add(offset)
        }
    }

    /// Attention on burn-flex in f32 as independent pieces on rayon's pool, one head and a
    /// block of at most [`PIECE_ROWS`] query rows each: `scores = (q kᵀ) / sqrt(d)` by gemm
    /// read straight from the (possibly strided) head views, a softmax per row with a
    /// vectorised `exp` over only the keys the row may see, then `scores v` by gemm written
    /// straight into the row's head columns of `[b, tq, h * dv]`.
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
        let (qh, kh, vh) = (Heads::new(&qf), Heads::new(&kf), Heads::new(&vf));
        let rows = tq.div_ceil(tq.div_ceil(PIECE_ROWS));
        let scale = (1.0 / (d as f64).sqrt()) as f32;
        let pieces: Vec<(usize, usize, usize)> = (0..b)
            .flat_map(|bi| (0..h).map(move |hi| (bi, hi)))
            .flat_map(|(bi, hi)| (0..tq).step_by(rows).map(move |start| (bi, hi, start)))
            .collect();
        let mut merged = vec![0f32; b * tq * h * dv];
        let out = Merged(merged.as_mut_ptr());
        let row_stride = (h * dv) as isize;
        pieces
            .par_iter()
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, &(bi, hi, start)| {
                let n = rows.min(tq - start);
                // A causal block sees the keys up to its last row's, no further; row `r` of
                // it sees `offset + r + 1` keys (bottom-right alignment, as a KV cache needs).
                let keys = if causal { start + n + tk - tq } else { tk };
                let offset = start + tk - tq;
                scores.clear();
                scores.resize(n * keys, 0.0);
                if n == 1 {
                    // One query (a decoding step): dot products and a weighted sum of rows,
                    // where gemm would run its full-tile kernel for one row.
                    let qrow = qh.slice(bi, hi, start, d);
                    for (j, s) in scores.iter_mut().enumerate() {
                        *s = fastmath::dot(qrow, kh.slice(bi, hi, j, d)) * scale;
                    }
                    fastmath::softmax(scores);
                    // SAFETY: this piece's row of its head's columns in `merged` (zeros so
                    // far), which no other piece writes.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(
                            out.at(((bi * tq + start) * h + hi) * dv),
                            dv,
                        )
                    };
                    for (j, &p) in scores.iter().enumerate() {
                        fastmath::add_scaled(p, vh.slice(bi, hi, j, dv), row);
                    }
                    return;
                }
                // SAFETY: each operand is described by its own view's strides and shape
                // (`n` query rows from `start`, `keys` rows of k and v, all within `t`); the
                // destination block is this piece's rows and head columns of `merged`, which
                // no other piece writes.
                unsafe {
                    gemm::gemm(
                        n,
                        keys,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        keys as isize,
                        false,
                        qh.row(bi, hi, start),
                        1,
                        qh.strides[2],
                        kh.row(bi, hi, 0),
                        kh.strides[2],
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for (r, row) in scores.chunks_exact_mut(keys).enumerate() {
                    let seen = if causal { offset + r + 1 } else { keys };
                    let (visible, masked) = row.split_at_mut(seen);
                    fastmath::softmax(visible);
                    masked.fill(0.0);
                }
                unsafe {
                    gemm::gemm(
                        n,
                        dv,
                        keys,
                        out.at(((bi * tq + start) * h + hi) * dv),
                        1,
                        row_stride,
                        false,
                        scores.as_ptr(),
                        1,
                        keys as isize,
                        vh.row(bi, hi, 0),
                        1,
                        vh.strides[2],
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
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
        let a = gate_slope(act)?;
        let xf = as_flex(x)?;
        if xf.dtype() != DType::F32 {
            return None;
        }
        let xf = xf.to_contiguous();
        let src = xf.as_slice::<f32>()?;
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(o, s)| fastmath::gated(a, s, o));
        from_flex(FlexTensor::from_data(TensorData::new(
            out,
            x.dims().to_vec(),
        )))
    }

    /// `act(gate) * up` for f32 tensors of one shape on burn-flex (SiLU, quick-GELU).
    pub(super) fn gated_product<B: Backend, const D: usize>(
        act: Activation,
        gate: &Tensor<B, D>,
        up: &Tensor<B, D>,
    ) -> Option<Tensor<B, D>> {
        let a = gate_slope(act)?;
        if gate.dims() != up.dims() {
            return None;
        }
        let (gf, uf) = (as_flex(gate)?, as_flex(up)?);
        if gf.dtype() != DType::F32 || uf.dtype() != DType::F32 {
            return None;
        }
        let (gf, uf) = (gf.to_contiguous(), uf.to_contiguous());
        let (g, u) = (gf.as_slice::<f32>()?, uf.as_slice::<f32>()?);
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| fastmath::gated_times(a, g, u, o));
        from_flex(FlexTensor::from_data(TensorData::new(
            out,
            gate.dims().to_vec(),
        )))
    }

    /// `a` of `x * sigmoid(a x)`, for the activations written that way.
    fn gate_slope(act: Activation) -> Option<f32> {
        match act {
            Activation::QuickGelu => Some(1.702),
            Activation::Silu => Some(1.0),
            _ => None,
        }
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

    /// Element-wise maths written so that the compiler vectorises it, compiled twice: for the
    /// build's baseline target and for AVX2 with FMA, picked at run time.
    pub(super) mod fastmath {
        /// `a b + c`, fused where the caller is compiled for FMA (a call into libm elsewhere).
        #[inline(always)]
        fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
            if FMA {
                a.mul_add(b, c)
            } else {
                a * b + c
            }
        }

        /// `e^x` in f32, to within about 2 ulp (Cephes' `expf`: `x = n ln 2 + r` with
        /// `|r| <= ln 2 / 2`, a degree-5 polynomial for `e^r`, and `2^n` built from its bits),
        /// without branches so that a loop of it vectorises. `x` is clamped to
        /// `[-87.3, 88.4]`, where `e^x` stays a normal f32: below it, where the exact value
        /// is under `1.2e-38`, the result is that bound rather than a subnormal or zero. NaN
        /// stays NaN. `FMA` fuses the multiply-adds (for code compiled with FMA).
        #[inline(always)]
        pub fn exp<const FMA: bool>(x: f32) -> f32 {
            // 1.5 * 2^23: adding it rounds a float of magnitude < 2^22 to an integer, which
            // then sits in the low mantissa bits.
            const ROUND: f32 = 12_582_912.0;
            let x = x.clamp(-87.336_55, 88.376_26);
            let t = madd::<FMA>(x, std::f32::consts::LOG2_E, ROUND);
            let n = t - ROUND;
            // ln 2 in two parts, so that `n ln 2` is subtracted without rounding error.
            let r = madd::<FMA>(n, 2.121_944_4e-4, madd::<FMA>(n, -0.693_359_4, x));
            let mut p = 1.987_569_1e-4_f32;
            p = madd::<FMA>(p, r, 1.398_199_9e-3);
            p = madd::<FMA>(p, r, 8.333_452e-3);
            p = madd::<FMA>(p, r, 4.166_579_6e-2);
            p = madd::<FMA>(p, r, 1.666_666_5e-1);
            p = madd::<FMA>(p, r, 0.5);
            let er = madd::<FMA>(p, r * r, r) + 1.0;
            let n = t.to_bits() as i32 - ROUND.to_bits() as i32;
            er * f32::from_bits(((n + 127) << 23) as u32)
        }

        /// Lanes of the reductions below: independent partial maxima and sums, so the loops
        /// vectorise without reassociating a single chain.
        const LANES: usize = 8;

        #[inline(always)]
        fn softmax_body<const FMA: bool>(row: &mut [f32]) {
            let mut lanes = [f32::NEG_INFINITY; LANES];
            let mut chunks = row.chunks_exact(LANES);
            for c in &mut chunks {
                for (m, &x) in lanes.iter_mut().zip(c) {
                    *m = m.max(x);
                }
            }
            let mut max = chunks
                .remainder()
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            for m in lanes {
                max = max.max(m);
            }
            if max == f32::NEG_INFINITY {
                // Nothing to attend to (every score -inf): torch gives NaN, burn zeros; the
                // models never ask for it.
                row.fill(0.0);
                return;
            }
            let mut sums = [0f32; LANES];
            let mut chunks = row.chunks_exact_mut(LANES);
            for c in &mut chunks {
                for (s, x) in sums.iter_mut().zip(c) {
                    *x = exp::<FMA>(*x - max);
                    *s += *x;
                }
            }
            let mut sum = 0f32;
            for x in chunks.into_remainder() {
                *x = exp::<FMA>(*x - max);
                sum += *x;
            }
            sum += sums.iter().sum::<f32>();
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }

        #[inline(always)]
        fn gated_body<const FMA: bool>(a: f32, src: &[f32], out: &mut [f32]) {
            for (o, &v) in out.iter_mut().zip(src) {
                *o = v * (1.0 / (1.0 + exp::<FMA>(-(a * v))));
            }
        }

        /// Sum of a row, in [`LANES`] partial sums.
        #[inline(always)]
        fn sum_by_lanes(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
            let mut sums = [0f32; LANES];
            let mut chunks = row.chunks_exact(LANES);
            for c in &mut chunks {
                for (s, &x) in sums.iter_mut().zip(c) {
                    *s += f(x);
                }
            }
            chunks.remainder().iter().map(|&x| f(x)).sum::<f32>() + sums.iter().sum::<f32>()
        }

        /// The norms ignore `FMA` (it is there for `dispatch!`): they keep the composed
        /// versions' unfused rounding.
        #[inline(always)]
        fn layer_norm_body<const FMA: bool>(
            x: &[f32],
            w: &[f32],
            b: &[f32],
            eps: f32,
            out: &mut [f32],
        ) {
            let d = x.len() as f32;
            let mean = sum_by_lanes(x, |v| v) / d;
            let var = sum_by_lanes(x, |v| (v - mean) * (v - mean)) / d;
            let denom = (var + eps).sqrt();
            for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(w).zip(b) {
                *o = (v - mean) / denom * w + b;
            }
        }

        #[inline(always)]
        fn rms_norm_body<const FMA: bool>(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
            let ms = sum_by_lanes(x, |v| v * v) / x.len() as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
                *o = v * inv * w;
            }
        }

        #[inline(always)]
        fn gated_times_body<const FMA: bool>(a: f32, gate: &[f32], up: &[f32], out: &mut [f32]) {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = g * (1.0 / (1.0 + exp::<FMA>(-(a * g)))) * u;
            }
        }

        #[inline(always)]
        fn dot_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
            let mut sums = [0f32; LANES];
            let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
            let tail: f32 = ca
                .remainder()
                .iter()
                .zip(cb.remainder())
                .map(|(x, y)| x * y)
                .sum();
            for (x, y) in ca.zip(cb) {
                for ((s, &x), &y) in sums.iter_mut().zip(x).zip(y) {
                    *s = madd::<FMA>(x, y, *s);
                }
            }
            sums.iter().sum::<f32>() + tail
        }

        #[inline(always)]
        fn add_scaled_body<const FMA: bool>(p: f32, x: &[f32], acc: &mut [f32]) {
            for (a, &x) in acc.iter_mut().zip(x) {
                *a = madd::<FMA>(p, x, *a);
            }
        }

        /// Defines `pub fn $name(args) -> ret` calling `$body::<FMA>(args)`: compiled for AVX2
        /// with FMA (`FMA = true`) and run that way when the CPU has them, else the build's
        /// baseline (`FMA = false`).
        macro_rules! dispatch {
            (
                $(#[$doc:meta])*
                fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident
            ) => {
                $(#[$doc])*
                pub fn $name($($arg: $ty),*) $(-> $ret)? {
                    #[cfg(target_arch = "x86_64")]
                    {
                        #[target_feature(enable = "avx2,fma")]
                        fn avx2($($arg: $ty),*) $(-> $ret)? {
                            $body::<true>($($arg),*)
                        }
                        if std::is_x86_feature_detected!("avx2")
                            && std::is_x86_feature_detected!("fma")
                        {
                            // SAFETY: the CPU has AVX2 and FMA (checked just above).
                            return unsafe { avx2($($arg),*) };
                        }
                    }
                    $body::<false>($($arg),*)
                }
            };
        }

        dispatch! {
            /// Softmax of one row in place, in f32.
            fn softmax(row: &mut [f32]) = softmax_body
        }
        dispatch! {
            /// `out = x * sigmoid(a x)`, torch's `sigmoid(z) = 1 / (1 + e^-z)`: quick-GELU for
            /// `a = 1.702`, SiLU for `a = 1`.
            fn gated(a: f32, src: &[f32], out: &mut [f32]) = gated_body
        }
        dispatch! {
            /// `out = gate * sigmoid(a gate) * up`, as [`gated`] then a product.
            fn gated_times(a: f32, gate: &[f32], up: &[f32], out: &mut [f32]) = gated_times_body
        }
        dispatch! {
            /// LayerNorm of one row: `(x - mean) / sqrt(var + eps) * w + b`.
            fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32])
                = layer_norm_body
        }
        dispatch! {
            /// RMSNorm of one row: `x / sqrt(mean(x^2) + eps) * w`.
            fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) = rms_norm_body
        }
        dispatch! {
            /// `a · b` (equal lengths), in [`LANES`] partial sums.
            fn dot(a: &[f32], b: &[f32]) -> f32 = dot_body
        }
        dispatch! {
            /// `acc += p x`.
            fn add_scaled(p: f32, x: &[f32], acc: &mut [f32]) = add_scaled_body
        }
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

    /// The vectorised `exp` is within 2 ulp of the standard library's over the range softmax
    /// and the gated activations feed it, and keeps its edges: `e^0 = 1`, tiny rather than
    /// negative or NaN far below, NaN for NaN.
    #[test]
    fn vectorised_exp_matches_std() {
        use super::flex::fastmath::exp;
        for fma in [false, true] {
            let exp = |x: f32| if fma { exp::<true>(x) } else { exp::<false>(x) };
            let mut worst = 0f32;
            for i in 0..=200_000 {
                let x = -87.0 + 175.0 * i as f32 / 200_000.0;
                let (fast, exact) = (exp(x), x.exp());
                worst = worst.max((fast - exact).abs() / exact);
            }
            assert!(
                worst <= 2.0 * f32::EPSILON,
                "fma {fma}: relative error {worst}"
            );
            assert_eq!(exp(0.0), 1.0);
            assert!((0.0..1.2e-38).contains(&exp(-1000.0)));
            assert!((0.0..1.2e-38).contains(&exp(f32::NEG_INFINITY)));
            assert!(exp(f32::NAN).is_nan());
        }
    }

    /// The fused LayerNorm and RMSNorm, and the product onto a bias, agree with burn's
    /// composed operations (rows of 300, so the lane loops have a remainder); a product
    /// without a bias, or a single row, is [`super::linear`]'s.
    #[test]
    fn fused_norms_and_bias_match_burn() {
        let device = Default::default();
        let x = Tensor::<Cpu, 3>::random([2, 70, 300], Distribution::Normal(0.5, 3.0), &device);
        let w = Tensor::<Cpu, 1>::random([300], Distribution::Normal(1.0, 0.5), &device);
        let b = Tensor::<Cpu, 1>::random([300], Distribution::Normal(0.0, 0.5), &device);
        let eps = 1e-5;

        let mean = x.clone().mean_dim(2);
        let centred = x.clone() - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(2);
        let slow = centred / (var + eps).sqrt() * w.clone().unsqueeze() + b.clone().unsqueeze();
        let fast = super::layer_norm(x.clone(), &w, &b, eps);
        let diff = (fast - slow).abs().max().into_scalar();
        assert!(diff <= 1e-5, "LayerNorm: {diff}");

        let ms = x.clone().powi_scalar(2).mean_dim(2);
        let slow = x.clone() * (ms + eps).sqrt().recip() * w.clone().unsqueeze();
        let fast = super::rms_norm(x.clone(), &w, eps);
        let diff = (fast - slow).abs().max().into_scalar();
        assert!(diff <= 1e-5, "RMSNorm: {diff}");

        let m = Tensor::<Cpu, 2>::random([300, 90], Distribution::Normal(0.0, 0.1), &device);
        let bias = Tensor::<Cpu, 1>::random([90], Distribution::Normal(0.0, 1.0), &device);
        let slow = x.clone().matmul(m.clone().unsqueeze()) + bias.clone().unsqueeze();
        let fast = super::affine(x.clone(), &m, Some(&bias));
        assert_eq!(fast.dims(), [2, 70, 90]);
        let diff = (fast - slow).abs().max().into_scalar();
        assert!(diff <= 1e-5, "product onto bias: {diff}");
        // A transposed weight view (strides `[1, 300]`) is read through its strides.
        let view = Tensor::<Cpu, 2>::random([90, 300], Distribution::Normal(0.0, 0.1), &device)
            .transpose();
        let slow = x.clone().matmul(view.clone().unsqueeze()) + bias.clone().unsqueeze();
        let diff = (super::affine(x, &view, Some(&bias)) - slow)
            .abs()
            .max()
            .into_scalar();
        assert!(diff <= 1e-5, "product onto bias, view: {diff}");
    }

    /// The fused gated product (LLaMA's MLP) agrees with burn's composition; GELU is left to
    /// it.
    #[test]
    fn gated_product_matches_burn() {
        use crate::config::Activation;
        let device = Default::default();
        let gate = Tensor::<Cpu, 3>::random([2, 70, 300], Distribution::Normal(0.0, 3.0), &device);
        let up = Tensor::<Cpu, 3>::random([2, 70, 300], Distribution::Normal(0.0, 3.0), &device);
        for act in [Activation::Silu, Activation::QuickGelu, Activation::Gelu] {
            let fast = super::gated_product(act, gate.clone(), up.clone());
            let slow = crate::nn::activate(act, gate.clone()) * up.clone();
            let scale = slow.clone().abs().max().into_scalar();
            let diff = (fast - slow).abs().max().into_scalar();
            assert!(diff <= 1e-6 * scale, "{act:?}: {diff} of {scale}");
        }
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

//! cubecl kernels for the GPU backends (burn-cuda, burn-wgpu): the steps of a LLaMA layer that
//! burn composes from several launches, or runs with a kernel that suits other shapes.
//!
//! - [`rms_norm`]: one launch per norm instead of burn's cast, square, mean, add, sqrt,
//!   reciprocal, product, cast and weight product (one cube per row, the sum of squares
//!   reduced in shared memory, in f32).
//! - [`gated_product`]: `act(gate) * up` in one element-wise pass (SiLU or quick-GELU).
//! - [`rotary`]: `x cos + rotate_half(x) sin` in one pass, straight from the strided head view
//!   of the projection; the output is contiguous `[b, h, t, d]`.
//! - [`attention_row`]: the probabilities of one query row over every key, `softmax(q kᵀ /
//!   sqrt(d))` per head, in f32: the row ViCrop reads, without burn's batched product for one
//!   query and its separate softmax passes.
//! - [`row_times_matrix`]: a one-row product `x [1, k] · w [k, n]` (every projection of a
//!   decoding step, and the LM head) for the row-major `[in, out]` weights the models keep.
//!   burn's matrix-vector kernels want the weight column-major; this kernel reads the weight
//!   rows coalesced (consecutive threads take consecutive output columns) and splits the
//!   inner dimension over the cube's second axis, summed in shared memory.
//!
//! Each kernel reads its inputs in their stored dtype (f32, f16 or bf16), accumulates in f32
//! and rounds where transformers' composed operations round (noted per kernel), so a bf16 run
//! matches the reference's own rounding steps. Every kernel has a test against burn's
//! composition on wgpu (this module's tests), and the wgpu parity suites run them inside the
//! models. Autodiff tensors never reach them: the dispatchers in `kernels` try them only when
//! the tensor primitive is a plain `CubeTensor`.
//!
//! `VICROP_CUBE_KERNELS=0` turns them all off, and LLaMA's fused projections with them
//! ([`crate::kernels::fuses_projections`]): burn's operations run instead, so a GPU run can time
//! both. None of them has been timed on a GPU yet (docs/performance.md).

use std::any::{Any, TypeId};
use std::sync::OnceLock;

use burn::tensor::{backend::Backend, DType, Shape, Tensor, TensorMetadata, TensorPrimitive};
use burn_cubecl::{
    kernel::into_contiguous, ops::numeric::empty_device_dtype, tensor::CubeTensor, CubeRuntime,
};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::config::Activation;
use device::{
    attention_row_kernel, gated_kernel, rms_norm_kernel, rotary_kernel, row_times_matrix_kernel,
};

/// Threads per cube for the row kernels (norm, attention row).
const ROW_BLOCK: usize = 256;
/// Output columns per cube of the one-row product (the cube's first axis).
const GEMV_COLS: usize = 32;
/// Most inner-dimension splits per cube of the one-row product (the cube's second axis): 32
/// (1024 threads a cube) where the device allows, for enough loads in flight per multiprocessor
/// on a 4096-wide projection (128 cubes); fewer where cubes are smaller (wgpu's default limit
/// is 256 threads).
const GEMV_SPLIT: usize = 32;
/// Threads per cube for the element-wise kernels.
const ELEMWISE_BLOCK: usize = 256;
/// Most cubes along one axis of a launch grid (the limit every runtime accepts).
const MAX_CUBES_PER_AXIS: usize = 65_535;

/// Whether the kernels are on: `VICROP_CUBE_KERNELS=0` (or `off`, `false`) turns them off.
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("VICROP_CUBE_KERNELS").as_deref(),
            Ok("0") | Ok("off") | Ok("false")
        )
    })
}

/// When `B`'s float primitive is `CubeTensor<R>` for a runtime this build has (CUDA, wgpu),
/// returns `$body` from the enclosing function with `R` named as that runtime; else evaluates
/// to `None`.
macro_rules! on_cube {
    ($B:ident, |$r:ident| $body:expr) => {{
        #[cfg(feature = "cuda")]
        if TypeId::of::<$B::FloatTensorPrimitive>()
            == TypeId::of::<CubeTensor<cubecl::cuda::CudaRuntime>>()
        {
            type $r = cubecl::cuda::CudaRuntime;
            return $body;
        }
        #[cfg(feature = "wgpu")]
        if TypeId::of::<$B::FloatTensorPrimitive>()
            == TypeId::of::<CubeTensor<cubecl::wgpu::WgpuRuntime>>()
        {
            type $r = cubecl::wgpu::WgpuRuntime;
            return $body;
        }
        None
    }};
}

/// Whether `B` is a GPU backend these kernels run on (not wrapped in autodiff), and they are on.
pub(super) fn is_cube<B: Backend>() -> bool {
    enabled() && is_cube_backend::<B>()
}

/// Whether `B` is burn-cuda or burn-wgpu (not wrapped in autodiff), whether or not the kernels
/// are on.
pub(super) fn is_cube_backend<B: Backend>() -> bool {
    fn check<B: Backend>() -> Option<()> {
        on_cube!(B, |_R| Some(()))
    }
    check::<B>().is_some()
}

/// The `CubeTensor` behind `t`, when `B`'s float primitive is one for runtime `R`.
fn as_cube<B: Backend, R: CubeRuntime, const D: usize>(t: &Tensor<B, D>) -> Option<CubeTensor<R>> {
    match t.clone().into_primitive() {
        TensorPrimitive::Float(p) => {
            let boxed: Box<dyn Any> = Box::new(p);
            boxed.downcast::<CubeTensor<R>>().ok().map(|b| *b)
        }
        TensorPrimitive::QFloat(_) => None,
    }
}

fn from_cube<B: Backend, R: CubeRuntime, const D: usize>(t: CubeTensor<R>) -> Option<Tensor<B, D>> {
    let boxed: Box<dyn Any> = Box::new(t);
    let p = boxed.downcast::<B::FloatTensorPrimitive>().ok()?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(*p)))
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// A launch grid of `n` cubes, spread over two axes when one would exceed the limit.
fn grid(n: usize) -> CubeCount {
    if n <= MAX_CUBES_PER_AXIS {
        CubeCount::Static(n as u32, 1, 1)
    } else {
        let y = n.div_ceil(MAX_CUBES_PER_AXIS);
        CubeCount::Static(n.div_ceil(y) as u32, y as u32, 1)
    }
}

/// The kernels themselves (device code), apart from the host side, whose burn names (`Tensor`,
/// `Backend`) cubecl's prelude would shadow.
mod device {
    use cubecl::prelude::*;

    /// Sums `value` over the cube's `block` units (the first axis, a power of two) through shared
    /// memory; every unit gets the total.
    #[cube]
    fn cube_sum(value: f32, #[comptime] block: usize) -> f32 {
        let mut shared = SharedMemory::<f32>::new(block);
        let tid = UNIT_POS_X as usize;
        shared[tid] = value;
        sync_cube();
        let mut stride = CUBE_DIM_X as usize / 2;
        while stride > 0 {
            if tid < stride {
                shared[tid] = shared[tid] + shared[tid + stride];
            }
            sync_cube();
            stride /= 2;
        }
        let total = shared[0];
        sync_cube();
        total
    }

    /// The largest `value` over the cube's `block` units, as [`cube_sum`].
    #[cube]
    fn cube_max(value: f32, #[comptime] block: usize) -> f32 {
        let mut shared = SharedMemory::<f32>::new(block);
        let tid = UNIT_POS_X as usize;
        shared[tid] = value;
        sync_cube();
        let mut stride = CUBE_DIM_X as usize / 2;
        while stride > 0 {
            if tid < stride && shared[tid + stride] > shared[tid] {
                shared[tid] = shared[tid + stride];
            }
            sync_cube();
            stride /= 2;
        }
        let total = shared[0];
        sync_cube();
        total
    }

    /// One cube per row of `x [rows, d]` (contiguous): `round(x / sqrt(mean(x^2) + eps)) * w`, the
    /// mean in f32, the product with the weight in the stored dtype (transformers' order).
    #[cube(launch)]
    pub(super) fn rms_norm_kernel<F: Float>(
        x: &Tensor<F>,
        w: &Tensor<F>,
        out: &mut Tensor<F>,
        eps: f32,
        #[comptime] block: usize,
        #[define(F)] _dtype: StorageType,
    ) {
        let row = CUBE_POS;
        let d = w.len();
        let base = row * d;
        if base >= x.len() {
            terminate!();
        }
        let tid = UNIT_POS_X as usize;
        let mut acc = 0.0f32;
        let mut i = tid;
        while i < d {
            let v = f32::cast_from(x[base + i]);
            acc += v * v;
            i += block;
        }
        let total = cube_sum(acc, block);
        let inv = f32::new(1.0) / (total / f32::cast_from(d) + eps).sqrt();
        let mut i = tid;
        while i < d {
            let v = f32::cast_from(x[base + i]);
            out[base + i] = F::cast_from(v * inv) * w[i];
            i += block;
        }
    }

    /// `act(gate) * up` over `rows x n` elements: row `r` of `gate` starts at `r * gate_row`,
    /// of `up` at `r * up_row` (views of one fused projection's output read in place), `out`
    /// contiguous. The activation runs in f32 and is rounded to the stored dtype, then the
    /// product in that dtype (transformers' two roundings). `slope` is 1 for SiLU (`x
    /// sigmoid(x)`) and 1.702 for quick-GELU (`x sigmoid(1.702 x)`).
    #[cube(launch)]
    pub(super) fn gated_kernel<F: Float>(
        gate: &Tensor<F>,
        up: &Tensor<F>,
        out: &mut Tensor<F>,
        n: u32,
        gate_row: u32,
        up_row: u32,
        slope: f32,
        #[define(F)] _dtype: StorageType,
    ) {
        let pos = ABSOLUTE_POS;
        if pos >= out.len() {
            terminate!();
        }
        let r = pos / n as usize;
        let i = pos % n as usize;
        let a = f32::cast_from(gate[r * gate_row as usize + i]);
        let act = a / (f32::new(1.0) + (-slope * a).exp());
        out[pos] = F::cast_from(act) * up[r * up_row as usize + i];
    }

    /// Rotary embedding of `x [b, h, t, d]` (any strides) with `cos`, `sin` `[t, d]` (contiguous):
    /// `out = round(x cos) + round(rotate_half(x) sin)`, `rotate_half(x) = cat(-x2, x1)`, each
    /// product and the sum rounded to the stored dtype as transformers does; `out` contiguous.
    #[cube(launch)]
    pub(super) fn rotary_kernel<F: Float>(
        x: &Tensor<F>,
        cos: &Tensor<F>,
        sin: &Tensor<F>,
        out: &mut Tensor<F>,
        #[define(F)] _dtype: StorageType,
    ) {
        let pos = ABSOLUTE_POS;
        if pos >= out.len() {
            terminate!();
        }
        let d = x.shape(3);
        let t = x.shape(2);
        let h = x.shape(1);
        let half = d / 2;
        let i = pos % d;
        let tt = (pos / d) % t;
        let hh = (pos / (d * t)) % h;
        let bb = pos / (d * t * h);
        let row = bb * x.stride(0) + hh * x.stride(1) + tt * x.stride(2);
        let xi = x[row + i * x.stride(3)];
        let rot = if i < half {
            -x[row + (i + half) * x.stride(3)]
        } else {
            x[row + (i - half) * x.stride(3)]
        };
        let table = tt * d + i;
        out[pos] = xi * cos[table] + rot * sin[table];
    }

    /// One cube per `(batch, head)`: the probabilities of the query `q [b, h, 1, d]` over the keys
    /// `k [b, h, s, d]` (any strides), `out [b * h, s]` in f32. Each score is the dot product in
    /// f32 rounded to the stored dtype (a matmul's output), times `scale` rounded again (torch
    /// multiplies by the Python float in f32), and the softmax runs in f32.
    #[cube(launch)]
    pub(super) fn attention_row_kernel<F: Float>(
        q: &Tensor<F>,
        k: &Tensor<F>,
        out: &mut Tensor<f32>,
        scale: f32,
        #[comptime] block: usize,
        #[define(F)] _dtype: StorageType,
    ) {
        let pair = CUBE_POS;
        let heads = q.shape(1);
        let s = k.shape(2);
        let d = q.shape(3);
        if pair * s >= out.len() {
            terminate!();
        }
        let b = pair / heads;
        let hh = pair % heads;
        let q_base = b * q.stride(0) + hh * q.stride(1);
        let k_base = b * k.stride(0) + hh * k.stride(1);
        let out_base = pair * s;
        let tid = UNIT_POS_X as usize;

        let mut best = f32::new(-3.0e38);
        let mut j = tid;
        while j < s {
            let row = k_base + j * k.stride(2);
            let mut acc = 0.0f32;
            for i in 0..d {
                acc += f32::cast_from(q[q_base + i * q.stride(3)])
                    * f32::cast_from(k[row + i * k.stride(3)]);
            }
            let score = f32::cast_from(F::cast_from(f32::cast_from(F::cast_from(acc)) * scale));
            out[out_base + j] = score;
            if score > best {
                best = score;
            }
            j += block;
        }
        let top = cube_max(best, block);

        let mut sum = 0.0f32;
        let mut j = tid;
        while j < s {
            let e = (out[out_base + j] - top).exp();
            out[out_base + j] = e;
            sum += e;
            j += block;
        }
        let total = cube_sum(sum, block);
        let mut j = tid;
        while j < s {
            out[out_base + j] = out[out_base + j] / total;
            j += block;
        }
    }

    /// `x [k] · w [k, n]` for a contiguous row-major `w`: output columns along the cube's first
    /// axis (coalesced weight reads), the inner dimension split over its second axis and summed in
    /// shared memory, in f32; the result is rounded once to the stored dtype.
    #[cube(launch)]
    pub(super) fn row_times_matrix_kernel<F: Float>(
        x: &Tensor<F>,
        w: &Tensor<F>,
        out: &mut Tensor<F>,
        #[comptime] cols: usize,
        #[comptime] split: usize,
        #[define(F)] _dtype: StorageType,
    ) {
        let n = out.len();
        let k = x.len();
        let tx = UNIT_POS_X as usize;
        let ty = UNIT_POS_Y as usize;
        let col = CUBE_POS * cols + tx;
        let mut acc = 0.0f32;
        if col < n {
            let mut kk = ty;
            while kk < k {
                acc += f32::cast_from(x[kk]) * f32::cast_from(w[kk * n + col]);
                kk += split;
            }
        }
        let mut shared = SharedMemory::<f32>::new(cols * split);
        shared[ty * cols + tx] = acc;
        sync_cube();
        let mut stride = CUBE_DIM_Y as usize / 2;
        while stride > 0 {
            if ty < stride {
                shared[ty * cols + tx] = shared[ty * cols + tx] + shared[(ty + stride) * cols + tx];
            }
            sync_cube();
            stride /= 2;
        }
        if ty == 0 && col < n {
            out[col] = F::cast_from(shared[tx]);
        }
    }
}

/// [`crate::kernels::rms_norm`] on a GPU backend; `None` when `B` is not one, or the kernels
/// are off.
pub(super) fn rms_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Option<Tensor<B, D>> {
    if !enabled() || !is_float(x.dtype()) || x.dtype() != weight.dtype() {
        return None;
    }
    let d = x.dims()[D - 1];
    if d == 0 || weight.dims()[0] != d {
        return None;
    }
    on_cube!(B, |R| {
        let x = into_contiguous(as_cube::<B, R, D>(x)?);
        let w = into_contiguous(as_cube::<B, R, 1>(weight)?);
        let rows = x.meta.shape().num_elements() / d;
        let out = empty_device_dtype(x.client.clone(), x.device.clone(), x.shape(), x.dtype);
        let dtype = x.dtype;
        rms_norm_kernel::launch::<R>(
            &x.client.clone(),
            grid(rows),
            CubeDim::new_1d(ROW_BLOCK as u32),
            x.into_tensor_arg(),
            w.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            eps as f32,
            ROW_BLOCK,
            dtype.into(),
        );
        from_cube::<B, R, D>(out)
    })
}

/// [`crate::kernels::gated_product`] on a GPU backend, for SiLU and quick-GELU.
pub(super) fn gated_product<B: Backend, const D: usize>(
    act: Activation,
    gate: &Tensor<B, D>,
    up: &Tensor<B, D>,
) -> Option<Tensor<B, D>> {
    let slope = match act {
        Activation::Silu => 1.0f32,
        Activation::QuickGelu => 1.702,
        _ => return None,
    };
    if !enabled() || !is_float(gate.dtype()) || gate.dtype() != up.dtype() {
        return None;
    }
    if gate.dims() != up.dims() {
        return None;
    }
    on_cube!(B, |R| {
        let (gate, gate_row) = rows_of(as_cube::<B, R, D>(gate)?);
        let (up, up_row) = rows_of(as_cube::<B, R, D>(up)?);
        let n = gate.meta.shape()[D - 1];
        let total = gate.meta.shape().num_elements();
        if total == 0 || n == 0 || total > u32::MAX as usize {
            return None;
        }
        let out = empty_device_dtype(
            gate.client.clone(),
            gate.device.clone(),
            gate.shape(),
            gate.dtype,
        );
        let dtype = gate.dtype;
        gated_kernel::launch::<R>(
            &gate.client.clone(),
            grid(total.div_ceil(ELEMWISE_BLOCK)),
            CubeDim::new_1d(ELEMWISE_BLOCK as u32),
            gate.into_tensor_arg(),
            up.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n as u32,
            gate_row as u32,
            up_row as u32,
            slope,
            dtype.into(),
        );
        from_cube::<B, R, D>(out)
    })
}

/// `t` as rows of its last axis with one stride between rows, read in place when its layout
/// allows (the last axis contiguous, the leading axes collapsible into one, as for a slice of
/// a fused projection's output), else copied contiguous: `(tensor, row stride)`.
fn rows_of<R: CubeRuntime>(t: CubeTensor<R>) -> (CubeTensor<R>, usize) {
    let shape = t.meta.shape().clone();
    let strides = t.meta.strides().clone();
    let rank = shape.num_dims();
    let n = shape[rank - 1];
    let collapsible = (0..rank.saturating_sub(2))
        .all(|j| shape[j] == 1 || strides[j] == strides[j + 1] * shape[j + 1]);
    let row = if rank >= 2 { strides[rank - 2] } else { n };
    let fits = row <= u32::MAX as usize && (n == 1 || strides[rank - 1] == 1);
    if collapsible && fits && row >= n {
        (t, row)
    } else {
        (into_contiguous(t), n)
    }
}

/// Rotary embedding on a GPU backend: `x [b, h, t, d]` (any strides), `cos`, `sin` with `t * d`
/// elements in `[t, d]` order and `x`'s dtype. The output is contiguous.
pub(super) fn rotary<B: Backend>(
    x: &Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    let [b, h, t, d] = x.dims();
    if !enabled() || !is_float(x.dtype()) || d % 2 != 0 {
        return None;
    }
    if cos.dims() != [1, 1, t, d] || sin.dims() != [1, 1, t, d] {
        return None;
    }
    if cos.dtype() != x.dtype() || sin.dtype() != x.dtype() {
        return None;
    }
    on_cube!(B, |R| {
        let xc = as_cube::<B, R, 4>(x)?;
        let cos = into_contiguous(as_cube::<B, R, 4>(cos)?);
        let sin = into_contiguous(as_cube::<B, R, 4>(sin)?);
        let n = b * h * t * d;
        if n == 0 {
            return None;
        }
        let out = empty_device_dtype(
            xc.client.clone(),
            xc.device.clone(),
            Shape::new([b, h, t, d]),
            xc.dtype,
        );
        let dtype = xc.dtype;
        rotary_kernel::launch::<R>(
            &xc.client.clone(),
            grid(n.div_ceil(ELEMWISE_BLOCK)),
            CubeDim::new_1d(ELEMWISE_BLOCK as u32),
            xc.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            dtype.into(),
        );
        from_cube::<B, R, 4>(out)
    })
}

/// The attention probabilities of one query on a GPU backend: `q [b, h, 1, d]`, `k [b, h, s,
/// d]` (any strides, same dtype) -> `[b * h, s]` in f32.
pub(super) fn attention_row<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    scale: f64,
) -> Option<Tensor<B, 2>> {
    let [b, h, one, d] = q.dims();
    let [kb, kh, s, kd] = k.dims();
    if !enabled() || !is_float(q.dtype()) || q.dtype() != k.dtype() {
        return None;
    }
    if one != 1 || kb != b || kh != h || kd != d || s == 0 || b * h == 0 {
        return None;
    }
    on_cube!(B, |R| {
        let qc = as_cube::<B, R, 4>(q)?;
        let kc = as_cube::<B, R, 4>(k)?;
        let out = empty_device_dtype(
            qc.client.clone(),
            qc.device.clone(),
            Shape::new([b * h, s]),
            DType::F32,
        );
        let dtype = qc.dtype;
        attention_row_kernel::launch::<R>(
            &qc.client.clone(),
            grid(b * h),
            CubeDim::new_1d(ROW_BLOCK as u32),
            qc.into_tensor_arg(),
            kc.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            scale as f32,
            ROW_BLOCK,
            dtype.into(),
        );
        from_cube::<B, R, 2>(out)
    })
}

/// [`crate::kernels::linear`] for one row on a GPU backend: `x` with one row of `k`, `w [k, n]`
/// contiguous, same dtype.
pub(super) fn row_times_matrix<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    w: &Tensor<B, 2>,
) -> Option<Tensor<B, D>> {
    let dims = x.dims();
    let [k, n] = w.dims();
    if dims[..D - 1].iter().product::<usize>() != 1 || dims[D - 1] != k || n == 0 || k == 0 {
        return None;
    }
    if !enabled() || !is_float(x.dtype()) || x.dtype() != w.dtype() {
        return None;
    }
    on_cube!(B, |R| {
        let wc = as_cube::<B, R, 2>(w)?;
        if !wc.is_contiguous() {
            return None;
        }
        let xc = into_contiguous(as_cube::<B, R, D>(x)?);
        let mut shape = dims;
        shape[D - 1] = n;
        let out = empty_device_dtype(
            xc.client.clone(),
            xc.device.clone(),
            Shape::new(shape),
            xc.dtype,
        );
        let dtype = xc.dtype;
        let max_units = xc.client.properties().hardware.max_units_per_cube as usize;
        let split = (max_units / GEMV_COLS).clamp(1, GEMV_SPLIT);
        // A power of two, for the halving reduction.
        let split = 1 << split.ilog2();
        row_times_matrix_kernel::launch::<R>(
            &xc.client.clone(),
            grid(n.div_ceil(GEMV_COLS)),
            CubeDim::new_2d(GEMV_COLS as u32, split as u32),
            xc.into_tensor_arg(),
            wc.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            GEMV_COLS,
            split,
            dtype.into(),
        );
        from_cube::<B, R, D>(out)
    })
}

/// Each kernel against burn's composition of the same formula on the same backend (wgpu; on a
/// machine without a GPU, Mesa's lavapipe), f32, with shapes that leave partial blocks and
/// inputs given as strided views where the models pass views.
#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use burn::tensor::{activation, DType, Distribution, Tensor};

    use crate::backend::Wgpu;
    use crate::config::Activation;

    fn normal<const D: usize>(shape: [usize; D]) -> Tensor<Wgpu, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// The largest difference, relative to the largest magnitude of `want`.
    fn rel_diff<const D: usize>(got: Tensor<Wgpu, D>, want: Tensor<Wgpu, D>) -> f32 {
        assert_eq!(got.dims(), want.dims());
        let scale = want.clone().abs().max().into_scalar().max(1e-30);
        (got - want).abs().max().into_scalar() / scale
    }

    #[test]
    fn rms_norm_matches_burn() {
        // 10 rows of 300 (more than one block of 256 threads), given as a strided view.
        let x = normal([5, 2, 300]).swap_dims(0, 1);
        let w = normal([300]);
        let got = super::rms_norm(&x, &w, 1e-6).expect("wgpu f32 takes the kernel");
        let var = x.clone().powi_scalar(2).mean_dim(2);
        let want = x * (var + 1e-6).sqrt().recip() * w.unsqueeze();
        let diff = rel_diff(got, want);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn gated_product_matches_burn() {
        let gate = normal([3, 1001]);
        let up = normal([3, 1001]);
        let silu = super::gated_product(Activation::Silu, &gate, &up).expect("kernel");
        let want = activation::silu(gate.clone()) * up.clone();
        let diff = rel_diff(silu, want);
        assert!(diff < 1e-5, "SiLU: {diff}");
        let quick = super::gated_product(Activation::QuickGelu, &gate, &up).expect("kernel");
        let want = gate.clone() * activation::sigmoid(gate.clone() * 1.702) * up.clone();
        let diff = rel_diff(quick, want);
        assert!(diff < 1e-5, "quick-GELU: {diff}");
        assert!(super::gated_product(Activation::Gelu, &gate, &up).is_none());
        // Gate and up as views of one fused projection's output, read in place.
        let fused = normal([2, 3, 2002]);
        let gate = fused.clone().narrow(2, 0, 1001);
        let up = fused.narrow(2, 1001, 1001);
        let got = super::gated_product(Activation::Silu, &gate, &up).expect("kernel");
        let want = activation::silu(gate) * up;
        let diff = rel_diff(got, want);
        assert!(diff < 1e-5, "fused views: {diff}");
    }

    /// Causal attention with more keys than queries (a question after a cached prefix) is
    /// aligned bottom-right: query `i` of `tq` sees keys `0..=i + tk - tq`.
    #[test]
    fn causal_attention_after_a_prefix_is_bottom_right() {
        let (tq, tk) = (3, 7);
        let q = normal([1, 2, tq, 8]);
        let k = normal([1, 2, tk, 8]);
        let v = normal([1, 2, tk, 4]);
        let got = crate::kernels::attention(q.clone(), k.clone(), v.clone(), true);
        let scores = q.matmul(k.swap_dims(2, 3)) * (8f64).powf(-0.5);
        let mut mask = vec![0f32; tq * tk];
        for i in 0..tq {
            for j in i + tk - tq + 1..tk {
                mask[i * tk + j] = -1e30;
            }
        }
        let mask = Tensor::<Wgpu, 1>::from_floats(mask.as_slice(), &Default::default())
            .reshape([1, 1, tq, tk]);
        let probs = activation::softmax(scores + mask, 3);
        let want = probs.matmul(v).swap_dims(1, 2).reshape([1, tq, 8]);
        let diff = rel_diff(got, want);
        assert!(diff < 1e-5, "{diff}");
    }

    /// Fused projections give the parts' own outputs (on wgpu they fuse by default).
    #[test]
    fn fused_projections_match_apart() {
        use crate::nn::{Linear, Projections};
        let parts: Vec<Linear<Wgpu>> = [24, 8, 8]
            .into_iter()
            .map(|out| Linear {
                weight_t: normal([16, out]),
                bias: Some(normal([out])),
            })
            .collect();
        assert!(crate::kernels::fuses_projections::<Wgpu>());
        let apart = Projections::new(parts.clone(), false);
        let fused = Projections::new(parts, true);
        assert!(fused.is_fused() && !apart.is_fused());
        let x = normal([1, 5, 16]);
        let a: [Tensor<Wgpu, 3>; 3] = apart.forward(x.clone());
        let f: [Tensor<Wgpu, 3>; 3] = fused.forward(x);
        for (a, f) in a.into_iter().zip(f) {
            let diff = rel_diff(f, a);
            assert!(diff < 1e-5, "{diff}");
        }
    }

    #[test]
    fn rotary_matches_burn() {
        // Heads split off a projection: `[b, t, h, d]` seen as `[b, h, t, d]`.
        let x = normal([2, 7, 3, 8]).swap_dims(1, 2);
        let cos = normal([1, 1, 7, 8]);
        let sin = normal([1, 1, 7, 8]);
        let got = super::rotary(&x, &cos, &sin).expect("kernel");
        let x1 = x.clone().narrow(3, 0, 4);
        let x2 = x.clone().narrow(3, 4, 4);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let want = x * cos + rotated * sin;
        let diff = rel_diff(got, want);
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn attention_row_matches_burn() {
        // The last query of a block (a narrowed view), 300 keys (more than one block) read as
        // heads split off a projection.
        let q = normal([1, 3, 5, 16]).narrow(2, 4, 1);
        let k = normal([1, 300, 3, 16]).swap_dims(1, 2);
        let scale = 0.25;
        let got = super::attention_row(&q, &k, scale).expect("kernel");
        let scores = q.matmul(k.swap_dims(2, 3)) * scale;
        let want = activation::softmax(scores, 3).reshape([3, 300]);
        assert_eq!(got.dtype(), DType::F32);
        let diff = rel_diff(got.clone(), want);
        assert!(diff < 1e-5, "{diff}");
        let sums = got.sum_dim(1).into_data().to_vec::<f32>().expect("f32");
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
    }

    #[test]
    fn row_times_matrix_matches_matmul() {
        // Output columns not a multiple of the cube's 32, inner size not a multiple of its split.
        for (k, n) in [(37, 70), (301, 1000)] {
            let x = normal([1, 1, k]);
            let w = normal([k, n]);
            let got = super::row_times_matrix(&x, &w).expect("kernel");
            let want = x.clone().matmul(w.clone().unsqueeze());
            let diff = rel_diff(got, want);
            assert!(diff < 1e-5, "{k}x{n}: {diff}");
        }
        // Two rows, or a transposed (strided) weight, go to burn's product.
        let w = normal([8, 16]);
        assert!(super::row_times_matrix(&normal([1, 2, 8]), &w).is_none());
        assert!(super::row_times_matrix(&normal([1, 1, 16]), &w.transpose()).is_none());
    }
}

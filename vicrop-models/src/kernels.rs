//! The one product the CPU backend's kernels do poorly: a single row times a weight matrix.
//!
//! Every generated token runs each linear layer and the LM head on one row (`m = 1`). For
//! that shape the `gemm` crate under burn-flex reaches about two thirds of the memory
//! bandwidth, and burn-flex multiplies bf16 by first converting both operands, the whole
//! weight included, to f32 on every call (about 150 ms for one `4096 x 11008` projection,
//! against 10 ms in f16). [`linear`] therefore computes `m = 1` products in f32 and bf16 on
//! burn-flex itself: the weight is streamed once, in row blocks, a few per thread, each
//! accumulating a partial output row in f32 (widening bf16 rows as it goes), and the partial
//! rows are summed. f16 stays with gemm's kernels, which are faster there. Every other shape,
//! and every other backend (autodiff included, so gradients are untouched), goes to burn's
//! `matmul`.
//!
//! `tools/bench_cpu.py` and `examples/cpu_kernels.rs` measure it; the numbers are in
//! `docs/performance.md`.

use burn::tensor::{backend::Backend, Tensor};

/// `x [.., k] · w [k, n] -> [.., n]` for a weight stored `[in, out]` (see [`crate::nn::Linear`]).
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, w: &Tensor<B, 2>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::row_times_matrix(&x, w) {
        return y;
    }
    x.matmul(w.clone().unsqueeze())
}

#[cfg(feature = "flex")]
mod flex {
    use std::any::Any;

    use burn::tensor::{backend::Backend, DType, Tensor, TensorData, TensorPrimitive};
    use burn_flex::FlexTensor;
    use half::bf16;
    use half::slice::HalfFloatSliceExt;
    use rayon::prelude::*;

    /// The backend tensor behind `t` when `B` is burn-flex (not wrapped in autodiff).
    fn as_flex<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<FlexTensor> {
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

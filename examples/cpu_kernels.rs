//! The CPU backend's matrix products at LLaVA-1.5-7B widths, per weight layout and dtype.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release --example cpu_kernels
//! ```
//!
//! A checkpoint stores a linear layer's weight as `[out, in]`. Used as the right-hand side of
//! `x [m, in]` it is either copied once at load time into `[in, out]` ("row-major") or used
//! through a transposed view ("[out,in] view", no copy). This prints both, for a prefill-sized
//! product (m = 600) and a decode step (m = 1), in each dtype the backend stores.

use std::time::Instant;

use burn::tensor::{DType, Distribution, Tensor};
use vicrop::models::backend::Cpu;
use vicrop::models::kernels::linear;

fn time<F: FnMut() -> Tensor<Cpu, 2>>(mut f: F, repeats: usize) -> f64 {
    let _ = f().into_data(); // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let t0 = Instant::now();
        let _ = f().into_data();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let device = Default::default();
    let (k, n) = (4096, 11008);
    println!("backend {}", vicrop::models::backend::CPU_BACKEND);
    println!("| product | dtype | layout | ms | GFLOP/s |");
    println!("|---|---|---|---|---|");
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let w_out_in = Tensor::<Cpu, 2>::random([n, k], Distribution::Default, &device).cast(dtype);
        let w_in_out = w_out_in.clone().transpose().cast(DType::F32).cast(dtype);
        // A contiguous copy: going through the host guarantees a fresh row-major buffer.
        let w_in_out = Tensor::<Cpu, 2>::from_data(w_in_out.into_data(), (&device, dtype));
        for m in [600usize, 1] {
            let x = Tensor::<Cpu, 2>::random([m, k], Distribution::Default, &device).cast(dtype);
            let repeats = if m == 1 { 20 } else { 3 };
            for (layout, w) in [
                ("[in,out] row-major", &w_in_out),
                ("[out,in] view", &w_out_in),
            ] {
                let s = time(
                    || {
                        let w = if layout.starts_with("[out") {
                            w.clone().transpose()
                        } else {
                            w.clone()
                        };
                        x.clone().matmul(w)
                    },
                    repeats,
                );
                let gflops = 2.0 * (m * k * n) as f64 / s / 1e9;
                println!(
                    "| [{m}x{k}] x [{k}x{n}] | {dtype:?} | {layout} | {:.1} | {gflops:.0} |",
                    s * 1e3
                );
            }
            if m == 1 {
                // What the models use: vicrop's own row kernel on burn-flex (f32 and bf16; an
                // f16 weight goes to gemm, as in the row-major line above).
                let s = time(|| linear(x.clone(), &w_in_out), repeats);
                let gbs = (k * n * dtype.size()) as f64 / s / 1e9;
                println!(
                    "| [{m}x{k}] x [{k}x{n}] | {dtype:?} | [in,out], vicrop::models::kernels::linear | {:.1} | {:.0} ({gbs:.1} GB/s of weights) |",
                    s * 1e3,
                    2.0 * (m * k * n) as f64 / s / 1e9
                );
            }
        }
    }
}

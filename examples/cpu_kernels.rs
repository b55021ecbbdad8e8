//! The CPU backend's matrix products at LLaVA-1.5-7B widths, per weight layout and dtype, and
//! its attention and activations against `vicrop_models::kernels`'.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release --example cpu_kernels
//! ```
//!
//! A checkpoint stores a linear layer's weight as `[out, in]`. Used as the right-hand side of
//! `x [m, in]` it is either copied once at load time into `[in, out]` ("row-major") or used
//! through a transposed view ("[out,in] view", no copy). This prints both, for a prefill-sized
//! product (m = 600) and a decode step (m = 1), in each dtype the backend stores.
//!
//! A second table times, in f32, burn's `attention` (heads merged afterwards, as the models
//! used it) against `kernels::attention` for CLIP ViT-L/14-336 (16 heads of 577 positions,
//! split off one `[577, 3072]` q/k/v projection), a 600-token LLaMA prefill and a 600-token
//! answer after a 576-token prefix (32 heads of 128, causal); burn's composed quick-GELU and
//! SiLU against `nn::activate` (fused on burn-flex) at CLIP's and LLaMA's MLP widths; and
//! burn's composed LayerNorm (CLIP's width), RMSNorm (LLaMA's) and product-then-bias (CLIP's
//! first MLP layer) against `kernels::layer_norm`, `rms_norm` and `affine`.

use std::time::Instant;

use burn::tensor::{
    activation::{sigmoid, silu},
    module::attention as burn_attention,
    ops::AttentionModuleOptions,
    DType, Distribution, Tensor,
};
use vicrop::models::backend::Cpu;
use vicrop::models::config::Activation;
use vicrop::models::kernels::{affine, attention, layer_norm, linear, rms_norm};
use vicrop::models::nn::activate;

fn time<const D: usize, F: FnMut() -> Tensor<Cpu, D>>(mut f: F, repeats: usize) -> f64 {
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
    attention_and_activations();
}

/// Attention and activations, burn's operations against vicrop's kernels (f32).
fn attention_and_activations() {
    let device = &Default::default();
    let normal = Distribution::Normal(0.0, 1.0);
    println!();
    println!("| operation | burn ms | vicrop ms |");
    println!("|---|---|---|");
    // (name, heads, queries, keys, head dim, causal)
    for (name, h, tq, tk, hd, causal) in [
        ("CLIP attention, 16 x 577 x 64", 16, 577, 577, 64, false),
        (
            "LLaMA prefill attention, 32 x 600 x 128, causal",
            32,
            600,
            600,
            128,
            true,
        ),
        (
            "LLaMA answer after a prefix, 32 x 600 (1176 keys) x 128, causal",
            32,
            600,
            1176,
            128,
            true,
        ),
    ] {
        // Heads split off one projection output, as the models call it: views, not copies.
        let heads = |t: usize, i: usize, qkv: &Tensor<Cpu, 3>| {
            qkv.clone()
                .reshape([1, t, 3 * h, hd])
                .narrow(2, i * h, h)
                .swap_dims(1, 2)
        };
        let qkv_q = Tensor::<Cpu, 3>::random([1, tq, 3 * h * hd], normal, device);
        let qkv_k = Tensor::<Cpu, 3>::random([1, tk, 3 * h * hd], normal, device);
        let (q, k, v) = (
            heads(tq, 0, &qkv_q),
            heads(tk, 1, &qkv_k),
            heads(tk, 2, &qkv_k),
        );
        let options = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        let burn = time(
            || {
                burn_attention(q.clone(), k.clone(), v.clone(), None, None, options)
                    .swap_dims(1, 2)
                    .reshape([1, tq, h * hd])
            },
            3,
        );
        let ours = time(|| attention(q.clone(), k.clone(), v.clone(), causal), 3);
        println!("| {name} | {:.1} | {:.1} |", burn * 1e3, ours * 1e3);
    }
    for (name, act, shape) in [
        (
            "quick-GELU, 577 x 4096",
            Activation::QuickGelu,
            [1, 577, 4096],
        ),
        ("SiLU, 600 x 11008", Activation::Silu, [1, 600, 11008]),
    ] {
        let x = Tensor::<Cpu, 3>::random(shape, normal, device);
        let burn = time(
            || match act {
                Activation::QuickGelu => x.clone() * sigmoid(x.clone() * 1.702),
                _ => silu(x.clone()),
            },
            5,
        );
        let ours = time(|| activate(act, x.clone()), 5);
        println!("| {name} | {:.1} | {:.1} |", burn * 1e3, ours * 1e3);
    }
    // The norms and a biased product as burn composes them (what the models ran before).
    let eps = 1e-5;
    let x = Tensor::<Cpu, 3>::random([1, 577, 1024], normal, device);
    let (w, b) = (
        Tensor::<Cpu, 1>::random([1024], normal, device),
        Tensor::<Cpu, 1>::random([1024], normal, device),
    );
    let burn = time(
        || {
            let centred = x.clone() - x.clone().mean_dim(2);
            let var = centred.clone().powi_scalar(2).mean_dim(2);
            centred / (var + eps).sqrt() * w.clone().unsqueeze() + b.clone().unsqueeze()
        },
        5,
    );
    let ours = time(|| layer_norm(x.clone(), &w, &b, eps), 5);
    println!(
        "| LayerNorm, 577 x 1024 | {:.1} | {:.1} |",
        burn * 1e3,
        ours * 1e3
    );
    let x = Tensor::<Cpu, 3>::random([1, 600, 4096], normal, device);
    let w = Tensor::<Cpu, 1>::random([4096], normal, device);
    let burn = time(
        || {
            let ms = x.clone().powi_scalar(2).mean_dim(2);
            x.clone() * (ms + eps).sqrt().recip() * w.clone().unsqueeze()
        },
        5,
    );
    let ours = time(|| rms_norm(x.clone(), &w, eps), 5);
    println!(
        "| RMSNorm, 600 x 4096 | {:.1} | {:.1} |",
        burn * 1e3,
        ours * 1e3
    );
    let x = Tensor::<Cpu, 3>::random([1, 577, 1024], normal, device);
    let m = Tensor::<Cpu, 2>::random([1024, 4096], normal, device);
    let b = Tensor::<Cpu, 1>::random([4096], normal, device);
    let burn = time(
        || x.clone().matmul(m.clone().unsqueeze()) + b.clone().unsqueeze(),
        5,
    );
    let ours = time(|| affine(x.clone(), &m, Some(&b)), 5);
    println!(
        "| product and bias, [577x1024] x [1024x4096] + [4096] | {:.1} | {:.1} |",
        burn * 1e3,
        ours * 1e3
    );
}

//! Times one vision pass, one prefill and one decode step of a LLaVA checkpoint on the CPU,
//! the three building blocks of every ViCrop answer. `tools/bench_cpu.py` runs it next to the
//! same steps in PyTorch.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release --example llm_step -- MODEL_DIR [POSITIONS] [REPEATS] [DTYPE]
//! ```
//!
//! Prints one JSON object: the best of `REPEATS` (default 3) for a prefill of `POSITIONS`
//! (default 600) random embeddings into an empty cache, final norm and next-token logits of the
//! last position included (the LM head as generation runs it, then a log-softmax and its
//! maximum, as the Python side does), and for one decode step after it (one new position, the
//! same logits), and for one vision pass (random pixels through the vision tower and the
//! projector, as one answer's image). `DTYPE` is `f32` (default), `f16` or `bf16`. Model
//! loading is excluded.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::activation::log_softmax;
use burn::tensor::{backend::Backend, DType, Distribution, Tensor};
use vicrop::models::{backend::Cpu, llama::Llama, LlavaModel, LoadOptions};

/// What a generation step does after the decoder: the LM head on the last position, then
/// (as the Python side of `tools/bench_cpu.py`) its log-softmax and maximum, read back.
fn next_token(llm: &Llama<Cpu>, hidden: Tensor<Cpu, 2>) -> Result<()> {
    let t = hidden.dims()[0];
    let logits = llm.logits(hidden.narrow(0, t - 1, 1)).cast(DType::F32);
    let best = log_softmax(logits, 1).max().into_scalar();
    if !best.is_finite() {
        bail!("non-finite logits");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .context("usage: llm_step MODEL_DIR [POSITIONS] [REPEATS] [DTYPE]")?;
    let positions: usize = args
        .get(1)
        .map_or(Ok(600), |s| s.parse())
        .context("POSITIONS")?;
    let repeats: usize = args
        .get(2)
        .map_or(Ok(3), |s| s.parse())
        .context("REPEATS")?;
    let dtype = match args.get(3).map(String::as_str).unwrap_or("f32") {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("DTYPE must be f32, f16 or bf16, not {other}"),
    };
    if positions == 0 || repeats == 0 {
        bail!("POSITIONS and REPEATS must be at least 1");
    }
    let device = Default::default();
    let t0 = Instant::now();
    let model = LlavaModel::<Cpu>::load(dir.as_ref(), &device, LoadOptions::with_dtype(dtype))?;
    let load_s = t0.elapsed().as_secs_f64();
    let llm = model.net().llm();
    let d = llm.config().hidden_size;
    let x = Tensor::<Cpu, 3>::random([1, positions, d], Distribution::Normal(0.0, 0.02), &device)
        .cast(dtype);
    let step =
        Tensor::<Cpu, 3>::random([1, 1, d], Distribution::Normal(0.0, 0.02), &device).cast(dtype);

    let r = model.net().vision().config().image_size;
    let pixels =
        Tensor::<Cpu, 4>::random([1, 3, r, r], Distribution::Normal(0.0, 1.0), &device).cast(dtype);

    let mut prefill = f64::INFINITY;
    let mut decode = f64::INFINITY;
    let mut vision = f64::INFINITY;
    // Round 0 warms up allocations and thread pools and is not counted.
    for round in 0..=repeats {
        let mut cache = llm.new_cache();
        let t = Instant::now();
        let out = llm.forward(x.clone(), &mut cache, None)?;
        let hidden = out
            .hidden
            .context("the forward returned no hidden states")?;
        next_token(llm, hidden)?;
        let p = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = llm.forward(step.clone(), &mut cache, None)?;
        let hidden = out
            .hidden
            .context("the forward returned no hidden states")?;
        next_token(llm, hidden)?;
        let s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let features = model.net().encode_images(pixels.clone());
        Cpu::sync(&device).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        drop(features);
        let v = t.elapsed().as_secs_f64();
        if round > 0 {
            prefill = prefill.min(p);
            decode = decode.min(s);
            vision = vision.min(v);
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "backend": vicrop::models::backend::CPU_BACKEND,
            "dtype": format!("{dtype:?}").to_lowercase(),
            "positions": positions,
            "layers": llm.num_layers(),
            "load_s": load_s,
            "prefill_ms": prefill * 1e3,
            "decode_ms": decode * 1e3,
            "vision_ms": vision * 1e3,
        })
    );
    Ok(())
}

//! Criterion benches of the bundled tiny LLaVA checkpoint on the CPU: vision encoding,
//! prompt prefill, and one decode step with a warm KV cache.
//!
//! ```sh
//! cargo bench --bench llava
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use vicrop::core::{load_image, LoadLimits};
use vicrop::models::{backend::Cpu, LlavaModel, LoadOptions};

fn fixture(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn benches(c: &mut Criterion) {
    let model = LlavaModel::<Cpu>::load(
        &fixture("tests/fixtures/llava-tiny-a"),
        &Default::default(),
        LoadOptions::default(),
    )
    .expect("bundled checkpoint loads");
    let image = load_image(
        &fixture("tests/fixtures/images/chelsea.png"),
        &LoadLimits::default(),
    )
    .expect("bundled image loads");
    let ids = model
        .prompt_ids("What is the number on the bus?", 1)
        .expect("prompt tokenizes");
    let pixels = model.pixel_values(&[&image]).expect("image preprocesses");
    let llm = model.net().llm();

    c.bench_function("tiny/encode_image", |b| {
        b.iter(|| model.net().encode_images(pixels.clone()))
    });

    let embeds = model
        .net()
        .embed(&ids, Some(model.net().encode_images(pixels.clone())))
        .expect("embeds");
    c.bench_function(&format!("tiny/prefill_{}_tokens", ids.len()), |b| {
        b.iter(|| {
            let mut cache = llm.new_cache();
            llm.forward(embeds.clone(), &mut cache, None)
                .expect("forward")
        })
    });

    let mut warm = llm.new_cache();
    llm.forward(embeds.clone(), &mut warm, None)
        .expect("forward");
    let next = llm.embed_ids(&[1724]).expect("embed").unsqueeze();
    c.bench_function("tiny/decode_step", |b| {
        b.iter(|| {
            let mut cache = warm.clone();
            let out = llm
                .forward(next.clone(), &mut cache, None)
                .expect("forward");
            let hidden = out.hidden.expect("hidden");
            llm.logits(hidden)
        })
    });
}

criterion_group! {
    name = llava;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(llava);

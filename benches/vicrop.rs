//! Criterion benches of ViCrop on the bundled tiny checkpoint (CPU): each map method on a
//! prepared image, the first question on an image (prepare + full run), and the box search.
//!
//! ```sh
//! cargo bench --bench vicrop
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use vicrop::core::{
    load_image, AdaptiveWindow, CropSelector, LoadLimits, Method, Question, SaliencyMap, ViCrop,
};
use vicrop::models::{backend::Cpu, LlavaModel, LlavaVicrop, LoadOptions};

fn fixture(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn benches(c: &mut Criterion) {
    // Box search on a 24x24 map and on a stitched high-res 48x96 map.
    let map24 = SaliencyMap::new(
        24,
        24,
        (0..576).map(|i| ((i * 7919) % 577) as f32).collect(),
    )
    .expect("map");
    let map_hr = SaliencyMap::new(
        48,
        96,
        (0..4608).map(|i| ((i * 7919) % 4609) as f32).collect(),
    )
    .expect("map");
    let selector = AdaptiveWindow::new(336);
    c.bench_function("box/24x24_on_1024x768", |b| {
        b.iter(|| selector.select(&map24, (1024, 768)))
    });
    c.bench_function("box/48x96_on_4096x2048", |b| {
        b.iter(|| selector.select(&map_hr, (4096, 2048)))
    });

    let model = LlavaModel::<Cpu>::load(
        &fixture("tests/fixtures/llava-tiny-a"),
        &Default::default(),
        LoadOptions::default(),
    )
    .expect("bundled checkpoint");
    let image = load_image(
        &fixture("tests/fixtures/images/chelsea.png"),
        &LoadLimits::default(),
    )
    .expect("image");
    let pipeline = ViCrop::new(LlavaVicrop::new(model));
    let question = "What is the number on the bus?";

    // Maps on a prepared image whose general map is already cached (the steady state of many
    // questions about one image).
    let mut prepared = pipeline.prepare(&image).expect("prepare");
    for method in Method::ALL {
        pipeline
            .map(&mut prepared, question, method, None, None, false)
            .expect("warm");
        c.bench_function(&format!("map/{}", method.name()), |b| {
            b.iter(|| {
                // Forget the question's cached row; the image's general map stays cached.
                prepared.forget_questions();
                pipeline
                    .map(&mut prepared, question, method, None, None, false)
                    .expect("map")
            })
        });
    }

    // A first question on an image: prepare + baseline + map + box + crop answer.
    for method in Method::ALL {
        c.bench_function(&format!("run_first_question/{}", method.name()), |b| {
            b.iter(|| {
                let mut p = pipeline.prepare(&image).expect("prepare");
                pipeline
                    .run(&mut p, &Question::new(question, method))
                    .expect("run")
            })
        });
    }
}

criterion_group! {
    name = vicrop;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(vicrop);

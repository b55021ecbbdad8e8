//! One loaded model, many threads: an agent-style server answering "zoom in" requests
//! concurrently. The model and the `ViCrop` pipeline are `Send + Sync` (shared here through an
//! `Arc`); each thread owns the images it prepares.
//!
//! ```sh
//! cargo run --release --example threads -- tests/fixtures/instructblip-tiny-a tests/fixtures/images/chelsea.png
//! ```
//!
//! Either family works: the folder's `config.json` picks LLaVA-1.5 or InstructBLIP.

use std::sync::Arc;

use anyhow::{Context, Result};
use vicrop::core::{
    load_image, AttentionSource, GradientSource, LoadLimits, Method, Question, RgbImage, ViCrop,
};
use vicrop::models::{
    backend::Cpu, hub::resolve_model_dir, AnyModel, InstructBlipVicrop, LlavaVicrop, LoadOptions,
};

fn serve<M>(pipeline: ViCrop<M>, image: RgbImage) -> Result<()>
where
    M: AttentionSource + GradientSource + 'static,
{
    let pipeline = Arc::new(pipeline);
    let image = Arc::new(image);
    let requests = [
        ("What is the number on the bus?", Method::RelAtt),
        ("What color is the cat?", Method::GradAtt),
        ("What is written on the sign?", Method::PureGrad),
    ];
    let workers: Vec<_> = requests
        .into_iter()
        .map(|(text, method)| {
            let (pipeline, image) = (Arc::clone(&pipeline), Arc::clone(&image));
            std::thread::spawn(move || -> Result<String> {
                // Per-thread state: this thread's prepared image and its caches.
                let mut prepared = pipeline.prepare(&image)?;
                let out = pipeline.run(&mut prepared, &Question::new(text, method))?;
                Ok(format!(
                    "{text} [{}] box {:?}: {:?} -> {:?}",
                    method.name(),
                    out.bbox.to_array(),
                    out.answer.text,
                    out.crop_answer.text
                ))
            })
        })
        .collect();
    for w in workers {
        let line = w
            .join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        println!("{line}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: threads MODEL IMAGE";
    let dir = resolve_model_dir(&args.next().context(usage)?)?;
    let image = load_image(args.next().context(usage)?.as_ref(), &LoadLimits::default())?;
    match AnyModel::<Cpu>::load(&dir, &Default::default(), LoadOptions::default())? {
        AnyModel::Llava(m) => serve(ViCrop::new(LlavaVicrop::new(*m)), image),
        AnyModel::InstructBlip(m) => serve(ViCrop::new(InstructBlipVicrop::new(*m)), image),
    }
}

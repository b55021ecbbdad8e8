//! ViCrop through the library: load once, prepare an image once, ask several questions.
//!
//! ```sh
//! cargo run --release --example vicrop -- tests/fixtures/llava-tiny-a tests/fixtures/images/chelsea.png
//! ```
//!
//! The bundled checkpoint has random weights (meaningless answers, real computation); pass a
//! `llava-hf/llava-1.5-7b-hf` folder or hub id for real ones.

use anyhow::{Context, Result};
use vicrop::core::{load_image, LoadLimits, Method, Question, ViCrop};
use vicrop::models::{backend::Cpu, hub::resolve_model_dir, LlavaModel, LlavaVicrop, LoadOptions};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: vicrop MODEL IMAGE";
    let dir = resolve_model_dir(&args.next().context(usage)?)?;
    let image = load_image(args.next().context(usage)?.as_ref(), &LoadLimits::default())?;

    let model = LlavaModel::<Cpu>::load(&dir, &Default::default(), LoadOptions::default())?;
    let pipeline = ViCrop::new(LlavaVicrop::new(model));

    // The image is encoded, and its [BOS, image] prefix run, once for all questions; the
    // general-description map is cached after the first rel-att question.
    let mut prepared = pipeline.prepare(&image)?;
    for (text, method) in [
        ("What is the number on the bus?", Method::RelAtt),
        ("What color is the sign?", Method::RelAtt),
        ("What is written on the shirt?", Method::GradAtt),
    ] {
        let out = pipeline.run(&mut prepared, &Question::new(text, method))?;
        println!("{text} [{}]", method.name());
        println!("  answer:       {}", out.answer.text);
        println!("  crop box:     {:?}", out.bbox.to_array());
        println!("  with crop:    {}", out.crop_answer.text);
        println!(
            "  LLM positions {} (reference pipeline {})",
            out.cost.llm_positions, out.reference_cost.llm_positions
        );
    }
    Ok(())
}

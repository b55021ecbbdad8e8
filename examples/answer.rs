//! Answer a question about an image with the library API.
//!
//! ```sh
//! cargo run --release --example answer -- tests/fixtures/llava-tiny-a tests/fixtures/images/chelsea.png "What animal is this?"
//! ```
//!
//! The bundled checkpoint has random weights: the answer is gibberish, but every step is the
//! real LLaVA-1.5 computation. Point the first argument at a `llava-hf/llava-1.5-7b-hf`
//! folder for real answers.

use anyhow::{Context, Result};
use vicrop::core::{load_image, LoadLimits};
use vicrop::models::{backend::Cpu, hub::resolve_model_dir, LlavaModel, LoadOptions};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: answer MODEL_DIR IMAGE QUESTION";
    let model = args.next().context(usage)?;
    let image = args.next().context(usage)?;
    let question = args.next().context(usage)?;

    let dir = resolve_model_dir(&model)?;
    let model = LlavaModel::<Cpu>::load(&dir, &Default::default(), LoadOptions::default())?;
    let image = load_image(image.as_ref(), &LoadLimits::default())?;
    let answer = model.answer(&[&image], &question, 20)?;
    println!("answer: {}", answer.text);
    println!("token ids: {:?}", answer.token_ids);
    Ok(())
}

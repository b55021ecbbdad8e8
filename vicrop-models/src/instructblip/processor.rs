//! `InstructBlipProcessor`: the BLIP image processor, the LLM tokenizer and the Q-Former's
//! WordPiece tokenizer, and the short-answer prompt.
//!
//! `BlipImageProcessor` squashes the image to `size` (aspect not kept) with PIL's bicubic filter
//! on uint8, rescales, normalises and lays the result out channels-first; there is no crop. It
//! is [`ClipImageProcessor`] with an exact resize target and no crop, so that type (and its
//! Pillow-exact resampler) is reused.

use std::path::{Path, PathBuf};

use vicrop_core::pil::Filter;

use crate::config::{read_json, SizeSpec, CLIP_MEAN, CLIP_STD};
use crate::error::{ModelError, Result};
use crate::llava::processor::{filter_for, mean_std};
use crate::processor::{ClipImageProcessor, ResizeTarget};
use crate::tokenizer::Tokenizer;

use super::config::BlipPreprocessorConfig;

/// The folder `InstructBlipProcessor.save_pretrained` writes the Q-Former tokenizer to.
pub const QFORMER_TOKENIZER_DIR: &str = "qformer_tokenizer";

/// The InstructBLIP short-answer prompt the ViCrop reference uses, read by both the LLM and
/// the Q-Former: `"Question: {question} Short answer:"`.
pub fn instructblip_prompt(question: &str) -> String {
    format!("Question: {question} Short answer:")
}

/// Builds the image processor of a parsed `preprocessor_config.json` (`BlipImageProcessor`).
pub fn blip_image_processor(
    cfg: &BlipPreprocessorConfig,
    path: &Path,
) -> Result<ClipImageProcessor> {
    let bad = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        message,
    };
    let resize = if cfg.do_resize {
        let (width, height) = match &cfg.size {
            SizeSpec::Int(n) => (*n, *n),
            SizeSpec::Dict {
                height: Some(h),
                width: Some(w),
                ..
            } => (*w, *h),
            other => {
                return Err(bad(format!(
                    "size {other:?} is not understood (BlipImageProcessor takes height and width)"
                )))
            }
        };
        if width == 0 || height == 0 {
            return Err(bad("size must be positive".into()));
        }
        Some(ResizeTarget::Exact { width, height })
    } else {
        None
    };
    let filter = filter_for(cfg.resample, bad)?;
    let normalize = if cfg.do_normalize {
        Some(mean_std(&cfg.image_mean, &cfg.image_std, bad)?)
    } else {
        None
    };
    Ok(ClipImageProcessor {
        resize,
        filter,
        crop: None,
        rescale: cfg.do_rescale.then_some(cfg.rescale_factor),
        normalize,
    })
}

/// The BLIP processor transformers uses when `preprocessor_config.json` is absent, sized to
/// the vision tower (bicubic, OpenAI CLIP statistics).
pub fn blip_default_processor(side: u32) -> ClipImageProcessor {
    ClipImageProcessor {
        resize: Some(ResizeTarget::Exact {
            width: side,
            height: side,
        }),
        filter: Filter::Bicubic,
        crop: None,
        rescale: Some(1.0 / 255.0),
        normalize: Some((CLIP_MEAN.map(|v| v as f32), CLIP_STD.map(|v| v as f32))),
    }
}

/// Reads `preprocessor_config.json` in `dir` (or falls back to the default at `side` px) and
/// checks that it produces `side x side` pixel values.
pub fn load_image_processor(dir: &Path, side: usize) -> Result<ClipImageProcessor> {
    let path = dir.join("preprocessor_config.json");
    let processor = if path.is_file() {
        let cfg: BlipPreprocessorConfig = read_json(&path)?;
        blip_image_processor(&cfg, &path)?
    } else {
        tracing::warn!(
            "{} not found; using the BLIP defaults at {side} px",
            path.display()
        );
        blip_default_processor(side as u32)
    };
    match processor.resize {
        Some(ResizeTarget::Exact { width, height })
            if (width as usize, height as usize) == (side, side) => {}
        _ => {
            return Err(ModelError::Config {
                path,
                message: format!(
                    "the processor must resize to the vision tower's {side}x{side} input"
                ),
            })
        }
    }
    Ok(processor)
}

/// Loads the Q-Former tokenizer from `dir/qformer_tokenizer/tokenizer.json`.
///
/// A missing folder is an error naming it (transformers' `InstructBlipProcessor` needs it too).
pub fn load_qformer_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let folder: PathBuf = dir.join(QFORMER_TOKENIZER_DIR);
    if !folder.is_dir() {
        return Err(ModelError::NotFound {
            what: "Q-Former tokenizer folder (qformer_tokenizer/)",
            path: folder,
        });
    }
    Tokenizer::from_file(&folder.join("tokenizer.json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_json;

    #[test]
    fn prompt_template() {
        assert_eq!(
            instructblip_prompt("What is on the table?"),
            "Question: What is on the table? Short answer:"
        );
    }

    #[test]
    fn the_blip_processor_squashes_without_crop() {
        let path = Path::new("preprocessor_config.json");
        let cfg: BlipPreprocessorConfig = parse_json(
            r#"{"size": {"height": 224, "width": 224}, "image_processor_type": "BlipImageProcessor"}"#,
            path,
        )
        .expect("parses");
        let proc = blip_image_processor(&cfg, path).expect("valid");
        assert_eq!(proc.crop, None);
        assert_eq!(proc.output_size(451, 300), (224, 224));
        let img = image::RgbImage::from_pixel(60, 30, image::Rgb([255, 0, 128]));
        assert_eq!(proc.resize_and_crop(&img).dimensions(), (224, 224));
    }

    #[test]
    fn a_shortest_edge_size_is_refused() {
        let path = Path::new("preprocessor_config.json");
        let cfg: BlipPreprocessorConfig =
            parse_json(r#"{"size": {"shortest_edge": 224}}"#, path).expect("parses");
        let err = blip_image_processor(&cfg, path).unwrap_err().to_string();
        assert!(err.contains("height and width"), "{err}");
    }
}

//! Picks the model family from a checkpoint's `config.json`, so callers (the CLI) take either
//! family with no flag: `architectures` first, `model_type` when it is missing.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde::Deserialize;

use crate::config::read_json;
use crate::error::{ModelError, Result};
use crate::instructblip::InstructBlipModel;
use crate::llava::{Answer, LlavaModel, LoadOptions};

/// The model families this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `LlavaForConditionalGeneration` (LLaVA-1.5).
    Llava,
    /// `InstructBlipForConditionalGeneration` (InstructBLIP-Vicuna).
    InstructBlip,
}

impl Family {
    /// The family's name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llava => "LLaVA-1.5",
            Family::InstructBlip => "InstructBLIP",
        }
    }
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    model_type: Option<String>,
}

/// Reads `dir/config.json` and names the family, or says why it is neither.
pub fn detect_family(dir: &Path) -> Result<Family> {
    if !dir.is_dir() {
        return Err(ModelError::NotFound {
            what: "model folder",
            path: dir.to_path_buf(),
        });
    }
    let path = dir.join("config.json");
    let head: Head = read_json(&path)?;
    let by_arch = |a: &str| match a {
        "LlavaForConditionalGeneration" => Some(Family::Llava),
        "InstructBlipForConditionalGeneration" => Some(Family::InstructBlip),
        _ => None,
    };
    let by_type = |t: &str| match t {
        "llava" => Some(Family::Llava),
        "instructblip" => Some(Family::InstructBlip),
        _ => None,
    };
    let found = match (&head.architectures, &head.model_type) {
        (Some(archs), _) if !archs.is_empty() => archs.iter().find_map(|a| by_arch(a)),
        (_, Some(t)) => by_type(t),
        _ => None,
    };
    found.ok_or_else(|| ModelError::Config {
        path,
        message: format!(
            "architectures is {:?} and model_type is {:?}; vicrop runs \
             LlavaForConditionalGeneration (LLaVA-1.5) and InstructBlipForConditionalGeneration \
             (InstructBLIP) checkpoints",
            head.architectures.unwrap_or_default(),
            head.model_type.unwrap_or_default()
        ),
    })
}

/// A loaded checkpoint of either family.
pub enum AnyModel<B: Backend> {
    /// LLaVA-1.5.
    Llava(Box<LlavaModel<B>>),
    /// InstructBLIP.
    InstructBlip(Box<InstructBlipModel<B>>),
}

impl<B: Backend> AnyModel<B> {
    /// Loads the folder with the family its `config.json` names.
    pub fn load(dir: &Path, device: &B::Device, options: LoadOptions) -> Result<Self> {
        Ok(match detect_family(dir)? {
            Family::Llava => AnyModel::Llava(Box::new(LlavaModel::load(dir, device, options)?)),
            Family::InstructBlip => {
                AnyModel::InstructBlip(Box::new(InstructBlipModel::load(dir, device, options)?))
            }
        })
    }

    /// The family.
    pub fn family(&self) -> Family {
        match self {
            AnyModel::Llava(_) => Family::Llava,
            AnyModel::InstructBlip(_) => Family::InstructBlip,
        }
    }

    /// Answers `question` about `images` with the family's short-answer prompt, greedy.
    pub fn answer(
        &self,
        images: &[&image::RgbImage],
        question: &str,
        max_new_tokens: usize,
    ) -> Result<Answer> {
        match self {
            AnyModel::Llava(m) => m.answer(images, question, max_new_tokens),
            AnyModel::InstructBlip(m) => m.answer(images, question, max_new_tokens),
        }
    }
}

//! LLaVA-1.5 (`LlavaForConditionalGeneration`): CLIP vision tower, two-layer projector and
//! LLaMA decoder, with image features spliced at the image-token positions; and
//! [`LlavaModel`], the loaded checkpoint with its processor and tokenizer, which answers
//! questions about images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    DType, Tensor,
};
use image::RgbImage;

use super::processor::ClipImageProcessor;
use crate::clip::ClipVision;
use crate::config::{
    read_json, Activation, GenerationConfig, LlavaConfig, LlavaSpec, PreprocessorConfig,
    SelectStrategy,
};
use crate::error::{ModelError, Result};
pub use crate::llama::argmax_host;
use crate::llama::{KvCache, Llama, Probe};
use crate::nn::{activate, Linear, LoadCtx};
use crate::tokenizer::{expand_image_tags, llava_prompt, Tokenizer};
use crate::weights::{Checkpoint, LoadProgress};

/// The multi-modal projector: `linear_2(act(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct Projector<B: Backend> {
    l1: Linear<B>,
    l2: Linear<B>,
    #[module(skip)]
    act: Activation,
}

impl<B: Backend> Projector<B> {
    /// `x: [n, t, d_vision]` -> `[n, t, d_text]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.l2.forward(activate(self.act, self.l1.forward(x)))
    }
}

/// The LLaVA network.
#[derive(Module, Debug)]
pub struct Llava<B: Backend> {
    #[module(skip)]
    spec: LlavaSpec,
    vision: ClipVision<B>,
    projector: Projector<B>,
    llm: Llama<B>,
}

impl<B: Backend> Llava<B> {
    /// Builds the network from checkpoint weights.
    pub fn load(
        ckpt: &Checkpoint,
        spec: &LlavaSpec,
        device: &B::Device,
        dtype: DType,
    ) -> Result<Self> {
        let ctx = LoadCtx::<B> {
            ckpt,
            device,
            dtype,
        };
        let vision = ClipVision::load(
            &ctx,
            "vision_tower.vision_model",
            &spec.vision,
            spec.vision_act,
            spec.vision_layers_needed(),
        )?;
        let dv = spec.vision.hidden_size * spec.feature_layers.len();
        let dt = spec.text.hidden_size;
        let bias = spec.projector_bias;
        let projector = Projector {
            l1: Linear::load(&ctx, "multi_modal_projector.linear_1", dv, dt, bias)?,
            l2: Linear::load(&ctx, "multi_modal_projector.linear_2", dt, dt, bias)?,
            act: spec.projector_act,
        };
        let llm = Llama::load(&ctx, "language_model", &spec.text)?;
        ckpt.check_all_used()?;
        Ok(Self {
            spec: spec.clone(),
            vision,
            projector,
            llm,
        })
    }

    /// The same weights on an autodiff backend (no copy; weights are not tracked).
    pub fn lift<A: AutodiffBackend<InnerBackend = B>>(&self) -> Llava<A> {
        AutodiffModule::from_inner(self.clone())
    }

    /// The validated configuration.
    pub fn spec(&self) -> &LlavaSpec {
        &self.spec
    }

    /// The language model.
    pub fn llm(&self) -> &Llama<B> {
        &self.llm
    }

    /// The vision tower.
    pub fn vision(&self) -> &ClipVision<B> {
        &self.vision
    }

    /// Selected vision features before the projector.
    ///
    /// `pixels: [n, 3, r, r]` -> `[n, tokens_per_image, d_vision * n_feature_layers]`.
    pub fn image_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let states = self.vision.hidden_states(pixels, &self.spec.feature_layers);
        let x = if states.len() == 1 {
            states.into_iter().next().unwrap_or_else(|| unreachable!())
        } else {
            Tensor::cat(states, 2)
        };
        match self.spec.select {
            SelectStrategy::Full => x,
            SelectStrategy::Default => {
                let t = x.dims()[1];
                x.narrow(1, 1, t - 1)
            }
        }
    }

    /// Projected image features, ready to splice. `pixels: [n, 3, r, r]` -> `[n, tokens, d]`.
    pub fn encode_images(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        self.projector.forward(self.image_features(pixels))
    }

    /// Embeds `ids` and replaces the image-token positions, in order, with the rows of
    /// `images` (`[n, tokens, d]`). `-> [1, len, d]`.
    pub fn embed(&self, ids: &[u32], images: Option<Tensor<B, 3>>) -> Result<Tensor<B, 3>> {
        let text = self.llm.embed_ids(ids)?; // [len, d]
        let d = self.spec.text.hidden_size;
        let image_id = self.spec.image_token_id;
        let n_slots = ids.iter().filter(|&&i| i == image_id).count();
        let feats = match images {
            Some(f) => {
                let [n, t, _] = f.dims();
                f.reshape([n * t, d])
            }
            None => {
                return if n_slots == 0 {
                    Ok(text.unsqueeze())
                } else {
                    Err(ModelError::InvalidInput(format!(
                        "the prompt has {n_slots} image tokens but no image was given"
                    )))
                }
            }
        };
        let n_feats = feats.dims()[0];
        if n_feats != n_slots {
            return Err(ModelError::InvalidInput(format!(
                "the prompt has {n_slots} image tokens but the images give {n_feats} features"
            )));
        }
        // Alternate text runs and image runs in sequence order.
        let mut parts = Vec::new();
        let mut used = 0;
        let mut i = 0;
        while i < ids.len() {
            let is_image = ids[i] == image_id;
            let mut j = i;
            while j < ids.len() && (ids[j] == image_id) == is_image {
                j += 1;
            }
            if is_image {
                parts.push(feats.clone().narrow(0, used, j - i));
                used += j - i;
            } else {
                parts.push(text.clone().narrow(0, i, j - i));
            }
            i = j;
        }
        Ok(Tensor::cat(parts, 0).unsqueeze())
    }
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Generated token ids, EOS excluded.
    pub token_ids: Vec<u32>,
    /// Whether generation ended on an EOS token (else on the token limit).
    pub stopped_at_eos: bool,
    /// When the first generated id reached the host: the end of the prefill (`None` when
    /// nothing was generated).
    pub first_token_at: Option<Instant>,
}

/// An answer: the decoded text and its token ids.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Answer {
    /// The generated tokens decoded, special tokens skipped, trimmed.
    pub text: String,
    /// The generated token ids, EOS excluded.
    pub token_ids: Vec<u32>,
}

/// Options for [`LlavaModel::load`] and [`crate::InstructBlipModel::load`].
#[derive(Clone)]
pub struct LoadOptions {
    /// Compute dtype of weights and activations: F32 (the default), or BF16 / F16 to halve
    /// the memory (on the CPU both run slower than F32; softmax and maps stay F32).
    pub dtype: DType,
    /// Called after each tensor is read (bytes so far, bytes in all), e.g. for a progress bar.
    pub progress: Option<LoadProgress>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("dtype", &self.dtype)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            progress: None,
        }
    }
}

impl LoadOptions {
    /// Default options with compute dtype `dtype`.
    pub fn with_dtype(dtype: DType) -> Self {
        Self {
            dtype,
            ..Self::default()
        }
    }
}

/// A loaded LLaVA-1.5 checkpoint: network, image processor, tokenizer, generation settings.
#[derive(Debug, Clone)]
pub struct LlavaModel<B: Backend> {
    net: Llava<B>,
    processor: ClipImageProcessor,
    tokenizer: Tokenizer,
    eos: Vec<u32>,
    dir: PathBuf,
    device: B::Device,
    dtype: DType,
}

impl<B: Backend> LlavaModel<B> {
    /// Loads a model folder as `save_pretrained` writes it (config.json, weights,
    /// preprocessor_config.json, tokenizer.json, optional generation_config.json).
    pub fn load(dir: &Path, device: &B::Device, options: LoadOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::NotFound {
                what: "model folder",
                path: dir.to_path_buf(),
            });
        }
        let config_path = dir.join("config.json");
        let cfg: LlavaConfig = read_json(&config_path)?;
        let spec = LlavaSpec::from_config(&cfg, &config_path)?;
        let pre_path = dir.join("preprocessor_config.json");
        let processor = if pre_path.is_file() {
            let pre: PreprocessorConfig = read_json(&pre_path)?;
            ClipImageProcessor::from_config(&pre, &pre_path)?
        } else {
            tracing::warn!(
                "{} not found; using the CLIP defaults at {} px",
                pre_path.display(),
                spec.vision.image_size
            );
            ClipImageProcessor::llava_default(spec.vision.image_size as u32)
        };
        let (ow, oh) = processor.output_size(1, 1);
        if processor.crop.is_none()
            || (ow as usize, oh as usize) != (spec.vision.image_size, spec.vision.image_size)
        {
            return Err(ModelError::Config {
                path: pre_path,
                message: format!(
                    "the processor must centre-crop to the vision tower's {0}x{0} input",
                    spec.vision.image_size
                ),
            });
        }
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let gen_path = dir.join("generation_config.json");
        let generation: GenerationConfig = if gen_path.is_file() {
            read_json(&gen_path)?
        } else {
            GenerationConfig::default()
        };
        let eos = generation
            .eos_token_id
            .map(|e| e.to_vec())
            .unwrap_or_else(|| vec![2]);
        let ckpt = Checkpoint::open(dir)?.with_progress(options.progress.clone());
        let net = Llava::load(&ckpt, &spec, device, options.dtype)?;
        tracing::info!(dir = %dir.display(), "loaded LLaVA checkpoint");
        Ok(Self {
            net,
            processor,
            tokenizer,
            eos,
            dir: dir.to_path_buf(),
            device: device.clone(),
            dtype: options.dtype,
        })
    }

    /// The network.
    pub fn net(&self) -> &Llava<B> {
        &self.net
    }

    /// The image processor.
    pub fn processor(&self) -> &ClipImageProcessor {
        &self.processor
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The device.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Positions the language model holds (`text_config.max_position_embeddings`).
    pub fn context_length(&self) -> usize {
        self.net.spec.text.max_position_embeddings
    }

    /// End-of-sequence ids.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Prompt token ids for `question` about `n_images` images (tags expanded, BOS added).
    pub fn prompt_ids(&self, question: &str, n_images: usize) -> Result<Vec<u32>> {
        if question.trim().is_empty() {
            return Err(ModelError::InvalidInput("the question is empty".into()));
        }
        let prompt = llava_prompt(question, n_images);
        let expanded = expand_image_tags(&prompt, self.net.spec.image_tokens_per_image());
        self.tokenizer.encode(&expanded, true)
    }

    /// Pixel values `[n, 3, r, r]` for images.
    pub fn pixel_values(&self, images: &[&RgbImage]) -> Result<Tensor<B, 4>> {
        self.processor
            .pixel_values(images, &self.device, self.dtype)
    }

    /// Input embeddings `[1, len, d]` for prompt ids and images.
    pub fn embed(&self, ids: &[u32], images: &[&RgbImage]) -> Result<Tensor<B, 3>> {
        let feats = if images.is_empty() {
            None
        } else {
            Some(self.net.encode_images(self.pixel_values(images)?))
        };
        self.net.embed(ids, feats)
    }

    /// Greedy decoding from prompt embeddings: prefill, then one token at a time until an EOS
    /// id or `max_new_tokens`. `cache` may already hold a prefix of the prompt.
    pub fn generate(
        &self,
        embeds: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        max_new_tokens: usize,
    ) -> Result<Generation> {
        Ok(self.generate_probed(embeds, cache, max_new_tokens, None)?.0)
    }

    /// [`LlavaModel::generate`], also handing out the prefill's attention row at
    /// `probe_layer` (`[heads, len]`, f32).
    pub fn generate_probed(
        &self,
        embeds: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        max_new_tokens: usize,
        probe_layer: Option<usize>,
    ) -> Result<(Generation, Option<Tensor<B, 2>>)> {
        if max_new_tokens == 0 && probe_layer.is_none() {
            return Ok((
                Generation {
                    token_ids: Vec::new(),
                    stopped_at_eos: false,
                    first_token_at: None,
                },
                None,
            ));
        }
        let needed = cache.len() + embeds.dims()[1] + max_new_tokens;
        let context = self.context_length();
        if needed > context {
            return Err(ModelError::InvalidInput(format!(
                "max_new_tokens {max_new_tokens} does not fit the context: the prompt takes {} \
                 of the {context} positions in text_config.max_position_embeddings",
                needed - max_new_tokens
            )));
        }
        let mut out = self
            .net
            .llm
            .forward(embeds, cache, probe_layer.map(Probe::through))?;
        let row = out.probe.take();
        let mut token_ids = Vec::new();
        let mut stopped_at_eos = false;
        let mut first_token_at = None;
        while token_ids.len() < max_new_tokens {
            let hidden = out
                .hidden
                .take()
                .ok_or_else(|| ModelError::InvalidInput("decoder stopped early".into()))?;
            let t = hidden.dims()[0];
            let next = argmax_host(self.net.llm.logits(hidden.narrow(0, t - 1, 1)))?;
            first_token_at.get_or_insert_with(Instant::now);
            if self.eos.contains(&next) {
                stopped_at_eos = true;
                break;
            }
            token_ids.push(next);
            if token_ids.len() < max_new_tokens {
                let input = self.net.llm.embed_ids(&[next])?.unsqueeze();
                out = self.net.llm.forward(input, cache, None)?;
            }
        }
        Ok((
            Generation {
                token_ids,
                stopped_at_eos,
                first_token_at,
            },
            row,
        ))
    }

    /// Decodes generated ids into trimmed answer text.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer.decode(ids)?.trim().to_string())
    }

    /// Answers `question` about `images` (the LLaVA-1.5 short-answer prompt, greedy).
    pub fn answer(
        &self,
        images: &[&RgbImage],
        question: &str,
        max_new_tokens: usize,
    ) -> Result<Answer> {
        let ids = self.prompt_ids(question, images.len())?;
        let embeds = self.embed(&ids, images)?;
        let mut cache = self.net.llm.new_cache();
        let generation = self.generate(embeds, &mut cache, max_new_tokens)?;
        Ok(Answer {
            text: self.decode(&generation.token_ids)?,
            token_ids: generation.token_ids,
        })
    }

    /// Runs the prompt once and returns the probed attention row (`[heads, len]`, f32) of
    /// the last prompt token at `layer`, stopping after that layer.
    pub fn attention_row(
        &self,
        embeds: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        layer: usize,
    ) -> Result<Tensor<B, 2>> {
        let out = self
            .net
            .llm
            .forward(embeds, cache, Some(Probe::stop_at(layer)))?;
        out.probe
            .ok_or_else(|| ModelError::InvalidInput("no attention row was probed".into()))
    }
}

//! ViCrop extraction for LLaVA-1.5: the signals [`vicrop_core::source`] asks for, produced as
//! cheaply as this architecture allows. The maps themselves are computed in `vicrop_core`.
//!
//! Work saved against the reference (method.md section 8), with identical maps:
//! - the image is encoded once and the `[BOS, image tokens]` prefix is run once per image;
//!   the question, general-description and final two-image prompts only run their own
//!   suffixes on top of that KV cache;
//! - an attention pass reads one attention row of one layer and stops there; when the map
//!   question is the question, the row comes free with the baseline answer's prefill;
//! - no autodiff graph for rel-att; grad-att differentiates only the question suffix, with the
//!   attention row as the leaf; pure-grad differentiates with respect to the pixels.
//!
//! LLaVA has no connector between patches and the language model: visual token `k` is patch
//! `k`, so [`AttentionSignal::connector`] is `None`.

use std::sync::OnceLock;

use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, DType, Tensor};
use image::RgbImage;
use vicrop_core::pipeline::Answer;
use vicrop_core::source::{
    AttentionRequest, AttentionSignal, AttentionSource, Depth, GradientSource, HeadRows, LayerRule,
    MapGeometry, Meter, Stage, VisionLanguageModel,
};
use vicrop_core::Rect;

use super::model::{Generation, Llava, LlavaModel};
use super::processor::resize_size;
use crate::error::{ModelError, Result};
use crate::llama::{KvCache, Probe};
use crate::nn::{to_host, vision_lap};

pub use vicrop_core::GENERAL_QUESTION;

/// LLaVA-1.5 driven by ViCrop. `Send + Sync`: share one behind an `Arc` across threads; each
/// thread owns its [`LlavaImage`]s.
pub struct LlavaVicrop<B: Backend> {
    model: LlavaModel<B>,
    /// The same weights on `Autodiff<B>`, made on the first gradient method.
    grad_net: OnceLock<Llava<Autodiff<B>>>,
}

/// Per-image state of [`LlavaVicrop`].
pub struct LlavaImage<B: Backend> {
    image: RgbImage,
    /// Region of the original image the vision tower saw (its centre crop).
    region: Rect,
    /// Ids of the shared prefix (everything up to the end of the first image's tokens) and
    /// its KV cache over all layers; computed on first use, or kept from pure-grad's
    /// differentiated forward.
    prefix: Option<(Vec<u32>, KvCache<B>)>,
}

impl<B: Backend> LlavaImage<B> {
    /// The original image.
    pub fn image(&self) -> &RgbImage {
        &self.image
    }

    /// The region of the original image the vision tower saw.
    pub fn region(&self) -> Rect {
        self.region
    }
}

/// A prompt split at the end of its first image: `ids[..prefix_len]` is shared by every
/// question about the image.
struct Prompt {
    ids: Vec<u32>,
    prefix_len: usize,
}

impl Prompt {
    fn prefix(&self) -> &[u32] {
        &self.ids[..self.prefix_len]
    }

    fn suffix(&self) -> &[u32] {
        &self.ids[self.prefix_len..]
    }
}

impl<B: Backend> LlavaVicrop<B> {
    /// Wraps a loaded model.
    pub fn new(model: LlavaModel<B>) -> Self {
        Self {
            model,
            grad_net: OnceLock::new(),
        }
    }

    /// The model.
    pub fn model(&self) -> &LlavaModel<B> {
        &self.model
    }

    fn net(&self) -> &Llava<B> {
        self.model.net()
    }

    fn grad_net(&self) -> &Llava<Autodiff<B>> {
        self.grad_net.get_or_init(|| self.net().lift())
    }

    fn layers(&self) -> usize {
        self.net().llm().num_layers()
    }

    fn grid(&self) -> usize {
        self.net().spec().vision.grid()
    }

    /// Prompt ids for `question` with `n_images`, split after the first image's tokens.
    ///
    /// The prefix is whatever the template puts before the first image (BOS, or nothing for a
    /// tokenizer that adds none) plus that image's tokens.
    fn prompt(&self, question: &str, n_images: usize) -> Result<Prompt> {
        let ids = self.model.prompt_ids(question, n_images)?;
        let per_image = self.net().spec().image_tokens_per_image();
        let image_id = self.net().spec().image_token_id;
        let first = ids.iter().position(|&i| i == image_id);
        let prefix_len = first.map_or(0, |f| f + per_image);
        match first {
            Some(f)
                if ids.len() > prefix_len && ids[f..prefix_len].iter().all(|&i| i == image_id) =>
            {
                Ok(Prompt { ids, prefix_len })
            }
            _ => Err(ModelError::InvalidInput(format!(
                "the prompt template does not hold {per_image} image tokens followed by text; \
                 cannot share the image prefix"
            ))),
        }
    }

    /// The region of an image the processor's centre crop keeps, in original pixels.
    fn centre_region(&self, w: u32, h: u32) -> Rect {
        let proc = self.model.processor();
        let (rw, rh) = match proc.resize {
            Some(target) => resize_size(target, w, h),
            None => (w, h),
        };
        let (cw, ch) = proc.crop.unwrap_or((rw, rh));
        let left = (i64::from(rw) - i64::from(cw)).div_euclid(2) as f64;
        let top = (i64::from(rh) - i64::from(ch)).div_euclid(2) as f64;
        let sx = f64::from(w) / f64::from(rw);
        let sy = f64::from(h) / f64::from(rh);
        Rect {
            x0: (left * sx).max(0.0),
            y0: (top * sy).max(0.0),
            x1: ((left + f64::from(cw)) * sx).min(f64::from(w)),
            y1: ((top + f64::from(ch)) * sy).min(f64::from(h)),
        }
    }

    /// The per-head attention of the last token over the `grid * grid` patch tokens of the
    /// first image (the last tokens of its run: a CLS token under the `full` strategy is
    /// skipped), from a `[heads, len]` row. One device-to-host copy of `heads x patches`.
    fn patch_rows<A: Backend>(&self, row: Tensor<A, 2>, prefix_len: usize) -> Result<HeadRows> {
        let g = self.grid();
        let [heads, _] = row.dims();
        let values = to_host(row.narrow(1, prefix_len - g * g, g * g))?;
        HeadRows::new(heads, g * g, values).map_err(|e| ModelError::InvalidInput(e.to_string()))
    }

    /// Counts a generation's work (a prefill of `prefill` positions on the shared prefix,
    /// then one position per further decoding step) and decodes it into an [`Answer`].
    fn finish(&self, generation: Generation, prefill: usize, meter: &mut Meter) -> Result<Answer> {
        let answer = Answer {
            text: self.model.decode(&generation.token_ids)?,
            token_ids: generation.token_ids,
            stopped_at_eos: generation.stopped_at_eos,
        };
        meter.llm(prefill + answer.steps().saturating_sub(1), self.layers());
        Ok(answer)
    }

    /// The shared prefix's KV cache for `prompt`, computed on first use.
    fn prefix(
        &self,
        img: &mut LlavaImage<B>,
        prompt: &Prompt,
        meter: &mut Meter,
    ) -> Result<KvCache<B>> {
        if let Some((ids, cache)) = &img.prefix {
            if ids.as_slice() == prompt.prefix() {
                return Ok(cache.clone());
            }
            return Err(ModelError::InvalidInput(
                "this question's prompt does not start like the image's shared prefix".into(),
            ));
        }
        let features = self
            .net()
            .encode_images(self.model.pixel_values(&[&img.image])?);
        vision_lap(meter, &features)?;
        let embeds = self.net().embed(prompt.prefix(), Some(features))?;
        let mut cache = self.net().llm().new_cache();
        self.net().llm().forward(embeds, &mut cache, None)?;
        meter.llm(prompt.prefix_len, self.layers());
        img.prefix = Some((prompt.prefix().to_vec(), cache.clone()));
        Ok(cache)
    }

    /// The attention row of `question` at `layer`, run on top of the shared prefix and
    /// stopped at that layer.
    fn attention_row(
        &self,
        img: &mut LlavaImage<B>,
        question: &str,
        layer: usize,
        meter: &mut Meter,
    ) -> Result<HeadRows> {
        let prompt = self.prompt(question, 1)?;
        let embeds = self.net().llm().embed_ids(prompt.suffix())?.unsqueeze();
        let mut cache = self.prefix(img, &prompt, meter)?;
        let out = self
            .net()
            .llm()
            .forward(embeds, &mut cache, Some(Probe::stop_at(layer)))?;
        meter.llm(prompt.suffix().len(), layer + 1);
        let row = out
            .probe
            .ok_or_else(|| ModelError::InvalidInput("no attention row".into()))?;
        self.patch_rows(row, prompt.prefix_len)
    }

    /// The attention row of `question` at `layer` and its gradient: only the question suffix
    /// is differentiated, with the probed row as the autodiff leaf.
    fn attention_row_grad(
        &self,
        img: &mut LlavaImage<B>,
        question: &str,
        layer: usize,
        meter: &mut Meter,
    ) -> Result<(HeadRows, HeadRows)> {
        let prompt = self.prompt(question, 1)?;
        let prefix = self.prefix(img, &prompt, meter)?;
        let net = self.grad_net();
        let embeds = net.llm().embed_ids(prompt.suffix())?.unsqueeze();
        let mut cache = prefix.lift::<Autodiff<B>>();
        let probe = Probe {
            layer,
            stop_after: false,
            grad_leaf: true,
        };
        let out = net.llm().forward(embeds, &mut cache, Some(probe))?;
        meter.llm(prompt.suffix().len(), self.layers());
        let (hidden, probs) = match (out.hidden, out.probe) {
            (Some(h), Some(p)) => (h, p),
            _ => {
                return Err(ModelError::InvalidInput(
                    "grad-att forward incomplete".into(),
                ))
            }
        };
        let (value, _) = net.llm().top_log_prob(hidden)?;
        let grads = value.backward();
        let g = probs.grad(&grads).ok_or_else(|| {
            ModelError::InvalidInput("no gradient reached the attention row".into())
        })?;
        Ok((
            self.patch_rows(probs.inner(), prompt.prefix_len)?,
            self.patch_rows(g, prompt.prefix_len)?,
        ))
    }

    /// Per-pixel L2 norm over channels of d(top log-prob)/d(pixels) for `question`.
    ///
    /// The forward covers the whole prompt, image prefix included; when the image has no
    /// prefix cache yet, that part of this forward's KV cache becomes it (the values are those
    /// a plain forward computes), so the plain answer after it skips the vision tower and
    /// the prefix prefill.
    fn pixel_grad_norm(
        &self,
        img: &mut LlavaImage<B>,
        question: &str,
        meter: &mut Meter,
    ) -> Result<Vec<f32>> {
        let net = self.grad_net();
        let prompt = self.prompt(question, 1)?;
        let pixels = self.model.pixel_values(&[&img.image])?;
        let [_, c, h, w] = pixels.dims();
        let pixels = Tensor::<Autodiff<B>, 4>::from_inner(pixels).require_grad();
        let feats = net.encode_images(pixels.clone());
        meter.vision(1);
        let embeds = net.embed(&prompt.ids, Some(feats))?;
        let mut cache = net.llm().new_cache();
        let out = net.llm().forward(embeds, &mut cache, None)?;
        meter.llm(prompt.ids.len(), self.layers());
        if img.prefix.is_none() {
            let mut prefix = cache.inner();
            prefix.truncate(prompt.prefix_len);
            img.prefix = Some((prompt.prefix().to_vec(), prefix));
        }
        let hidden = out
            .hidden
            .ok_or_else(|| ModelError::InvalidInput("forward incomplete".into()))?;
        let (value, _) = net.llm().top_log_prob(hidden)?;
        let grads = value.backward();
        let g = pixels
            .grad(&grads)
            .ok_or_else(|| ModelError::InvalidInput("no gradient reached the pixels".into()))?;
        let g = g.cast(DType::F32).reshape([c, h * w]);
        to_host(g.powi_scalar(2).sum_dim(0).sqrt())
    }
}

impl<B: Backend> VisionLanguageModel for LlavaVicrop<B> {
    type Image = LlavaImage<B>;
    type Error = ModelError;

    fn geometry(&self) -> MapGeometry {
        let v = &self.net().spec().vision;
        MapGeometry {
            input_side: v.image_size as u32,
            patch: v.patch_size as u32,
            grid: v.grid(),
        }
    }

    fn depth(&self) -> Depth {
        Depth {
            llm_layers: self.layers(),
            llm_rule: LayerRule::LLAVA,
            connector: None,
        }
    }

    fn context_length(&self) -> usize {
        self.model.context_length()
    }

    fn prompt_len(&self, question: &str, images: usize) -> Result<usize> {
        Ok(self.model.prompt_ids(question, images)?.len())
    }

    fn prepare(&self, image: &RgbImage, _meter: &mut Meter) -> Result<LlavaImage<B>> {
        let patch = self.net().spec().vision.patch_size as u32;
        if image.width() < patch || image.height() < patch {
            return Err(ModelError::InvalidInput(format!(
                "the image is {}x{} px; ViCrop needs at least one vision patch ({patch}x{patch} px)",
                image.width(),
                image.height()
            )));
        }
        Ok(LlavaImage {
            image: image.clone(),
            region: self.centre_region(image.width(), image.height()),
            prefix: None,
        })
    }

    fn image<'a>(&self, prepared: &'a LlavaImage<B>) -> &'a RgbImage {
        &prepared.image
    }

    fn region(&self, prepared: &LlavaImage<B>) -> Rect {
        prepared.region
    }

    fn answer(
        &self,
        img: &mut LlavaImage<B>,
        question: &str,
        max_new_tokens: usize,
        probe: Option<AttentionRequest>,
        meter: &mut Meter,
    ) -> Result<(Answer, Option<AttentionSignal>)> {
        let prompt = self.prompt(question, 1)?;
        let embeds = self.net().llm().embed_ids(prompt.suffix())?.unsqueeze();
        let mut cache = self.prefix(img, &prompt, meter)?;
        let probe_layer = probe.map(|p| p.layer);
        let (generation, row) =
            self.model
                .generate_probed(embeds, &mut cache, max_new_tokens, probe_layer)?;
        if let Some(at) = generation.first_token_at {
            meter.lap_at(Stage::Prefill, at);
        }
        let signal = match row {
            Some(row) if probe_layer.is_some() => Some(AttentionSignal {
                text: self.patch_rows(row, prompt.prefix_len)?,
                text_grad: None,
                connector: None,
                connector_grad: None,
            }),
            _ => None,
        };
        Ok((
            self.finish(generation, prompt.suffix().len(), meter)?,
            signal,
        ))
    }

    fn answer_with_crop(
        &self,
        img: &mut LlavaImage<B>,
        crop: &RgbImage,
        question: &str,
        max_new_tokens: usize,
        meter: &mut Meter,
    ) -> Result<Answer> {
        let prompt = self.prompt(question, 2)?;
        let crop_features = self.net().encode_images(self.model.pixel_values(&[crop])?);
        vision_lap(meter, &crop_features)?;
        let embeds = self.net().embed(prompt.suffix(), Some(crop_features))?;
        let mut cache = self.prefix(img, &prompt, meter)?;
        let generation = self.model.generate(embeds, &mut cache, max_new_tokens)?;
        self.finish(generation, prompt.suffix().len(), meter)
    }
}

impl<B: Backend> AttentionSource for LlavaVicrop<B> {
    fn attention(
        &self,
        img: &mut LlavaImage<B>,
        question: &str,
        request: AttentionRequest,
        meter: &mut Meter,
    ) -> Result<AttentionSignal> {
        let (text, text_grad) = if request.with_grad {
            let (row, grad) = self.attention_row_grad(img, question, request.layer, meter)?;
            (row, Some(grad))
        } else {
            (
                self.attention_row(img, question, request.layer, meter)?,
                None,
            )
        };
        Ok(AttentionSignal {
            text,
            text_grad,
            connector: None,
            connector_grad: None,
        })
    }
}

impl<B: Backend> GradientSource for LlavaVicrop<B> {
    fn pixel_gradient(
        &self,
        img: &mut LlavaImage<B>,
        question: &str,
        meter: &mut Meter,
    ) -> Result<Vec<f32>> {
        self.pixel_grad_norm(img, question, meter)
    }
}

/// The map layer for an LLM of `n_layers`: the reference's 14 of 32, scaled and rounded.
pub fn default_layer(n_layers: usize) -> usize {
    LayerRule::LLAVA.for_depth(n_layers)
}

/// Compile-time check: a loaded model and pipeline can be shared across threads, and a
/// prepared image moved between them.
#[allow(dead_code)]
fn assert_thread_safe<B: Backend>() {
    fn shareable<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shareable::<LlavaVicrop<B>>();
    shareable::<vicrop_core::ViCrop<LlavaVicrop<B>>>();
    movable::<vicrop_core::PreparedImage<LlavaVicrop<B>>>();
}

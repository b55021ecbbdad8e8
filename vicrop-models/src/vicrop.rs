//! ViCrop on LLaVA-1.5: the three map methods, the shared-prefix answering, and the cost
//! accounting, behind [`vicrop_core::VicropModel`].
//!
//! Work saved against the reference (method.md section 8), with identical maps:
//! - the image is encoded once and the `[BOS, image tokens]` prefix is run once per image;
//!   the question, general-description and final two-image prompts only run their own
//!   suffixes on top of that KV cache;
//! - rel-att reads one attention row of one layer and stops there; when the map question is
//!   the question, the row comes free with the baseline answer's prefill;
//! - the general-description row (rel-att) and input-gradient norm (pure-grad) depend only on
//!   the image and are cached per image and layer;
//! - no autodiff graph for rel-att; grad-att differentiates only the question suffix, with the
//!   attention row as the leaf; pure-grad differentiates with respect to the pixels.

use std::cell::{Cell, OnceCell};
use std::collections::HashMap;

use burn::backend::Autodiff;
use burn::tensor::{activation, backend::Backend, DType, Tensor};
use image::RgbImage;
use vicrop_core::filters::{block_mean, high_pass_mask, Plane};
use vicrop_core::pil::{resize_rgb8, Filter};
use vicrop_core::pipeline::{Answer, Cost, Method, RunShape, VicropModel};
use vicrop_core::{Rect, SaliencyMap};

use crate::error::{ModelError, Result};
use crate::llama::{KvCache, Probe};
use crate::llava::{argmax_host, Generation, Llava, LlavaModel};
use crate::processor::resize_size;

/// The general-description question used for relative maps.
pub const GENERAL_QUESTION: &str = "Write a general description of the image.";

/// LLaVA-1.5 driven by ViCrop.
pub struct LlavaVicrop<B: Backend> {
    model: LlavaModel<B>,
    grad_net: OnceCell<Llava<Autodiff<B>>>,
    /// Position-layers run through the LLM since the last [`VicropModel::take_cost`].
    position_layers: Cell<u64>,
    vision_images: Cell<u64>,
}

/// Per-image state of [`LlavaVicrop`].
pub struct LlavaImage<B: Backend> {
    image: RgbImage,
    /// Region of the original image the vision tower saw (its centre crop).
    region: Rect,
    /// KV cache of `[BOS, image tokens]`, all layers; computed on first use (pure-grad and
    /// high-res tiles under pure-grad never need it).
    prefix: Option<KvCache<B>>,
    qa_rows: HashMap<(String, usize), Vec<f32>>,
    general_rows: HashMap<usize, Vec<f32>>,
    general_grad: Option<Vec<f32>>,
    /// pure-grad's high-pass mask (depends on the image only).
    high_pass: Option<Vec<bool>>,
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

    /// Drops the cached per-question attention rows (the per-image caches stay).
    pub fn forget_questions(&mut self) {
        self.qa_rows.clear();
    }
}

impl<B: Backend> LlavaVicrop<B> {
    /// Wraps a loaded model.
    pub fn new(model: LlavaModel<B>) -> Self {
        Self {
            model,
            grad_net: OnceCell::new(),
            position_layers: Cell::new(0),
            vision_images: Cell::new(0),
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

    fn count(&self, positions: usize, layers_run: usize) {
        self.position_layers
            .set(self.position_layers.get() + (positions * layers_run) as u64);
    }

    fn count_vision(&self, images: usize) {
        self.vision_images
            .set(self.vision_images.get() + images as u64);
    }

    fn layers(&self) -> usize {
        self.net().llm().num_layers()
    }

    fn grid(&self) -> usize {
        self.net().spec().vision.grid()
    }

    /// Sequence positions of the `grid * grid` patch tokens of the (first) image: the image
    /// tokens after BOS, skipping a CLS token under the `full` select strategy.
    fn patch_positions(&self, prefix_len: usize) -> std::ops::Range<usize> {
        let g = self.grid();
        prefix_len - g * g..prefix_len
    }

    /// Prompt ids for `question` with `n_images`, and the length of the shared prefix.
    fn prompt(&self, question: &str, n_images: usize) -> Result<(Vec<u32>, usize)> {
        let ids = self.model.prompt_ids(question, n_images)?;
        let per_image = self.net().spec().image_tokens_per_image();
        let image_id = self.net().spec().image_token_id;
        let prefix_len = 1 + per_image;
        if ids.len() <= prefix_len || ids[1..prefix_len].iter().any(|&i| i != image_id) {
            return Err(ModelError::InvalidInput(
                "the prompt does not start with [BOS, image tokens]; cannot share the prefix"
                    .into(),
            ));
        }
        Ok((ids, prefix_len))
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

    fn map_from(&self, values: Vec<f32>, region: Rect) -> Result<SaliencyMap> {
        let g = self.grid();
        SaliencyMap::new(g, g, values)
            .map(|m| m.with_region(region))
            .map_err(|e| ModelError::InvalidInput(e.to_string()))
    }

    /// Head-averaged attention of the last token over the patch tokens, from a `[heads, len]`
    /// row.
    fn patch_row(&self, row: Tensor<B, 2>, prefix_len: usize) -> Result<Vec<f32>> {
        let pos = self.patch_positions(prefix_len);
        let mean = row.narrow(1, pos.start, pos.len()).mean_dim(0);
        host(mean)
    }

    /// Counts a generation's work (a prefill of `prefill` positions on the shared prefix,
    /// then one position per further decoding step) and decodes it into an [`Answer`].
    fn finish(&self, generation: Generation, prefill: usize) -> Result<Answer> {
        let answer = Answer {
            text: self.model.decode(&generation.token_ids)?,
            token_ids: generation.token_ids,
            stopped_at_eos: generation.stopped_at_eos,
        };
        self.count(prefill + answer.steps().saturating_sub(1), self.layers());
        Ok(answer)
    }

    /// The shared `[BOS, image tokens]` KV cache, computed on first use.
    fn prefix(&self, img: &mut LlavaImage<B>) -> Result<KvCache<B>> {
        if let Some(p) = &img.prefix {
            return Ok(p.clone());
        }
        let (ids, prefix_len) = self.prompt(GENERAL_QUESTION, 1)?;
        let features = self
            .net()
            .encode_images(self.model.pixel_values(&[&img.image])?);
        self.count_vision(1);
        let embeds = self.net().embed(&ids[..prefix_len], Some(features))?;
        let mut prefix = self.net().llm().new_cache();
        self.net().llm().forward(embeds, &mut prefix, None)?;
        self.count(prefix_len, self.layers());
        img.prefix = Some(prefix.clone());
        Ok(prefix)
    }

    /// rel-att numerator or denominator: the attention row of `question` at `layer`, run on
    /// top of the shared prefix and stopped at that layer.
    fn attention_row(
        &self,
        img: &mut LlavaImage<B>,
        question: &str,
        layer: usize,
    ) -> Result<Vec<f32>> {
        let (ids, prefix_len) = self.prompt(question, 1)?;
        let suffix = &ids[prefix_len..];
        let embeds = self.net().llm().embed_ids(suffix)?.unsqueeze();
        let mut cache = self.prefix(img)?;
        let out = self
            .net()
            .llm()
            .forward(embeds, &mut cache, Some(Probe::stop_at(layer)))?;
        self.count(suffix.len(), layer + 1);
        let row = out
            .probe
            .ok_or_else(|| ModelError::InvalidInput("no attention row".into()))?;
        self.patch_row(row, prefix_len)
    }

    fn rel_att(&self, img: &mut LlavaImage<B>, question: &str, layer: usize) -> Result<Vec<f32>> {
        let key = (question.to_string(), layer);
        let qa = match img.qa_rows.get(&key) {
            Some(row) => row.clone(),
            None => {
                let row = self.attention_row(img, question, layer)?;
                img.qa_rows.insert(key, row.clone());
                row
            }
        };
        let general = match img.general_rows.get(&layer) {
            Some(row) => row.clone(),
            None => {
                let row = self.attention_row(img, GENERAL_QUESTION, layer)?;
                img.general_rows.insert(layer, row.clone());
                row
            }
        };
        Ok(qa.iter().zip(&general).map(|(a, b)| a / b).collect())
    }

    fn grad_att(&self, img: &mut LlavaImage<B>, question: &str, layer: usize) -> Result<Vec<f32>> {
        let prefix = self.prefix(img)?;
        let net = self.grad_net();
        let (ids, prefix_len) = self.prompt(question, 1)?;
        let suffix = &ids[prefix_len..];
        let embeds = net.llm().embed_ids(suffix)?.unsqueeze();
        let mut cache = prefix.lift::<Autodiff<B>>();
        let probe = Probe {
            layer,
            stop_after: false,
            grad_leaf: true,
        };
        let out = net.llm().forward(embeds, &mut cache, Some(probe))?;
        self.count(suffix.len(), self.layers());
        let (hidden, probs) = match (out.hidden, out.probe) {
            (Some(h), Some(p)) => (h, p),
            _ => {
                return Err(ModelError::InvalidInput(
                    "grad-att forward incomplete".into(),
                ))
            }
        };
        let value = top_log_prob(net, hidden)?;
        let grads = value.backward();
        let g = probs.grad(&grads).ok_or_else(|| {
            ModelError::InvalidInput("no gradient reached the attention row".into())
        })?;
        let weighted = probs.inner() * activation::relu(g); // [heads, len]
        self.patch_row(weighted, prefix_len)
    }

    /// Per-pixel L2 norm over channels of d(top log-prob)/d(pixels) for `question`.
    fn pixel_grad_norm(&self, image: &RgbImage, question: &str) -> Result<Vec<f32>> {
        let net = self.grad_net();
        let (ids, _) = self.prompt(question, 1)?;
        let pixels = self.model.pixel_values(&[image])?;
        let [_, c, h, w] = pixels.dims();
        let pixels = Tensor::<Autodiff<B>, 4>::from_inner(pixels).require_grad();
        let feats = net.encode_images(pixels.clone());
        self.count_vision(1);
        let embeds = net.embed(&ids, Some(feats))?;
        let mut cache = net.llm().new_cache();
        let out = net.llm().forward(embeds, &mut cache, None)?;
        self.count(ids.len(), self.layers());
        let hidden = out
            .hidden
            .ok_or_else(|| ModelError::InvalidInput("forward incomplete".into()))?;
        let value = top_log_prob(net, hidden)?;
        let grads = value.backward();
        let g = pixels
            .grad(&grads)
            .ok_or_else(|| ModelError::InvalidInput("no gradient reached the pixels".into()))?;
        let g = g.cast(DType::F32).reshape([c, h * w]);
        host(g.powi_scalar(2).sum_dim(0).sqrt())
    }

    fn pure_grad(&self, img: &mut LlavaImage<B>, question: &str) -> Result<Vec<f32>> {
        let qa = self.pixel_grad_norm(&img.image, question)?;
        let general = match &img.general_grad {
            Some(g) => g.clone(),
            None => {
                let g = self.pixel_grad_norm(&img.image, GENERAL_QUESTION)?;
                img.general_grad = Some(g.clone());
                g
            }
        };
        let side = self.net().spec().vision.image_size as u32;
        // The reference's mask comes from the WHOLE image resized to R x R (not the centre
        // crop the gradients live on): reproduced for parity.
        let mask = img
            .high_pass
            .get_or_insert_with(|| {
                let small = resize_rgb8(&img.image, side, side, Filter::Bilinear);
                high_pass_mask(&small).1
            })
            .clone();
        let n = side as usize;
        let data: Vec<f32> = qa
            .iter()
            .zip(&general)
            .zip(&mask)
            .map(|((a, b), &m)| if m { a / b } else { 0.0 * (a / b) })
            .collect();
        let plane = Plane {
            width: n,
            height: n,
            data,
        };
        let patch = self.net().spec().vision.patch_size;
        let reduced = block_mean(&plane, patch);
        let g = self.grid();
        // Keep the grid the vision tower uses (a ragged border, if any, is dropped).
        let mut values = Vec::with_capacity(g * g);
        for y in 0..g {
            for x in 0..g {
                values.push(reduced.at(x, y));
            }
        }
        Ok(values)
    }
}

/// `log softmax(logits[last])[argmax]` as a scalar tensor, for backward.
fn top_log_prob<B: Backend>(
    net: &Llava<Autodiff<B>>,
    hidden: Tensor<Autodiff<B>, 2>,
) -> Result<Tensor<Autodiff<B>, 1>> {
    let t = hidden.dims()[0];
    let logits = net
        .llm()
        .logits(hidden.narrow(0, t - 1, 1))
        .cast(DType::F32); // [1, vocab]
    let top = argmax_host(logits.clone().detach())? as usize;
    let logp = activation::log_softmax(logits, 1);
    Ok(logp.narrow(1, top, 1).reshape([1]))
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.cast(DType::F32)
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| ModelError::InvalidInput(format!("cannot read a tensor: {e:?}")))
}

impl<B: Backend> VicropModel for LlavaVicrop<B> {
    type Image = LlavaImage<B>;
    type Error = ModelError;

    fn input_side(&self) -> u32 {
        self.net().spec().vision.image_size as u32
    }

    fn num_layers(&self) -> usize {
        self.layers()
    }

    fn default_layer(&self) -> usize {
        default_layer(self.layers())
    }

    fn prepare(&self, image: &RgbImage) -> Result<LlavaImage<B>> {
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
            qa_rows: HashMap::new(),
            general_rows: HashMap::new(),
            general_grad: None,
            high_pass: None,
        })
    }

    fn image<'a>(&self, prepared: &'a LlavaImage<B>) -> &'a RgbImage {
        &prepared.image
    }

    fn answer(
        &self,
        img: &mut LlavaImage<B>,
        question: &str,
        max_new_tokens: usize,
        probe_layer: Option<usize>,
    ) -> Result<Answer> {
        let (ids, prefix_len) = self.prompt(question, 1)?;
        let suffix = &ids[prefix_len..];
        let embeds = self.net().llm().embed_ids(suffix)?.unsqueeze();
        let mut cache = self.prefix(img)?;
        let (generation, row) =
            self.model
                .generate_probed(embeds, &mut cache, max_new_tokens, probe_layer)?;
        if let (Some(layer), Some(row)) = (probe_layer, row) {
            let values = self.patch_row(row, prefix_len)?;
            img.qa_rows.insert((question.to_string(), layer), values);
        }
        self.finish(generation, suffix.len())
    }

    fn saliency(
        &self,
        img: &mut LlavaImage<B>,
        question: &str,
        method: Method,
        layer: usize,
    ) -> Result<SaliencyMap> {
        // An empty question is refused by the prompt builder, a layer out of range by the
        // decoder's probe (pure-grad reads no layer).
        let values = match method {
            Method::RelAtt => self.rel_att(img, question, layer)?,
            Method::GradAtt => self.grad_att(img, question, layer)?,
            Method::PureGrad => self.pure_grad(img, question)?,
        };
        self.map_from(values, img.region)
    }

    fn answer_with_crop(
        &self,
        img: &mut LlavaImage<B>,
        crop: &RgbImage,
        question: &str,
        max_new_tokens: usize,
    ) -> Result<Answer> {
        let (ids, prefix_len) = self.prompt(question, 2)?;
        let suffix = &ids[prefix_len..];
        let crop_features = self.net().encode_images(self.model.pixel_values(&[crop])?);
        self.count_vision(1);
        let embeds = self.net().embed(suffix, Some(crop_features))?;
        let mut cache = self.prefix(img)?;
        let generation = self.model.generate(embeds, &mut cache, max_new_tokens)?;
        self.finish(generation, suffix.len())
    }

    fn take_cost(&self) -> Cost {
        let layers = self.layers().max(1) as u64;
        let cost = Cost {
            llm_positions: self.position_layers.get() / layers,
            vision_images: self.vision_images.get(),
        };
        self.position_layers.set(0);
        self.vision_images.set(0);
        cost
    }

    fn reference_cost(&self, run: &RunShape<'_>) -> Cost {
        let len = |q: &str, n: usize| self.prompt(q, n).map_or(0, |(ids, _)| ids.len()) as u64;
        let qa = len(run.question, 1);
        let map_qa = len(run.map_question, 1);
        let general = len(GENERAL_QUESTION, 1);
        let fin = len(run.question, 2);
        let tiles = run.map_images as u64;
        let decode = |steps: usize| steps.saturating_sub(1) as u64;
        // Baseline: one full prefill and its decode steps, one image encoding.
        let mut positions = qa + decode(run.baseline_steps);
        let mut vision = 1;
        // Maps: every map pass runs the whole prompt through all layers and re-encodes the
        // image (or tile); rel-att and pure-grad also run the general prompt.
        let (passes_qa, passes_general) = match run.method {
            Method::RelAtt | Method::PureGrad => (1, 1),
            Method::GradAtt => (1, 0),
        };
        positions += tiles * (passes_qa * map_qa + passes_general * general);
        vision += tiles * (passes_qa + passes_general);
        // Final answer: the two-image prompt and its decode steps, two encodings.
        positions += fin + decode(run.crop_steps);
        vision += 2;
        Cost {
            llm_positions: positions,
            vision_images: vision,
        }
    }
}

/// The map layer for an LLM of `n_layers`: the reference's 14 of 32, scaled and rounded.
pub fn default_layer(n_layers: usize) -> usize {
    ((14 * n_layers + 16) / 32).min(n_layers.saturating_sub(1))
}

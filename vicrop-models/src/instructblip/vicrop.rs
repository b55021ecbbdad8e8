//! ViCrop extraction for InstructBLIP: the signals [`vicrop_core::source`] asks for. The maps
//! themselves (head means, the chain through the Q-Former, ratios) are computed in
//! `vicrop_core`.
//!
//! InstructBLIP has a connector: the LLM attends to the Q-Former's query outputs, and the
//! queries cross-attend to the patches. An attention signal therefore carries both factors:
//! the LLM's last-token row over the image's query positions (`[heads, queries]`) and the
//! Q-Former cross-attention at one cross-attention layer (`[heads_q, queries, patches]`, the
//! CLS key dropped), with both gradients from one backward pass for grad-att.
//!
//! What is reused: the Q-Former reads the question, so the query outputs, and with them every
//! LLM position, change per question; only the vision encoding (`[1, 1 + patches, dv]`) is
//! computed once per prepared image and shared by the baseline answer, every map pass and the
//! final two-image answer. rel-att's pass stops at the probed LLM layer; when the map question
//! is the question, the baseline answer's prefill hands out the signal; the general
//! description's map is cached per image by the pipeline.

use burn::tensor::{backend::Backend, Tensor};
use image::RgbImage;
use vicrop_core::pipeline::Answer;
use vicrop_core::source::{
    AttentionRequest, AttentionSignal, AttentionSource, Depth, GradientSource, HeadRows, LayerRule,
    MapGeometry, Meter, Stage, VisionLanguageModel,
};
use vicrop_core::Rect;

use super::model::{AttentionSignals, InstructBlipModel, SignalProbe};
use crate::error::{ModelError, Result};
use crate::llava::Generation;
use crate::nn::vision_lap;

/// InstructBLIP driven by ViCrop. `Send + Sync`: share one behind an `Arc` across threads;
/// each thread owns its [`InstructBlipImage`]s.
pub struct InstructBlipVicrop<B: Backend> {
    model: InstructBlipModel<B>,
}

/// Per-image state of [`InstructBlipVicrop`].
pub struct InstructBlipImage<B: Backend> {
    image: RgbImage,
    /// Vision states `[1, 1 + patches, dv]`, computed on first use.
    states: Option<Tensor<B, 3>>,
}

impl<B: Backend> InstructBlipImage<B> {
    /// The original image.
    pub fn image(&self) -> &RgbImage {
        &self.image
    }
}

impl<B: Backend> InstructBlipVicrop<B> {
    /// Wraps a loaded model.
    pub fn new(model: InstructBlipModel<B>) -> Self {
        Self { model }
    }

    /// The model.
    pub fn model(&self) -> &InstructBlipModel<B> {
        &self.model
    }

    fn layers(&self) -> usize {
        self.model.num_llm_layers()
    }

    fn cross_index(&self, request: &AttentionRequest) -> usize {
        request.connector_layer.unwrap_or_else(|| {
            LayerRule::INSTRUCTBLIP_QFORMER.for_depth(self.model.num_cross_layers())
        })
    }

    /// The image's vision states, encoded on first use.
    fn states(&self, img: &mut InstructBlipImage<B>, meter: &mut Meter) -> Result<Tensor<B, 3>> {
        if let Some(s) = &img.states {
            return Ok(s.clone());
        }
        let states = self.model.encode_images(&[&img.image])?;
        vision_lap(meter, &states)?;
        img.states = Some(states.clone());
        Ok(states)
    }

    /// Counts a generation over a prompt of `prefill` positions and decodes it.
    fn finish(&self, generation: Generation, prefill: usize, meter: &mut Meter) -> Result<Answer> {
        let answer = Answer {
            text: self.model.decode(&generation.token_ids)?,
            token_ids: generation.token_ids,
            stopped_at_eos: generation.stopped_at_eos,
        };
        meter.llm(prefill + answer.steps().saturating_sub(1), self.layers());
        Ok(answer)
    }
}

/// The model's host-side signals in the seam's shape.
fn to_signal(s: AttentionSignals) -> Result<AttentionSignal> {
    let bad = |e: vicrop_core::SignalError| ModelError::InvalidInput(e.to_string());
    let text = |v: Vec<f32>| HeadRows::new(s.llm_heads, s.n_queries, v).map_err(bad);
    let cross = |v: Vec<f32>| HeadRows::new(s.cross_heads, s.n_queries * s.patches, v).map_err(bad);
    Ok(AttentionSignal {
        text: text(s.llm_row)?,
        text_grad: s.llm_row_grad.map(text).transpose()?,
        connector: Some(cross(s.cross)?),
        connector_grad: s.cross_grad.map(cross).transpose()?,
    })
}

impl<B: Backend> VisionLanguageModel for InstructBlipVicrop<B> {
    type Image = InstructBlipImage<B>;
    type Error = ModelError;

    fn geometry(&self) -> MapGeometry {
        MapGeometry {
            input_side: self.model.image_size() as u32,
            patch: self.model.patch_size() as u32,
            grid: self.model.grid(),
        }
    }

    fn depth(&self) -> Depth {
        Depth {
            llm_layers: self.layers(),
            llm_rule: LayerRule::INSTRUCTBLIP_LLM,
            connector: Some((
                self.model.num_cross_layers(),
                LayerRule::INSTRUCTBLIP_QFORMER,
            )),
        }
    }

    fn context_length(&self) -> usize {
        self.model.context_length()
    }

    fn prompt_len(&self, question: &str, images: usize) -> Result<usize> {
        self.model.llm_seq_len(question, images)
    }

    fn prepare(&self, image: &RgbImage, _meter: &mut Meter) -> Result<InstructBlipImage<B>> {
        let patch = self.model.patch_size() as u32;
        if image.width() < patch || image.height() < patch {
            return Err(ModelError::InvalidInput(format!(
                "the image is {}x{} px; ViCrop needs at least one vision patch ({patch}x{patch} px)",
                image.width(),
                image.height()
            )));
        }
        Ok(InstructBlipImage {
            image: image.clone(),
            states: None,
        })
    }

    fn image<'a>(&self, prepared: &'a InstructBlipImage<B>) -> &'a RgbImage {
        &prepared.image
    }

    /// The processor squashes the whole image to the input side: the map covers all of it.
    fn region(&self, prepared: &InstructBlipImage<B>) -> Rect {
        Rect::whole(prepared.image.width(), prepared.image.height())
    }

    fn answer(
        &self,
        img: &mut InstructBlipImage<B>,
        question: &str,
        max_new_tokens: usize,
        probe: Option<AttentionRequest>,
        meter: &mut Meter,
    ) -> Result<(Answer, Option<AttentionSignal>)> {
        let states = self.states(img, meter)?;
        let probe = probe.map(|p| SignalProbe {
            llm_layer: p.layer,
            cross_index: self.cross_index(&p),
        });
        let (generation, signals) =
            self.model
                .generate_probed(states, question, max_new_tokens, probe)?;
        if let Some(at) = generation.first_token_at {
            meter.lap_at(Stage::Prefill, at);
        }
        let signal = signals.map(to_signal).transpose()?;
        let prefill = self.model.llm_seq_len(question, 1)?;
        Ok((self.finish(generation, prefill, meter)?, signal))
    }

    fn answer_with_crop(
        &self,
        img: &mut InstructBlipImage<B>,
        crop: &RgbImage,
        question: &str,
        max_new_tokens: usize,
        meter: &mut Meter,
    ) -> Result<Answer> {
        let original = self.states(img, meter)?;
        let crop_states = self.model.encode_images(&[crop])?;
        vision_lap(meter, &crop_states)?;
        let states = Tensor::cat(vec![original, crop_states], 0);
        let (generation, _) = self
            .model
            .generate_probed(states, question, max_new_tokens, None)?;
        let prefill = self.model.llm_seq_len(question, 2)?;
        self.finish(generation, prefill, meter)
    }
}

impl<B: Backend> AttentionSource for InstructBlipVicrop<B> {
    fn attention(
        &self,
        img: &mut InstructBlipImage<B>,
        question: &str,
        request: AttentionRequest,
        meter: &mut Meter,
    ) -> Result<AttentionSignal> {
        let states = self.states(img, meter)?;
        let cross = self.cross_index(&request);
        let signals = self.model.attention_signals(
            states,
            question,
            request.layer,
            cross,
            request.with_grad,
        )?;
        // Without gradients the LLM stops at the probed layer.
        let layers_run = if request.with_grad {
            self.layers()
        } else {
            request.layer + 1
        };
        meter.llm(self.model.llm_seq_len(question, 1)?, layers_run);
        to_signal(signals)
    }
}

impl<B: Backend> GradientSource for InstructBlipVicrop<B> {
    fn pixel_gradient(
        &self,
        img: &mut InstructBlipImage<B>,
        question: &str,
        meter: &mut Meter,
    ) -> Result<Vec<f32>> {
        let norm = self.model.pixel_grad_norm(&img.image, question)?;
        meter.vision(1);
        meter.llm(self.model.llm_seq_len(question, 1)?, self.layers());
        Ok(norm)
    }
}

/// Compile-time check: a loaded model and pipeline can be shared across threads, and a
/// prepared image moved between them.
#[allow(dead_code)]
fn assert_thread_safe<B: Backend>() {
    fn shareable<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shareable::<InstructBlipVicrop<B>>();
    shareable::<vicrop_core::ViCrop<InstructBlipVicrop<B>>>();
    movable::<vicrop_core::PreparedImage<InstructBlipVicrop<B>>>();
}

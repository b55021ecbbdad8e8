//! The ViCrop pipeline, model-agnostic: baseline answer, saliency map (optionally tiled for
//! high-resolution images), crop box, crop, and the final answer with both images.
//!
//! A model plugs in through [`VicropModel`]; its per-image state (encoded image, shared prompt
//! prefix, cached general-description maps) lives in [`VicropModel::Image`], so one prepared
//! image serves many questions cheaply.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::crop::{CropBox, CropSelector};
use crate::map::SaliencyMap;
use crate::tiling::{crop_padded, TileGrid};

/// How the saliency map is computed (method.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Relative attention: attention of the question over attention of a general description.
    RelAtt,
    /// Attention weighted by the ReLU of its gradient.
    GradAtt,
    /// Input-gradient magnitude ratio, masked by a high-pass filter.
    PureGrad,
}

impl Method {
    /// The CLI / JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Method::RelAtt => "rel-att",
            Method::GradAtt => "grad-att",
            Method::PureGrad => "pure-grad",
        }
    }

    /// Parses a CLI / JSON name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "rel-att" => Method::RelAtt,
            "grad-att" => Method::GradAtt,
            "pure-grad" => Method::PureGrad,
            _ => return None,
        })
    }

    /// All methods.
    pub const ALL: [Method; 3] = [Method::RelAtt, Method::GradAtt, Method::PureGrad];
}

/// Generated text and its token ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Decoded text, trimmed.
    pub text: String,
    /// Generated ids, end-of-sequence excluded.
    pub token_ids: Vec<u32>,
    /// Whether generation ended on an end-of-sequence token (else on the token limit).
    pub stopped_at_eos: bool,
}

impl Answer {
    /// Decoding steps taken (the EOS step included).
    pub fn steps(&self) -> usize {
        self.token_ids.len() + usize::from(self.stopped_at_eos)
    }
}

/// Work counters, to compare with what the reference pipeline does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Token positions run through the language model (prefill and decode), summed over
    /// layers actually run divided by the layer count (a pass stopped at layer 14 of 32 counts
    /// 15/32 of its positions), rounded down.
    pub llm_positions: u64,
    /// Images run through the vision encoder.
    pub vision_images: u64,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.llm_positions += o.llm_positions;
        self.vision_images += o.vision_images;
    }
}

/// A model ViCrop can drive.
pub trait VicropModel {
    /// Per-image state: whatever can be reused across questions about the same image.
    type Image;
    /// The model's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The vision encoder's input side (the crop side S by default).
    fn input_side(&self) -> u32;
    /// Number of language-model layers.
    fn num_layers(&self) -> usize;
    /// The map layer the reference uses for this model (14 for a 32-layer LLM, scaled).
    fn default_layer(&self) -> usize;
    /// Prepares an image: encode it once, set up shared prompt prefixes.
    fn prepare(&self, image: &RgbImage) -> Result<Self::Image, Self::Error>;
    /// The original image of a prepared state.
    fn image<'a>(&self, prepared: &'a Self::Image) -> &'a RgbImage;
    /// Answers `question` about the image alone. When `probe_layer` is given the model may
    /// keep the question's attention row at that layer for a later rel-att map.
    fn answer(
        &self,
        prepared: &mut Self::Image,
        question: &str,
        max_new_tokens: usize,
        probe_layer: Option<usize>,
    ) -> Result<Answer, Self::Error>;
    /// The saliency map of `question` by `method` at `layer`, over the region the encoder saw.
    fn saliency(
        &self,
        prepared: &mut Self::Image,
        question: &str,
        method: Method,
        layer: usize,
    ) -> Result<SaliencyMap, Self::Error>;
    /// Answers with the original image followed by `crop`.
    fn answer_with_crop(
        &self,
        prepared: &mut Self::Image,
        crop: &RgbImage,
        question: &str,
        max_new_tokens: usize,
    ) -> Result<Answer, Self::Error>;
    /// Work done since the last call (then reset).
    fn take_cost(&self) -> Cost;
    /// Work the reference pipeline does for the same run: every pass over full prompts, the
    /// image re-encoded each time, all layers run.
    fn reference_cost(&self, run: &RunShape<'_>) -> Cost;
}

/// What a run looked like, for [`VicropModel::reference_cost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunShape<'a> {
    /// The method.
    pub method: Method,
    /// The question.
    pub question: &'a str,
    /// The question of the map passes.
    pub map_question: &'a str,
    /// Map passes per prompt (1, or the number of tiles in high-res mode).
    pub map_images: usize,
    /// Decoding steps of the baseline answer.
    pub baseline_steps: usize,
    /// Decoding steps of the crop answer.
    pub crop_steps: usize,
}

/// One question for [`ViCrop::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The question.
    pub text: String,
    /// A shorter question for the map passes (defaults to `text`).
    pub short: Option<String>,
    /// The map method.
    pub method: Method,
    /// Map layer (defaults to the model's).
    pub layer: Option<usize>,
    /// Tile the image (method.md section 5).
    pub high_res: bool,
}

impl Question {
    /// A question with the default options and `method`.
    pub fn new(text: impl Into<String>, method: Method) -> Self {
        Self {
            text: text.into(),
            short: None,
            method,
            layer: None,
            high_res: false,
        }
    }
}

/// Everything one run produced, step by step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The method.
    pub method: Method,
    /// Whether the map was tiled.
    pub high_res: bool,
    /// The map layer.
    pub layer: usize,
    /// The answer from the image alone.
    pub answer: Answer,
    /// The map the box was chosen from (stitched in high-res mode).
    pub map: SaliencyMap,
    /// The tile grid, in high-res mode.
    #[serde(skip)]
    pub tiles: Option<TileGrid>,
    /// The crop box in original-image pixels.
    pub bbox: CropBox,
    /// The answer with the original image and the crop.
    pub crop_answer: Answer,
    /// Work done by this run.
    pub cost: Cost,
    /// Work the reference pipeline does for the same run.
    pub reference_cost: Cost,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError<E: std::error::Error + 'static> {
    /// The model failed.
    #[error(transparent)]
    Model(E),
    /// The question or options are unusable.
    #[error("{0}")]
    Invalid(String),
}

/// A prepared image for [`ViCrop::run`]: the model state of the whole image and, once high-res
/// mode has been used, of each tile.
pub struct PreparedImage<M: VicropModel> {
    whole: M::Image,
    tiles: Option<(TileGrid, Vec<M::Image>)>,
    /// Work done preparing, charged to the next run.
    pending: Cost,
}

impl<M: VicropModel> PreparedImage<M> {
    /// The model state of the whole image.
    pub fn state(&mut self) -> &mut M::Image {
        &mut self.whole
    }
}

/// The ViCrop pipeline over a model.
pub struct ViCrop<M: VicropModel> {
    model: M,
    selector: Box<dyn CropSelector + Send + Sync>,
    /// Most tokens generated per answer (20 in the reference).
    pub max_new_tokens: usize,
    /// Tile rows are at most this tall in high-res mode (1024 in the reference).
    pub tile_threshold: u32,
}

impl<M: VicropModel> ViCrop<M> {
    /// A pipeline with the reference's crop selector (side = the encoder's input side).
    pub fn new(model: M) -> Self {
        let side = model.input_side();
        Self {
            model,
            selector: Box::new(crate::crop::AdaptiveWindow::new(side)),
            max_new_tokens: 20,
            tile_threshold: crate::tiling::DEFAULT_THRESHOLD,
        }
    }

    /// Replaces the crop selector.
    pub fn with_selector(mut self, selector: impl CropSelector + Send + Sync + 'static) -> Self {
        self.selector = Box::new(selector);
        self
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Prepares an image for any number of questions.
    pub fn prepare(&self, image: &RgbImage) -> Result<PreparedImage<M>, PipelineError<M::Error>> {
        let _ = self.model.take_cost();
        let whole = self.model.prepare(image).map_err(PipelineError::Model)?;
        Ok(PreparedImage {
            whole,
            tiles: None,
            pending: self.model.take_cost(),
        })
    }

    /// Computes the map for `question` (tiled in high-res mode), without answering.
    pub fn map(
        &self,
        prepared: &mut PreparedImage<M>,
        question: &str,
        method: Method,
        layer: usize,
        high_res: bool,
    ) -> Result<(SaliencyMap, Option<TileGrid>), PipelineError<M::Error>> {
        if !high_res {
            let map = self
                .model
                .saliency(&mut prepared.whole, question, method, layer)
                .map_err(PipelineError::Model)?;
            return Ok((map, None));
        }
        if prepared.tiles.is_none() {
            let img = self.model.image(&prepared.whole);
            let grid = TileGrid::for_image(img.width(), img.height(), self.tile_threshold);
            let mut states = Vec::with_capacity(grid.len());
            for b in grid.boxes() {
                let tile = crop_padded(img, b);
                states.push(self.model.prepare(&tile).map_err(PipelineError::Model)?);
            }
            prepared.tiles = Some((grid, states));
        }
        let Some((grid, states)) = prepared.tiles.as_mut() else {
            unreachable!("tiles were just prepared")
        };
        let mut maps = Vec::with_capacity(states.len());
        for state in states.iter_mut() {
            maps.push(
                self.model
                    .saliency(state, question, method, layer)
                    .map_err(PipelineError::Model)?,
            );
        }
        let map = grid
            .stitch(&maps)
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        Ok((map, Some(*grid)))
    }

    /// Runs ViCrop for one question: baseline answer, map, box, crop, final answer.
    pub fn run(
        &self,
        prepared: &mut PreparedImage<M>,
        q: &Question,
    ) -> Result<Outcome, PipelineError<M::Error>> {
        if q.text.trim().is_empty() {
            return Err(PipelineError::Invalid("the question is empty".into()));
        }
        let n_layers = self.model.num_layers();
        let layer = q.layer.unwrap_or_else(|| self.model.default_layer());
        if layer >= n_layers {
            return Err(PipelineError::Invalid(format!(
                "layer {layer} is out of range: the language model has {n_layers} layers (0..={})",
                n_layers - 1
            )));
        }
        let mut cost = std::mem::take(&mut prepared.pending);
        cost += self.model.take_cost();
        let map_question = q.short.as_deref().unwrap_or(&q.text);
        let probe =
            (q.method == Method::RelAtt && !q.high_res && map_question == q.text).then_some(layer);
        let answer = self
            .model
            .answer(&mut prepared.whole, &q.text, self.max_new_tokens, probe)
            .map_err(PipelineError::Model)?;
        let (map, tiles) = self.map(prepared, map_question, q.method, layer, q.high_res)?;
        let img = self.model.image(&prepared.whole);
        let bbox = self.selector.select(&map, img.dimensions());
        let crop = image::imageops::crop_imm(img, bbox.x0, bbox.y0, bbox.width(), bbox.height())
            .to_image();
        let crop_answer = self
            .model
            .answer_with_crop(&mut prepared.whole, &crop, &q.text, self.max_new_tokens)
            .map_err(PipelineError::Model)?;
        cost += self.model.take_cost();
        let reference_cost = self.model.reference_cost(&RunShape {
            method: q.method,
            question: &q.text,
            map_question,
            map_images: tiles.map_or(1, |g| g.len()),
            baseline_steps: answer.steps(),
            crop_steps: crop_answer.steps(),
        });
        Ok(Outcome {
            method: q.method,
            high_res: q.high_res,
            layer,
            answer,
            map,
            tiles,
            bbox,
            crop_answer,
            cost,
            reference_cost,
        })
    }
}

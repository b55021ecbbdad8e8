//! The ViCrop pipeline, model-agnostic: baseline answer, saliency map (optionally tiled for
//! high-resolution images), crop box, crop, and the final answer with both images.
//!
//! A model plugs in through [`AttentionSource`] and [`GradientSource`] (see [`crate::source`]):
//! it hands out raw signals, and this pipeline turns them into maps ([`crate::method`]), caches
//! what depends on the image alone (general-description maps, pure-grad's general gradient and
//! mask, per tile in high-res mode) in the caller's [`PreparedImage`], picks the box and asks
//! again. One prepared image serves many questions cheaply; one `ViCrop` serves many threads.

use std::collections::HashMap;
use std::time::Instant;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::crop::{CropBox, CropSelector};
use crate::map::SaliencyMap;
use crate::method::{self, GENERAL_QUESTION};
use crate::source::{
    reference_cost, AttentionRequest, AttentionSource, GradientSource, Meter, RunShape,
    SignalError, Stage, VisionLanguageModel,
};
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

/// Wall-clock milliseconds of one run, per stage (see [`crate::source::Stage`] for what each
/// covers). On a GPU each lap waits for the device first, so a stage's time is its own.
/// Stages a run skips are 0; pure-grad's map runs before the plain answer and encodes the image
/// itself, so its `vision` is the crop's alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Vision passes of the two answers.
    pub vision: f64,
    /// The plain answer up to its first token.
    pub prefill: f64,
    /// The plain answer's further tokens.
    pub decode: f64,
    /// The map's own passes.
    pub map: f64,
    /// Box choice and crop.
    #[serde(rename = "box")]
    pub crop_box: f64,
    /// The answer with the crop (after its vision pass).
    pub final_answer: f64,
    /// The whole run, start to end (the stages plus a little bookkeeping).
    pub total: f64,
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
    /// Connector map layer (InstructBLIP's Q-Former cross-attention index; defaults to the
    /// model's; ignored by models without a connector).
    pub connector_layer: Option<usize>,
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
            connector_layer: None,
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
    /// The connector map layer, for models with a connector.
    pub connector_layer: Option<usize>,
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
    /// Where the run's wall time went.
    pub timings: Timings,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError<E: std::error::Error + 'static> {
    /// The model failed.
    #[error(transparent)]
    Model(E),
    /// The model's signals could not be combined into a map.
    #[error("the model's signals are unusable: {0}")]
    Signal(#[from] SignalError),
    /// The question or options are unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Which attention maps a cache entry holds: language-model layer, connector layer.
type AttnKey = (usize, Option<usize>);

/// Maps and masks of one image (or tile) that later questions can reuse.
#[derive(Debug, Default)]
struct SignalCache {
    /// Head-reduced (and chained) attention maps of questions at a layer.
    questions: HashMap<(String, AttnKey), Vec<f32>>,
    /// The general description's attention maps (rel-att's denominators).
    general: HashMap<AttnKey, Vec<f32>>,
    /// The general description's pixel-gradient norm (pure-grad's denominator).
    general_grad: Option<Vec<f32>>,
    /// pure-grad's high-pass mask.
    high_pass: Option<Vec<bool>>,
}

/// A model's state of one image plus the pipeline's caches for it.
struct Slot<M: VisionLanguageModel> {
    state: M::Image,
    cache: SignalCache,
}

impl<M: VisionLanguageModel> Slot<M> {
    fn new(state: M::Image) -> Self {
        Self {
            state,
            cache: SignalCache::default(),
        }
    }
}

/// A prepared image for [`ViCrop::run`]: the model state of the whole image and, once
/// high-res mode has been used, of each tile, with the maps and masks that depend only on the
/// image. Owned by the caller (`Send` when the model's state is), so threads sharing one
/// [`ViCrop`] each keep their own.
pub struct PreparedImage<M: VisionLanguageModel> {
    whole: Slot<M>,
    tiles: Option<(TileGrid, Vec<Slot<M>>)>,
    /// Work done preparing, charged to the next run.
    pending: Cost,
}

impl<M: VisionLanguageModel> PreparedImage<M> {
    /// The model state of the whole image.
    pub fn state(&mut self) -> &mut M::Image {
        &mut self.whole.state
    }

    /// Drops the cached per-question attention maps (image-only caches stay), e.g. to time
    /// a map from scratch.
    pub fn forget_questions(&mut self) {
        self.whole.cache.questions.clear();
        if let Some((_, tiles)) = &mut self.tiles {
            for t in tiles {
                t.cache.questions.clear();
            }
        }
    }
}

/// The map layers of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layers {
    llm: usize,
    connector: Option<usize>,
}

/// The ViCrop pipeline over a model.
pub struct ViCrop<M> {
    model: M,
    selector: Box<dyn CropSelector + Send + Sync>,
    /// Most tokens generated per answer (20 in the reference).
    pub max_new_tokens: usize,
    /// Tile rows are at most this tall in high-res mode (1024 in the reference).
    pub tile_threshold: u32,
}

impl<M: AttentionSource + GradientSource> ViCrop<M> {
    /// A pipeline with the reference's crop selector (side = the encoder's input side).
    pub fn new(model: M) -> Self {
        let side = model.geometry().input_side;
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

    fn meter(&self) -> Meter {
        Meter::new(self.model.depth().llm_layers)
    }

    /// Prepares an image for any number of questions.
    pub fn prepare(&self, image: &RgbImage) -> Result<PreparedImage<M>, PipelineError<M::Error>> {
        let mut meter = self.meter();
        let state = self
            .model
            .prepare(image, &mut meter)
            .map_err(PipelineError::Model)?;
        Ok(PreparedImage {
            whole: Slot::new(state),
            tiles: None,
            pending: meter.take(),
        })
    }

    /// The map layers for `q`, defaulted and checked against the model's depth.
    fn layers(&self, layer: Option<usize>, connector: Option<usize>) -> Result<Layers, String> {
        let depth = self.model.depth();
        let n = depth.llm_layers;
        let llm = layer.unwrap_or_else(|| depth.default_layer());
        if llm >= n {
            return Err(format!(
                "layer {llm} is out of range: the language model has {n} layers (0..={})",
                n.saturating_sub(1)
            ));
        }
        let connector = match depth.connector {
            None => None,
            Some((k, _)) => {
                let c = connector.or(depth.default_connector_layer()).unwrap_or(0);
                if c >= k {
                    return Err(format!(
                        "connector (Q-Former cross-attention) layer {c} is out of range: the model has {k} such \
                         layers (0..={})",
                        k.saturating_sub(1)
                    ));
                }
                Some(c)
            }
        };
        Ok(Layers { llm, connector })
    }

    /// Computes the map for `question` (tiled in high-res mode), without answering. `layer`
    /// and `connector_layer` default to the model's.
    pub fn map(
        &self,
        prepared: &mut PreparedImage<M>,
        question: &str,
        method: Method,
        layer: Option<usize>,
        connector_layer: Option<usize>,
        high_res: bool,
    ) -> Result<(SaliencyMap, Option<TileGrid>), PipelineError<M::Error>> {
        let layers = self
            .layers(layer, connector_layer)
            .map_err(PipelineError::Invalid)?;
        let mut meter = self.meter();
        let out = self.map_metered(prepared, question, method, layers, high_res, &mut meter);
        prepared.pending += meter.take();
        out
    }

    fn map_metered(
        &self,
        prepared: &mut PreparedImage<M>,
        question: &str,
        method: Method,
        layers: Layers,
        high_res: bool,
        meter: &mut Meter,
    ) -> Result<(SaliencyMap, Option<TileGrid>), PipelineError<M::Error>> {
        if !high_res {
            let map = self.slot_map(&mut prepared.whole, question, method, layers, meter)?;
            return Ok((map, None));
        }
        if prepared.tiles.is_none() {
            let img = self.model.image(&prepared.whole.state);
            let grid = TileGrid::for_image(img.width(), img.height(), self.tile_threshold);
            let mut slots = Vec::with_capacity(grid.len());
            for b in grid.boxes() {
                let tile = crop_padded(img, b);
                let state = self
                    .model
                    .prepare(&tile, meter)
                    .map_err(PipelineError::Model)?;
                slots.push(Slot::new(state));
            }
            prepared.tiles = Some((grid, slots));
        }
        let Some((grid, slots)) = prepared.tiles.as_mut() else {
            unreachable!("tiles were just prepared")
        };
        let mut maps = Vec::with_capacity(slots.len());
        for slot in slots.iter_mut() {
            maps.push(self.slot_map(slot, question, method, layers, meter)?);
        }
        let map = grid
            .stitch(&maps)
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        Ok((map, Some(*grid)))
    }

    /// The map of one image or tile, from the model's signals and the slot's caches.
    fn slot_map(
        &self,
        slot: &mut Slot<M>,
        question: &str,
        method: Method,
        layers: Layers,
        meter: &mut Meter,
    ) -> Result<SaliencyMap, PipelineError<M::Error>> {
        let geometry = self.model.geometry();
        let key = (layers.llm, layers.connector);
        let request = |with_grad| AttentionRequest {
            layer: layers.llm,
            connector_layer: layers.connector,
            with_grad,
        };
        let model = |e| PipelineError::Model(e);
        let values = match method {
            Method::RelAtt => {
                let cache_key = (question.to_string(), key);
                let qa = match slot.cache.questions.get(&cache_key) {
                    Some(v) => v.clone(),
                    None => {
                        let signal = self
                            .model
                            .attention(&mut slot.state, question, request(false), meter)
                            .map_err(model)?;
                        let v = method::attention_map(&signal, false)?;
                        slot.cache.questions.insert(cache_key, v.clone());
                        v
                    }
                };
                let general = match slot.cache.general.get(&key) {
                    Some(v) => v.clone(),
                    None => {
                        let signal = self
                            .model
                            .attention(&mut slot.state, GENERAL_QUESTION, request(false), meter)
                            .map_err(model)?;
                        let v = method::attention_map(&signal, false)?;
                        slot.cache.general.insert(key, v.clone());
                        v
                    }
                };
                method::ratio(&qa, &general)?
            }
            Method::GradAtt => {
                let signal = self
                    .model
                    .attention(&mut slot.state, question, request(true), meter)
                    .map_err(model)?;
                method::attention_map(&signal, true)?
            }
            Method::PureGrad => {
                let qa = self
                    .model
                    .pixel_gradient(&mut slot.state, question, meter)
                    .map_err(model)?;
                let general = match &slot.cache.general_grad {
                    Some(g) => g.clone(),
                    None => {
                        let g = self
                            .model
                            .pixel_gradient(&mut slot.state, GENERAL_QUESTION, meter)
                            .map_err(model)?;
                        slot.cache.general_grad = Some(g.clone());
                        g
                    }
                };
                let image = self.model.image(&slot.state);
                let mask = slot
                    .cache
                    .high_pass
                    .get_or_insert_with(|| method::high_pass(image, geometry.input_side));
                method::pure_grad(&qa, &general, mask, geometry)?
            }
        };
        let g = geometry.grid;
        let map = SaliencyMap::new(g, g, values)
            .map_err(|e| PipelineError::Invalid(e.to_string()))?
            .with_region(self.model.region(&slot.state));
        Ok(map)
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
        if q.short.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(PipelineError::Invalid("the short question is empty".into()));
        }
        let layers = self
            .layers(q.layer, q.connector_layer)
            .map_err(PipelineError::Invalid)?;
        let map_question = q.short.as_deref().unwrap_or(&q.text);
        let len = |question: &str, images| {
            self.model
                .prompt_len(question, images)
                .map_err(PipelineError::Model)
        };
        let final_len = len(&q.text, 2)?;
        let context = self.model.context_length();
        if final_len.saturating_add(self.max_new_tokens) > context {
            return Err(PipelineError::Invalid(format!(
                "max_new_tokens {} does not fit the language model's context: the prompt with \
                 the image and the crop takes {final_len} of its {context} positions",
                self.max_new_tokens
            )));
        }
        let started = Instant::now();
        let mut meter = self.meter();
        let mut cost = std::mem::take(&mut prepared.pending);
        let key = (layers.llm, layers.connector);
        let probe = (q.method == Method::RelAtt && !q.high_res && map_question == q.text)
            .then_some(AttentionRequest {
                layer: layers.llm,
                connector_layer: layers.connector,
                with_grad: false,
            });
        // pure-grad's question gradient runs the whole prompt through the model; a model may
        // keep that forward's image prefix for the plain answer, so the map goes first there.
        // (rel-att goes the other way: the plain answer's prefill hands out the map's row.)
        let map_of = |prepared: &mut PreparedImage<M>, meter: &mut Meter| {
            meter.scope(Some(Stage::Map));
            let map = self.map_metered(prepared, map_question, q.method, layers, q.high_res, meter);
            meter.lap(Stage::Map);
            meter.scope(None);
            map
        };
        let early_map = if q.method == Method::PureGrad {
            Some(map_of(prepared, &mut meter)?)
        } else {
            None
        };
        let (answer, signal) = self
            .model
            .answer(
                &mut prepared.whole.state,
                &q.text,
                self.max_new_tokens,
                probe,
                &mut meter,
            )
            .map_err(PipelineError::Model)?;
        meter.lap(Stage::Decode);
        if let Some(signal) = signal.filter(|_| probe.is_some()) {
            let values = method::attention_map(&signal, false)?;
            prepared
                .whole
                .cache
                .questions
                .insert((q.text.clone(), key), values);
        }
        let (map, tiles) = match early_map {
            Some(done) => done,
            None => map_of(prepared, &mut meter)?,
        };
        let img = self.model.image(&prepared.whole.state);
        let bbox = self.selector.select(&map, img.dimensions());
        let crop = image::imageops::crop_imm(img, bbox.x0, bbox.y0, bbox.width(), bbox.height())
            .to_image();
        meter.lap(Stage::Box);
        let crop_answer = self
            .model
            .answer_with_crop(
                &mut prepared.whole.state,
                &crop,
                &q.text,
                self.max_new_tokens,
                &mut meter,
            )
            .map_err(PipelineError::Model)?;
        meter.lap(Stage::FinalAnswer);
        let timings = meter.take_timings(started.elapsed());
        cost += meter.take();
        let reference_cost = reference_cost(&RunShape {
            method: q.method,
            question_len: len(&q.text, 1)?,
            map_question_len: len(map_question, 1)?,
            general_len: len(GENERAL_QUESTION, 1)?,
            final_len,
            map_images: tiles.map_or(1, |g| g.len()),
            baseline_steps: answer.steps(),
            crop_steps: crop_answer.steps(),
        });
        Ok(Outcome {
            method: q.method,
            high_res: q.high_res,
            layer: layers.llm,
            connector_layer: layers.connector,
            answer,
            map,
            tiles,
            bbox,
            crop_answer,
            cost,
            reference_cost,
            timings,
        })
    }
}

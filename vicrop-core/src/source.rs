//! The seams between a model and the method: what a model must hand out so that
//! [`crate::pipeline::ViCrop`] can compute every map, for every model, in one place.
//!
//! A model implements three traits:
//! - [`VisionLanguageModel`]: prepare an image, answer, answer with a crop as a second image,
//!   and describe itself (map geometry, depth, prompt lengths);
//! - [`AttentionSource`]: the raw attention signals of one pass, and their gradients;
//! - [`GradientSource`]: the per-pixel gradient magnitude of one pass.
//!
//! The paper writes the attention map as a chain,
//! `A = A(last prompt token -> visual tokens) x A(visual tokens -> patches)`. A model hands out
//! both factors per head ([`AttentionSignal`]); the second one only when it has a connector
//! between the patches and the language model (InstructBLIP's Q-Former cross-attention), else
//! token `k` *is* patch `k` (LLaVA). Head means, gradient weighting, chaining, ratios, the
//! pure-grad filters and all caching of image-only signals live in [`crate::method`] and the
//! pipeline, written once.
//!
//! # What crosses the device boundary
//! Signals are host-side `f32`. Per attention pass that is one `heads x tokens` row (LLaVA-1.5-7B:
//! 32 x 576 floats, 72 KiB) plus, for a connector, `heads x tokens x patches` (InstructBLIP:
//! 12 x 32 x 256 floats, 384 KiB), doubled when gradients are asked for; per gradient pass one
//! `R x R` plane (336 x 336 floats, 441 KiB). Everything else stays on the device.

use std::time::{Duration, Instant};

use image::RgbImage;

use crate::map::Rect;
use crate::pipeline::{Answer, Cost, Timings};

/// Values per head: `heads` blocks of `len` values each, row-major (`[heads, len]`).
///
/// For the language model's row `len` is the number of visual tokens; for a connector's
/// attention it is `tokens * patches` (each head a row-major `[tokens, patches]` matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadRows {
    heads: usize,
    len: usize,
    values: Vec<f32>,
}

/// Why signals could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Values do not fill `heads x len`.
    #[error("{what}: {got} values do not form {heads} heads of {len}")]
    Shape {
        /// Which signal.
        what: &'static str,
        /// Heads.
        heads: usize,
        /// Values per head.
        len: usize,
        /// Values given.
        got: usize,
    },
    /// Two signals that must agree in shape do not.
    #[error("{0}")]
    Mismatch(String),
    /// A gradient method was given a signal without its gradient.
    #[error("{0} was computed without its gradient")]
    MissingGradient(&'static str),
}

impl HeadRows {
    /// `values` as `heads` blocks of `len`.
    pub fn new(heads: usize, len: usize, values: Vec<f32>) -> Result<Self, SignalError> {
        if heads == 0 || len == 0 || values.len() != heads * len {
            return Err(SignalError::Shape {
                what: "head rows",
                heads,
                len,
                got: values.len(),
            });
        }
        Ok(Self { heads, len, values })
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Values per head.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (a row has at least one value per head).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All values, head-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Head `h`'s values.
    pub fn head(&self, h: usize) -> &[f32] {
        &self.values[h * self.len..(h + 1) * self.len]
    }
}

/// The attention a model hands out for one prompt (method.md section 3).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSignal {
    /// Post-softmax attention of the last prompt token over the visual tokens at the
    /// requested language-model layer: `[heads, tokens]`.
    pub text: HeadRows,
    /// `d log p(top token) / d text`, when asked for.
    pub text_grad: Option<HeadRows>,
    /// The connector's attention from visual tokens to image patches (CLS key dropped), per
    /// head `[tokens, patches]`; `None` when token `k` is patch `k`.
    pub connector: Option<HeadRows>,
    /// `d log p(top token) / d connector`, from the same backward pass as `text_grad`.
    pub connector_grad: Option<HeadRows>,
}

/// What one attention pass must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttentionRequest {
    /// Language-model layer (0-based).
    pub layer: usize,
    /// Connector layer (InstructBLIP: index into the Q-Former's cross-attention layers);
    /// ignored by models without a connector.
    pub connector_layer: Option<usize>,
    /// Also return the gradients of the top first-token log-probability (one backward pass).
    pub with_grad: bool,
}

/// Where a model's maps live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapGeometry {
    /// Side of the square encoder input in pixels (R: 336 for LLaVA-1.5, 224 for InstructBLIP);
    /// also the default crop side.
    pub input_side: u32,
    /// Vision patch side in pixels.
    pub patch: u32,
    /// Map rows = columns (`input_side / patch`).
    pub grid: usize,
}

/// A default layer as the reference picks it for its 32-layer model, scaled to other depths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerRule {
    /// The reference's layer.
    pub layer: usize,
    /// The depth the reference's layer is for.
    pub of: usize,
    /// Round to nearest (`true`) or truncate.
    pub round: bool,
}

impl LayerRule {
    /// LLaVA-1.5's language-model layer: 14 of 32, rounded.
    pub const LLAVA: LayerRule = LayerRule {
        layer: 14,
        of: 32,
        round: true,
    };
    /// InstructBLIP's language-model layer: `int(15 n / 32)`.
    pub const INSTRUCTBLIP_LLM: LayerRule = LayerRule {
        layer: 15,
        of: 32,
        round: false,
    };
    /// InstructBLIP's Q-Former cross-attention index: `int(2 n / 6)` of `n` cross-attention
    /// layers (index 2 = Q-Former layer 4 of the real model).
    pub const INSTRUCTBLIP_QFORMER: LayerRule = LayerRule {
        layer: 2,
        of: 6,
        round: false,
    };

    /// The layer for a model of `depth` layers (always `< depth`, 0 for an empty model).
    pub fn for_depth(&self, depth: usize) -> usize {
        let num = self.layer * depth + if self.round { self.of / 2 } else { 0 };
        (num / self.of.max(1)).min(depth.saturating_sub(1))
    }
}

/// The depth of a model's attention stacks and the reference's default layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    /// Language-model layers.
    pub llm_layers: usize,
    /// How the reference picks the language-model map layer.
    pub llm_rule: LayerRule,
    /// Connector layers that attend to the patches, and the reference's rule, if any.
    pub connector: Option<(usize, LayerRule)>,
}

impl Depth {
    /// The default language-model map layer.
    pub fn default_layer(&self) -> usize {
        self.llm_rule.for_depth(self.llm_layers)
    }

    /// The default connector layer, if the model has a connector.
    pub fn default_connector_layer(&self) -> Option<usize> {
        self.connector.map(|(n, rule)| rule.for_depth(n))
    }
}

/// A stage of one run, for [`Timings`]: where [`Meter::lap`] puts the time since the last lap.
/// Its discriminant indexes the meter's per-stage times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The vision encoder's passes for the two answers: the image's (when the plain answer is
    /// the first to need it) and the crop's.
    Vision,
    /// The plain answer up to its first token on the host: the image prefix and the question.
    Prefill,
    /// The plain answer's further tokens.
    Decode,
    /// Everything the map needs that the plain answer did not already compute (its own
    /// forward and backward passes, and their vision passes in high-res and pure-grad runs).
    Map,
    /// Choosing the box and cutting the crop out of the image.
    Box,
    /// The answer with the image and the crop, the crop's vision pass excluded.
    FinalAnswer,
}

/// Work counter and stage clock handed to every model call: language-model positions times
/// layers run, images encoded, and wall time per [`Stage`]. Owned by the caller, so models
/// stay `Sync`.
///
/// # Timing protocol
/// The clock starts when the meter is made. [`Meter::lap`] charges the time since the last lap
/// to a stage. A model laps [`Stage::Vision`] right after an answer's vision pass and
/// [`Stage::Prefill`] when a plain answer's first token reaches the host
/// ([`Meter::lap_at`]); the pipeline laps the rest. A device backend must wait for its queue
/// before lapping (`Backend::sync`), or the work shows up in a later stage. While a scope is
/// set ([`Meter::scope`]), every lap goes to the scope's stage: the pipeline sets
/// [`Stage::Map`] around the map, so a model's vision pass inside it (a high-res tile's, say)
/// counts as map time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meter {
    llm_layers: u64,
    position_layers: u64,
    vision_images: u64,
    clock: Instant,
    scope: Option<Stage>,
    spent: [Duration; 6],
}

impl Meter {
    /// A meter for a language model of `llm_layers` layers; its clock starts now.
    pub fn new(llm_layers: usize) -> Self {
        Self {
            llm_layers: llm_layers.max(1) as u64,
            position_layers: 0,
            vision_images: 0,
            clock: Instant::now(),
            scope: None,
            spent: [Duration::ZERO; 6],
        }
    }

    /// `positions` run through `layers_run` language-model layers.
    pub fn llm(&mut self, positions: usize, layers_run: usize) {
        self.position_layers += (positions * layers_run) as u64;
    }

    /// `images` run through the vision encoder.
    pub fn vision(&mut self, images: usize) {
        self.vision_images += images as u64;
    }

    /// Charges the time since the last lap to `stage` (or to the scope's stage).
    pub fn lap(&mut self, stage: Stage) {
        self.lap_at(stage, Instant::now());
    }

    /// Charges the time from the last lap to `at` to `stage` (or to the scope's stage), and
    /// restarts the clock at `at`. An `at` before the last lap charges nothing.
    pub fn lap_at(&mut self, stage: Stage, at: Instant) {
        let stage = self.scope.unwrap_or(stage);
        self.spent[stage as usize] += at.saturating_duration_since(self.clock);
        self.clock = self.clock.max(at);
    }

    /// Sends every lap to `stage` until the scope is cleared with `None`.
    pub fn scope(&mut self, stage: Option<Stage>) {
        self.scope = stage;
    }

    /// The work so far (a pass stopped at layer `l` of `n` counts `(l + 1) / n` of its
    /// positions; the sum is rounded down), and resets the work counters.
    pub fn take(&mut self) -> Cost {
        let cost = Cost {
            llm_positions: self.position_layers / self.llm_layers,
            vision_images: self.vision_images,
        };
        self.position_layers = 0;
        self.vision_images = 0;
        cost
    }

    /// The time charged to each stage so far, with `total` as given, and resets the stage
    /// times (the clock runs on).
    pub fn take_timings(&mut self, total: Duration) -> Timings {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let [vision, prefill, decode, map, crop_box, final_answer] = self.spent.map(ms);
        self.spent = [Duration::ZERO; 6];
        Timings {
            vision,
            prefill,
            decode,
            map,
            crop_box,
            final_answer,
            total: ms(total),
        }
    }
}

/// A model ViCrop can answer with: the slim interface under [`AttentionSource`] and
/// [`GradientSource`].
///
/// Implementations must be `Send + Sync`: one loaded model serves many threads, each owning
/// its prepared images ([`VisionLanguageModel::Image`]).
pub trait VisionLanguageModel: Send + Sync {
    /// Per-image state: whatever can be reused across questions about the same image (an
    /// encoded image, a shared prompt prefix). Owned by the caller.
    type Image: Send;
    /// The model's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Map grid and encoder input side.
    fn geometry(&self) -> MapGeometry;
    /// Layer counts and the reference's default layers.
    fn depth(&self) -> Depth;
    /// Positions the language model can hold (prompt plus generated tokens).
    fn context_length(&self) -> usize;
    /// Length of the language model's input for `question` about `images` images: what the
    /// reference runs per pass (for [`reference_cost`]).
    fn prompt_len(&self, question: &str, images: usize) -> Result<usize, Self::Error>;
    /// Prepares an image: checks it and sets up per-image state (work may be deferred).
    fn prepare(&self, image: &RgbImage, meter: &mut Meter) -> Result<Self::Image, Self::Error>;
    /// The original image of a prepared state.
    fn image<'a>(&self, prepared: &'a Self::Image) -> &'a RgbImage;
    /// The region of the original image the encoder saw (LLaVA: its centre crop).
    fn region(&self, prepared: &Self::Image) -> Rect;
    /// Answers `question` about the image alone (greedy, at most `max_new_tokens`). When
    /// `probe` is given the model may also return that pass's attention signal (without
    /// gradients); `None` means the pipeline asks [`AttentionSource::attention`] itself.
    fn answer(
        &self,
        prepared: &mut Self::Image,
        question: &str,
        max_new_tokens: usize,
        probe: Option<AttentionRequest>,
        meter: &mut Meter,
    ) -> Result<(Answer, Option<AttentionSignal>), Self::Error>;
    /// Answers with the original image followed by `crop` (method.md section 6).
    fn answer_with_crop(
        &self,
        prepared: &mut Self::Image,
        crop: &RgbImage,
        question: &str,
        max_new_tokens: usize,
        meter: &mut Meter,
    ) -> Result<Answer, Self::Error>;
}

/// A model that hands out attention (rel-att, grad-att).
pub trait AttentionSource: VisionLanguageModel {
    /// The attention signal of `question`'s prompt about the prepared image.
    fn attention(
        &self,
        prepared: &mut Self::Image,
        question: &str,
        request: AttentionRequest,
        meter: &mut Meter,
    ) -> Result<AttentionSignal, Self::Error>;
}

/// A model that hands out input gradients (pure-grad).
pub trait GradientSource: VisionLanguageModel {
    /// Per-pixel L2 norm over channels of `d log p(top token) / d pixel values` for
    /// `question`'s prompt: `input_side * input_side` values, row-major.
    fn pixel_gradient(
        &self,
        prepared: &mut Self::Image,
        question: &str,
        meter: &mut Meter,
    ) -> Result<Vec<f32>, Self::Error>;
}

/// What a run looked like, for [`reference_cost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// The method.
    pub method: crate::pipeline::Method,
    /// Language-model input length of the question with one image.
    pub question_len: usize,
    /// Language-model input length of the map question with one image.
    pub map_question_len: usize,
    /// Language-model input length of the general prompt with one image.
    pub general_len: usize,
    /// Language-model input length of the question with the image and the crop.
    pub final_len: usize,
    /// Map passes per prompt (1, or the number of tiles in high-res mode).
    pub map_images: usize,
    /// Decoding steps of the baseline answer.
    pub baseline_steps: usize,
    /// Decoding steps of the crop answer.
    pub crop_steps: usize,
}

/// The work the reference pipeline does for a run: every pass over the full prompt through
/// all layers, the image (or tile) encoded again for each pass.
pub fn reference_cost(run: &RunShape) -> Cost {
    use crate::pipeline::Method;
    let decode = |steps: usize| steps.saturating_sub(1) as u64;
    let tiles = run.map_images as u64;
    // Baseline: one full prefill and its decoding steps, one image encoding.
    let mut positions = run.question_len as u64 + decode(run.baseline_steps);
    let mut vision = 1;
    // Maps: rel-att and pure-grad also run the general prompt.
    let (passes_qa, passes_general) = match run.method {
        Method::RelAtt | Method::PureGrad => (1, 1),
        Method::GradAtt => (1, 0),
    };
    positions +=
        tiles * (passes_qa * run.map_question_len as u64 + passes_general * run.general_len as u64);
    vision += tiles * (passes_qa + passes_general);
    // Final answer: the two-image prompt and its decoding steps, two encodings.
    positions += run.final_len as u64 + decode(run.crop_steps);
    vision += 2;
    Cost {
        llm_positions: positions,
        vision_images: vision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Laps charge the time between them to their stage, a scope takes every lap, a lap
    /// before the clock charges nothing, and taking the timings resets them.
    #[test]
    fn laps_charge_stages_and_scopes() {
        let mut m = Meter::new(4);
        let t0 = m.clock;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        m.lap_at(Stage::Vision, at(10));
        m.lap_at(Stage::Prefill, at(25));
        m.scope(Some(Stage::Map));
        m.lap_at(Stage::Vision, at(30));
        m.lap_at(Stage::Decode, at(37));
        m.scope(None);
        m.lap_at(Stage::Decode, at(40));
        m.lap_at(Stage::Box, at(20)); // before the clock: nothing
        m.lap_at(Stage::FinalAnswer, at(41));
        let t = m.take_timings(Duration::from_millis(50));
        let expect = Timings {
            vision: 10.0,
            prefill: 15.0,
            decode: 3.0,
            map: 12.0,
            crop_box: 0.0,
            final_answer: 1.0,
            total: 50.0,
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        let pairs = [
            (t.vision, expect.vision),
            (t.prefill, expect.prefill),
            (t.decode, expect.decode),
            (t.map, expect.map),
            (t.crop_box, expect.crop_box),
            (t.final_answer, expect.final_answer),
            (t.total, expect.total),
        ];
        assert!(pairs.iter().all(|&(a, b)| close(a, b)), "{t:?}");
        let again = m.take_timings(Duration::ZERO);
        assert_eq!(again, Timings::default());
    }
}

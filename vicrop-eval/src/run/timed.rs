//! A model wrapper that clocks the plain-answer calls, so a row can split the pipeline's time
//! into the plain answer and what ViCrop adds, with the pipeline (and all its reuse of work)
//! unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use vicrop_core::{
    AttentionRequest, AttentionSignal, AttentionSource, Depth, GradientSource, MapGeometry, Meter,
    Rect, RgbImage, VisionLanguageModel,
};

/// `M`, with the wall-clock time spent in [`VisionLanguageModel::answer`] summed up.
pub(crate) struct Timed<M> {
    inner: M,
    answer_nanos: AtomicU64,
}

impl<M> Timed<M> {
    pub(crate) fn new(inner: M) -> Self {
        Self {
            inner,
            answer_nanos: AtomicU64::new(0),
        }
    }

    /// Seconds spent in `answer` so far (take differences).
    pub(crate) fn answer_seconds(&self) -> f64 {
        self.answer_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }
}

impl<M: VisionLanguageModel> VisionLanguageModel for Timed<M> {
    type Image = M::Image;
    type Error = M::Error;

    fn geometry(&self) -> MapGeometry {
        self.inner.geometry()
    }

    fn depth(&self) -> Depth {
        self.inner.depth()
    }

    fn context_length(&self) -> usize {
        self.inner.context_length()
    }

    fn prompt_len(&self, question: &str, images: usize) -> Result<usize, Self::Error> {
        self.inner.prompt_len(question, images)
    }

    fn prepare(&self, image: &RgbImage, meter: &mut Meter) -> Result<Self::Image, Self::Error> {
        self.inner.prepare(image, meter)
    }

    fn image<'a>(&self, prepared: &'a Self::Image) -> &'a RgbImage {
        self.inner.image(prepared)
    }

    fn region(&self, prepared: &Self::Image) -> Rect {
        self.inner.region(prepared)
    }

    fn answer(
        &self,
        prepared: &mut Self::Image,
        question: &str,
        max_new_tokens: usize,
        probe: Option<AttentionRequest>,
        meter: &mut Meter,
    ) -> Result<(vicrop_core::Answer, Option<AttentionSignal>), Self::Error> {
        let started = Instant::now();
        let out = self
            .inner
            .answer(prepared, question, max_new_tokens, probe, meter);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.answer_nanos.fetch_add(nanos, Ordering::Relaxed);
        out
    }

    fn answer_with_crop(
        &self,
        prepared: &mut Self::Image,
        crop: &RgbImage,
        question: &str,
        max_new_tokens: usize,
        meter: &mut Meter,
    ) -> Result<vicrop_core::Answer, Self::Error> {
        self.inner
            .answer_with_crop(prepared, crop, question, max_new_tokens, meter)
    }
}

impl<M: AttentionSource> AttentionSource for Timed<M> {
    fn attention(
        &self,
        prepared: &mut Self::Image,
        question: &str,
        request: AttentionRequest,
        meter: &mut Meter,
    ) -> Result<AttentionSignal, Self::Error> {
        self.inner.attention(prepared, question, request, meter)
    }
}

impl<M: GradientSource> GradientSource for Timed<M> {
    fn pixel_gradient(
        &self,
        prepared: &mut Self::Image,
        question: &str,
        meter: &mut Meter,
    ) -> Result<Vec<f32>, Self::Error> {
        self.inner.pixel_gradient(prepared, question, meter)
    }
}

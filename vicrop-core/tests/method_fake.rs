//! The method without a checkpoint: a fake model hands out fixed signals, and every map,
//! cache, default and cost is checked against values computed by hand.

use std::collections::HashMap;

use image::{Rgb, RgbImage};
use vicrop_core::method::{self, GENERAL_QUESTION};
use vicrop_core::source::{reference_cost, RunShape};
use vicrop_core::{
    Answer, AttentionRequest, AttentionSignal, AttentionSource, Depth, GradientSource, HeadRows,
    LayerRule, MapGeometry, Meter, Method, Question, Rect, ViCrop, VisionLanguageModel,
};

fn rows(heads: usize, len: usize, values: &[f32]) -> HeadRows {
    HeadRows::new(heads, len, values.to_vec()).expect("rows")
}

#[test]
fn head_mean_weighting_and_chain_by_hand() {
    // Two heads over three tokens.
    let a = rows(2, 3, &[0.2, 0.3, 0.5, 0.6, 0.2, 0.2]);
    assert_eq!(method::head_mean(&a), vec![0.4, 0.25, 0.35]);
    // relu drops the negative gradients: head 0 -> [0.2*1, 0, 0.5*2], head 1 -> [0, 0.2*3, 0].
    let g = rows(2, 3, &[1.0, -1.0, 2.0, -0.5, 3.0, 0.0]);
    let w = method::grad_weighted_mean(&a, &g).expect("weighted");
    let want = [0.1, 0.3, 0.5];
    for (x, y) in w.iter().zip(want) {
        assert!((x - y).abs() < 1e-6, "{w:?}");
    }
    // s = [1, 2] over a [2 tokens, 3 patches] connector.
    let q = [0.1, 0.2, 0.7, 0.5, 0.5, 0.0];
    assert_eq!(
        method::chain(&[1.0, 2.0], &q, 3).expect("chain"),
        vec![1.1, 1.2, 0.7]
    );
    assert!(method::chain(&[1.0], &q, 4).is_err());
    assert!(method::grad_weighted_mean(&a, &rows(3, 2, &[0.0; 6])).is_err());
}

#[test]
fn attention_map_chains_both_factors_and_needs_gradients_for_grad_att() {
    // 1 head, 2 tokens, connector 1 head over 2 tokens x 2 patches.
    let signal = AttentionSignal {
        text: rows(1, 2, &[0.25, 0.75]),
        text_grad: Some(rows(1, 2, &[2.0, -1.0])),
        connector: Some(rows(1, 4, &[0.5, 0.5, 0.1, 0.9])),
        connector_grad: Some(rows(1, 4, &[1.0, 0.0, 1.0, 1.0])),
    };
    // rel-att factor: [0.25, 0.75] @ [[0.5, 0.5], [0.1, 0.9]] = [0.2, 0.8].
    let plain = method::attention_map(&signal, false).expect("plain");
    assert!((plain[0] - 0.2).abs() < 1e-6 && (plain[1] - 0.8).abs() < 1e-6);
    // grad-att: s~ = [0.5, 0], Q~ = [[0.5, 0], [0.1, 0.9]] -> [0.25, 0].
    let weighted = method::attention_map(&signal, true).expect("weighted");
    assert_eq!(weighted, vec![0.25, 0.0]);
    let no_grad = AttentionSignal {
        connector_grad: None,
        ..signal
    };
    assert!(method::attention_map(&no_grad, true).is_err());
}

#[test]
fn pure_grad_masks_divides_and_block_averages() {
    // A 4x4 input, 2x2 patches -> 2x2 map.
    let geometry = MapGeometry {
        input_side: 4,
        patch: 2,
        grid: 2,
    };
    let qa: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let general = vec![2.0; 16];
    let mask: Vec<bool> = (0..16).map(|i| i % 4 < 2).collect(); // left half
    let map = method::pure_grad(&qa, &general, &mask, geometry).expect("map");
    // Top-left block: (0 + 1 + 4 + 5) / 2 / 4 = 1.25; bottom-left: (8+9+12+13)/2/4 = 5.25.
    assert_eq!(map, vec![1.25, 0.0, 5.25, 0.0]);
    assert!(method::pure_grad(&qa[..8], &general, &mask, geometry).is_err());
}

#[test]
fn layer_defaults_scale_with_depth() {
    assert_eq!(LayerRule::LLAVA.for_depth(32), 14);
    assert_eq!(LayerRule::LLAVA.for_depth(40), 18); // round(17.5)
    assert_eq!(LayerRule::LLAVA.for_depth(4), 2); // round(1.75)
    assert_eq!(LayerRule::INSTRUCTBLIP_LLM.for_depth(32), 15);
    assert_eq!(LayerRule::INSTRUCTBLIP_LLM.for_depth(6), 2); // int(2.81)
    assert_eq!(LayerRule::INSTRUCTBLIP_QFORMER.for_depth(6), 2);
    assert_eq!(LayerRule::INSTRUCTBLIP_QFORMER.for_depth(3), 1);
    assert_eq!(LayerRule::LLAVA.for_depth(1), 0);
}

#[test]
fn reference_cost_by_hand() {
    let run = RunShape {
        method: Method::RelAtt,
        question_len: 600,
        map_question_len: 600,
        general_len: 605,
        final_len: 1180,
        map_images: 2,
        baseline_steps: 5,
        crop_steps: 1,
    };
    let c = reference_cost(&run);
    // 600 + 4 + 2 * (600 + 605) + 1180 + 0
    assert_eq!(c.llm_positions, 4194);
    assert_eq!(c.vision_images, 1 + 2 * 2 + 2);
    let c = reference_cost(&RunShape {
        method: Method::GradAtt,
        ..run
    });
    assert_eq!(c.llm_positions, 600 + 4 + 2 * 600 + 1180);
    assert_eq!(c.vision_images, 1 + 2 + 2);
}

// ---------------------------------------------------------------------------------------
// A fake model: a 2x2 map over a 4x4 input, one head per token, an optional connector.

/// Per-question attention over the 4 patches (or 2 tokens with a connector).
struct Fake {
    connector: bool,
    attention: HashMap<String, Vec<f32>>,
}

#[derive(Default)]
struct FakeImage {
    image: RgbImage,
    calls: Vec<(String, bool)>,
    gradient_calls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("fake: {0}")]
struct FakeError(String);

impl Fake {
    fn new(connector: bool) -> Self {
        let mut attention = HashMap::new();
        let (q, g) = if connector {
            (vec![0.8, 0.2], vec![0.5, 0.5])
        } else {
            (vec![0.125, 0.25, 0.375, 0.5], vec![0.25, 0.25, 0.25, 0.5])
        };
        attention.insert("Where is the cat?".to_string(), q);
        attention.insert(GENERAL_QUESTION.to_string(), g);
        Self {
            connector,
            attention,
        }
    }

    fn signal(&self, question: &str, with_grad: bool) -> Result<AttentionSignal, FakeError> {
        let text = self
            .attention
            .get(question)
            .ok_or_else(|| FakeError(format!("no attention for {question}")))?;
        let n = text.len();
        let text = rows(1, n, text);
        let connector = self
            .connector
            .then(|| rows(1, 8, &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5]));
        Ok(AttentionSignal {
            text_grad: with_grad.then(|| rows(1, n, &vec![1.0; n])),
            connector_grad: connector
                .as_ref()
                .filter(|_| with_grad)
                .map(|_| rows(1, 8, &[1.0; 8])),
            text,
            connector,
        })
    }
}

fn answer(text: &str) -> Answer {
    Answer {
        text: text.into(),
        token_ids: vec![7, 8],
        stopped_at_eos: true,
    }
}

impl VisionLanguageModel for Fake {
    type Image = FakeImage;
    type Error = FakeError;

    fn geometry(&self) -> MapGeometry {
        MapGeometry {
            input_side: 4,
            patch: 2,
            grid: 2,
        }
    }

    fn depth(&self) -> Depth {
        Depth {
            llm_layers: 4,
            llm_rule: LayerRule::LLAVA,
            connector: self
                .connector
                .then_some((3, LayerRule::INSTRUCTBLIP_QFORMER)),
        }
    }

    fn context_length(&self) -> usize {
        64
    }

    fn prompt_len(&self, question: &str, images: usize) -> Result<usize, FakeError> {
        Ok(question.len() + 4 * images)
    }

    fn prepare(&self, image: &RgbImage, meter: &mut Meter) -> Result<FakeImage, FakeError> {
        meter.vision(1);
        Ok(FakeImage {
            image: image.clone(),
            ..Default::default()
        })
    }

    fn image<'a>(&self, prepared: &'a FakeImage) -> &'a RgbImage {
        &prepared.image
    }

    fn region(&self, prepared: &FakeImage) -> Rect {
        Rect::whole(prepared.image.width(), prepared.image.height())
    }

    fn answer(
        &self,
        prepared: &mut FakeImage,
        question: &str,
        _max_new_tokens: usize,
        probe: Option<AttentionRequest>,
        meter: &mut Meter,
    ) -> Result<(Answer, Option<AttentionSignal>), FakeError> {
        meter.llm(10, 4);
        let signal = match probe {
            Some(_) => {
                prepared.calls.push((format!("probe:{question}"), false));
                Some(self.signal(question, false)?)
            }
            None => None,
        };
        Ok((answer("a cat"), signal))
    }

    fn answer_with_crop(
        &self,
        _prepared: &mut FakeImage,
        crop: &RgbImage,
        _question: &str,
        _max_new_tokens: usize,
        meter: &mut Meter,
    ) -> Result<Answer, FakeError> {
        meter.vision(1);
        meter.llm(6, 4);
        Ok(answer(&format!("crop {}x{}", crop.width(), crop.height())))
    }
}

impl AttentionSource for Fake {
    fn attention(
        &self,
        prepared: &mut FakeImage,
        question: &str,
        request: AttentionRequest,
        meter: &mut Meter,
    ) -> Result<AttentionSignal, FakeError> {
        assert_eq!(request.connector_layer.is_some(), self.connector);
        meter.llm(3, request.layer + 1);
        prepared
            .calls
            .push((question.to_string(), request.with_grad));
        self.signal(question, request.with_grad)
    }
}

impl GradientSource for Fake {
    fn pixel_gradient(
        &self,
        prepared: &mut FakeImage,
        question: &str,
        _meter: &mut Meter,
    ) -> Result<Vec<f32>, FakeError> {
        prepared.gradient_calls.push(question.to_string());
        let scale = if question == GENERAL_QUESTION {
            2.0
        } else {
            1.0
        };
        Ok((0..16).map(|i| (i + 1) as f32 / scale).collect())
    }
}

fn picture(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 37 % 256) as u8,
            (y * 91 % 256) as u8,
            ((x ^ y) * 13) as u8,
        ])
    })
}

#[test]
fn rel_att_divides_by_the_cached_general_map_and_reuses_the_probe() {
    let pipeline = ViCrop::new(Fake::new(false));
    let mut prepared = pipeline.prepare(&picture(40, 40)).expect("prepare");
    let q = Question::new("Where is the cat?", Method::RelAtt);
    let out = pipeline.run(&mut prepared, &q).expect("run");
    assert_eq!(out.map.values(), &[0.5, 1.0, 1.5, 1.0]);
    assert_eq!(out.layer, 2);
    assert_eq!(out.connector_layer, None);
    // The question's row came with the answer; only the general prompt was run.
    let calls: Vec<_> = prepared.state().calls.drain(..).collect();
    assert_eq!(
        calls,
        vec![
            ("probe:Where is the cat?".to_string(), false),
            (GENERAL_QUESTION.to_string(), false),
        ]
    );
    // Again: the general map is cached, the question's too.
    let again = pipeline.run(&mut prepared, &q).expect("run");
    assert_eq!(again.map, out.map);
    assert_eq!(prepared.state().calls.len(), 1, "only the probe");
    // A short map question is not the probed one: it runs its own pass.
    let mut short = q.clone();
    short.short = Some(GENERAL_QUESTION.into());
    pipeline.run(&mut prepared, &short).expect("run");
    // Cost: prepare (1 image) charged to the first run; answer 10 positions x 4/4 layers,
    // the general pass 3 positions x 3/4 layers, crop answer 6 + 1 image.
    assert_eq!(out.cost.vision_images, 2);
    assert_eq!(out.cost.llm_positions, (10 * 4 + 3 * 3 + 6 * 4) / 4);
    assert_eq!(
        out.reference_cost,
        reference_cost(&RunShape {
            method: Method::RelAtt,
            question_len: 17 + 4,
            map_question_len: 17 + 4,
            general_len: GENERAL_QUESTION.len() + 4,
            final_len: 17 + 8,
            map_images: 1,
            baseline_steps: 3,
            crop_steps: 3,
        })
    );
}

#[test]
fn grad_att_through_a_connector() {
    let pipeline = ViCrop::new(Fake::new(true));
    let mut prepared = pipeline.prepare(&picture(40, 40)).expect("prepare");
    let out = pipeline
        .run(
            &mut prepared,
            &Question::new("Where is the cat?", Method::GradAtt),
        )
        .expect("run");
    // Gradients of ones: the same as plain attention, [0.8, 0.2] @ connector.
    assert_eq!(out.map.values(), &[0.8, 0.0, 0.1, 0.1]);
    assert_eq!(out.connector_layer, Some(1));
    assert_eq!(
        prepared.state().calls,
        vec![("Where is the cat?".to_string(), true)]
    );
    // rel-att through the connector: [0.8, 0, 0.1, 0.1] / [0.5, 0, 0.25, 0.25].
    let out = pipeline
        .run(
            &mut prepared,
            &Question::new("Where is the cat?", Method::RelAtt),
        )
        .expect("run");
    let v = out.map.values();
    assert_eq!((v[0], v[2], v[3]), (1.6, 0.4, 0.4));
    assert!(v[1].is_nan(), "0 / 0 stays NaN as in the reference");
}

#[test]
fn pure_grad_caches_the_general_gradient_and_the_mask() {
    let pipeline = ViCrop::new(Fake::new(false));
    // A flat image: no high-frequency energy above the median, so the mask is empty.
    let mut prepared = pipeline
        .prepare(&RgbImage::from_pixel(40, 40, Rgb([9, 9, 9])))
        .expect("prepare");
    let q = Question::new("Where is the cat?", Method::PureGrad);
    let out = pipeline.run(&mut prepared, &q).expect("run");
    assert_eq!(out.map.values(), &[0.0; 4]);
    pipeline.run(&mut prepared, &q).expect("run");
    assert_eq!(
        prepared.state().gradient_calls,
        vec![
            "Where is the cat?".to_string(),
            GENERAL_QUESTION.to_string(),
            "Where is the cat?".to_string(),
        ]
    );
}

#[test]
fn bad_layers_and_token_budgets_are_errors() {
    let pipeline = ViCrop::new(Fake::new(true));
    let mut prepared = pipeline.prepare(&picture(40, 40)).expect("prepare");
    let mut q = Question::new("Where is the cat?", Method::RelAtt);
    q.layer = Some(4);
    let e = pipeline.run(&mut prepared, &q).expect_err("layer");
    assert!(e.to_string().contains("layer 4 is out of range"), "{e}");
    q.layer = None;
    q.connector_layer = Some(3);
    let e = pipeline.run(&mut prepared, &q).expect_err("connector");
    assert!(e.to_string().contains("layer 3 is out of range"), "{e}");
    q.connector_layer = None;
    let mut greedy = ViCrop::new(Fake::new(true));
    greedy.max_new_tokens = 100_000;
    let mut prepared = greedy.prepare(&picture(40, 40)).expect("prepare");
    let e = greedy.run(&mut prepared, &q).expect_err("budget");
    assert!(e.to_string().contains("max_new_tokens 100000"), "{e}");
}

#[test]
fn high_res_stitches_tiles_with_their_own_caches() {
    let mut pipeline = ViCrop::new(Fake::new(false));
    pipeline.tile_threshold = 20;
    let mut prepared = pipeline.prepare(&picture(80, 40)).expect("prepare");
    let mut q = Question::new("Where is the cat?", Method::RelAtt);
    q.high_res = true;
    let out = pipeline.run(&mut prepared, &q).expect("run");
    let grid = out.tiles.expect("tiles");
    // 2 rows of tiles, 4 columns: an 4x8 map of the tile map repeated.
    assert_eq!(grid.len(), 8);
    assert_eq!((out.map.rows(), out.map.cols()), (4, 8));
    assert_eq!(out.map.get(0, 0), 0.5);
    assert_eq!(out.map.get(3, 7), 1.0);
}

#[test]
fn one_pipeline_serves_many_threads() {
    let pipeline = ViCrop::new(Fake::new(true));
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let pipeline = &pipeline;
                s.spawn(move || {
                    let mut prepared = pipeline.prepare(&picture(40 + i, 40)).expect("prepare");
                    pipeline
                        .run(
                            &mut prepared,
                            &Question::new("Where is the cat?", Method::RelAtt),
                        )
                        .expect("run")
                        .map
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let bits =
        |m: &vicrop_core::SaliencyMap| m.values().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(outcomes.windows(2).all(|w| bits(&w[0]) == bits(&w[1])));
}

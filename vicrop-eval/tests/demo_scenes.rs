//! The paper's two claims on the trained demo checkpoint (tests/fixtures/llava-demo), on the
//! bundled scene subset (tests/fixtures/scenes, tools/demo_scenes.py with a seed not used in
//! training): the model cannot read a small sign in the whole image but reads it in a crop
//! around it, and its gradient-weighted attention finds the sign. Plus the README's demo: a
//! wrong plain answer that ViCrop (grad-att) corrects. Weights and images are fixed, so this
//! is deterministic; the thresholds sit below the counts measured when the checkpoint was
//! made (docs/demo.md), not at them.
//!
//! Not asserted, because it does not hold for this checkpoint: that ViCrop beats the plain
//! answer over the whole subset. For number signs the first answer token is the bare "▁"
//! (LLaMA splits " 42" into "▁", "4", "2"), which the model predicts without the image, so
//! the maps read at that position do not point at the sign (docs/demo.md).

mod common;

use common::fixture;
use vicrop_core::pipeline::{Method, ViCrop};
use vicrop_eval::scenes::{evaluate_set, oracle_box, summarize, ScenePlan, SceneSet};
use vicrop_models::backend::Cpu;
use vicrop_models::{LlavaModel, LlavaVicrop, LoadOptions};

/// Hard items the oracle crop must answer right beyond the plain answer (measured: 15 of 30
/// against 0).
const MIN_ORACLE_GAIN: usize = 10;
/// Word-sign items on which grad-att's map must peak on the sign (measured: 6 of 8).
const MIN_WORD_PEAKS: usize = 5;
/// The README's demo item: "What does the sign say?" (ZOO), plain answer BANK.
const DEMO_ITEM: u64 = 15;

#[test]
fn the_crop_reads_what_the_whole_image_cannot_and_grad_att_finds_the_sign() {
    let set = SceneSet::load(&fixture("scenes")).expect("scene set");
    let model = LlavaModel::<Cpu>::load(
        &fixture("llava-demo"),
        &Default::default(),
        LoadOptions::default(),
    )
    .expect("model");
    let pipeline = ViCrop::new(LlavaVicrop::new(model));
    let plan = ScenePlan {
        runs: vec![(Method::GradAtt, false)],
        both_placements: false,
    };
    let results = evaluate_set(&pipeline, &set, &plan, None, None, None).expect("evaluate");
    print!(
        "{}",
        vicrop_eval::scenes::summary_markdown(&summarize(&results))
    );
    let hard: Vec<_> = results.iter().filter(|r| r.kind == "hard").collect();
    let plain = hard.iter().filter(|r| r.plain.correct).count();
    let oracle = hard.iter().filter(|r| r.oracle.correct).count();
    println!(
        "{} hard items: plain {plain}, oracle crop {oracle}",
        hard.len()
    );
    assert!(
        oracle >= plain + MIN_ORACLE_GAIN,
        "oracle crop {oracle}, plain {plain} of {} hard items",
        hard.len()
    );
    let words: Vec<_> = results
        .iter()
        .filter(|r| {
            set.items
                .iter()
                .any(|i| i.id == r.id && i.content == "word")
        })
        .collect();
    let peaks = words
        .iter()
        .filter(|r| r.runs[0].peak_in_target == Some(true))
        .count();
    println!(
        "grad-att peaks on the sign: {peaks} of {} word items",
        words.len()
    );
    assert!(
        peaks >= MIN_WORD_PEAKS,
        "grad-att peaked on the sign in {peaks} of {} word items",
        words.len()
    );
    let demo = results
        .iter()
        .find(|r| r.id == DEMO_ITEM)
        .expect("demo item");
    assert!(
        !demo.plain.correct && demo.runs[0].answer.correct,
        "demo item: plain {:?}, ViCrop grad-att {:?}",
        demo.plain.text,
        demo.runs[0].answer.text
    );
}

#[test]
fn oracle_box_is_the_centred_square_inside_the_image() {
    // centred on the target
    let b = oracle_box([500, 500, 540, 520], (1000, 800), 224);
    assert_eq!(b.to_array(), [408, 398, 632, 622]);
    // pushed inside at the edges
    let b = oracle_box([0, 780, 30, 800], (1000, 800), 224);
    assert_eq!(b.to_array(), [0, 576, 224, 800]);
    // a target larger than the side is covered; a small image is the whole image
    let b = oracle_box([100, 100, 400, 150], (1000, 800), 224);
    assert_eq!(b.to_array(), [100, 13, 400, 237]);
    let b = oracle_box([10, 10, 20, 20], (100, 80), 224);
    assert_eq!(b.to_array(), [0, 0, 100, 80]);
}

#[test]
fn a_malformed_scene_line_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("items.jsonl");
    let good = r#"{"id":0,"image":"a.png","width":100,"height":100,"kind":"hard","content":"number","question":"What is the number on the sign?","answers":["42"],"bbox":[1,1,20,20]}"#;
    let outside = good.replace("[1,1,20,20]", "[1,1,200,20]");
    std::fs::write(&path, format!("{good}\n{outside}\n")).expect("write");
    let err = format!("{:#}", SceneSet::load(&path).expect_err("bad bbox"));
    assert!(
        err.contains("items.jsonl:2") && err.contains("outside"),
        "{err}"
    );
    std::fs::write(&path, format!("{good}\n{{\"id\": 1}}\n")).expect("write");
    let err = format!("{:#}", SceneSet::load(&path).expect_err("missing fields"));
    assert!(err.contains("items.jsonl:2"), "{err}");
}

/// The README's demo in half precision on the CPU (burn-flex stores f16 and bf16): the same
/// plain answer, box and crop answer as in f32. The maps differ by rounding only; their
/// largest difference is printed (measured: 1.3e-3 of the maximum in f16, 2.3e-2 in bf16).
#[cfg(feature = "flex")]
#[test]
fn the_demo_gives_the_same_box_and_answers_in_f16_and_bf16() {
    use burn::tensor::DType;
    use vicrop_core::{load_image, LoadLimits, Question};

    let image =
        load_image(&fixture("scenes/images/0015.png"), &LoadLimits::default()).expect("image");
    let question = Question::new("What does the sign say?", Method::GradAtt);
    let run = |dtype| {
        let model = LlavaModel::<Cpu>::load(
            &fixture("llava-demo"),
            &Default::default(),
            LoadOptions::with_dtype(dtype),
        )
        .expect("model");
        let pipeline = ViCrop::new(LlavaVicrop::new(model));
        let mut prepared = pipeline.prepare(&image).expect("prepare");
        pipeline.run(&mut prepared, &question).expect("run")
    };
    let full = run(DType::F32);
    let peak = full.map.values().iter().fold(0f32, |m, v| m.max(v.abs()));
    for dtype in [DType::F16, DType::BF16] {
        let half = run(dtype);
        let diff = half
            .map
            .values()
            .iter()
            .zip(full.map.values())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "{dtype:?}: map max difference {:.2e} of the maximum",
            diff / peak
        );
        assert_eq!(half.answer.text, full.answer.text, "{dtype:?} plain answer");
        assert_eq!(half.bbox, full.bbox, "{dtype:?} box");
        assert_eq!(
            half.crop_answer.text, full.crop_answer.text,
            "{dtype:?} crop answer"
        );
    }
}

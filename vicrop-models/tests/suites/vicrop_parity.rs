//! ViCrop parity with the transformers pipelines of `tools/gen_vicrop_goldens.py` (LLaVA) and
//! `tools/gen_vicrop_goldens_blip.py` (InstructBLIP) on the tiny checkpoints: maps within 1e-4
//! relative (to the map's largest magnitude), identical boxes, identical baseline and crop
//! answers; for rel-att, grad-att and pure-grad, a non-square image, portrait images
//! (pure-grad) and high-resolution tiling.

use crate::common::TestBackend as B;
use crate::common::{fixture, ids, image};
use vicrop_core::{
    load_image, AttentionSource, GradientSource, LoadLimits, Method, Question, ViCrop,
};
use vicrop_models::{InstructBlipModel, InstructBlipVicrop, LlavaModel, LlavaVicrop, LoadOptions};

const REL_TOL: f64 = 1e-4;

/// What a golden case exercises beyond the method: the three LLaVA-tiny tests below split
/// `goldens/vicrop.json` by it, so that CI's run on lavapipe (a CPU emulating a GPU) can leave out
/// the geometry-only ones (their kernels are those of the plain cases, and high-res runs there
/// through the demo model's cases).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CaseKind {
    /// One image, the model's own input geometry.
    Plain,
    /// `high_res`: the image tiled, one map per tile.
    HighRes,
    /// The portrait images (`chelsea_portrait`, `chelsea_tower`): pure-grad's padding geometry.
    Portrait,
}

fn case_kind(case: &serde_json::Value) -> CaseKind {
    let image = case["image"].as_str().expect("image");
    if case["high_res"].as_bool().expect("high_res") {
        CaseKind::HighRes
    } else if matches!(image, "chelsea_portrait" | "chelsea_tower") {
        CaseKind::Portrait
    } else {
        CaseKind::Plain
    }
}

/// Runs the cases of a golden file that `kinds` names through `ViCrop` on the checkpoints
/// `make` loads (at least one case must match).
fn check_goldens<M: AttentionSource + GradientSource>(
    golden_file: &str,
    kinds: &[CaseKind],
    make: impl Fn(&str) -> M,
) where
    M::Error: std::fmt::Debug,
{
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(golden_file)).expect("golden"))
            .expect("json");
    let max_new = golden["max_new_tokens"].as_u64().expect("max") as usize;
    let mut pipelines = std::collections::HashMap::new();
    let cases: Vec<&serde_json::Value> = golden["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|case| kinds.contains(&case_kind(case)))
        .collect();
    assert!(
        !cases.is_empty(),
        "{golden_file}: no case of kinds {kinds:?}"
    );
    for case in cases {
        let name = case["checkpoint"].as_str().expect("checkpoint");
        let pipeline = pipelines.entry(name.to_string()).or_insert_with(|| {
            let mut p = ViCrop::new(make(name));
            p.max_new_tokens = max_new;
            p
        });
        let stem = case["image"].as_str().expect("image");
        let img = image(stem);
        let method = Method::parse(case["method"].as_str().expect("method")).expect("method");
        let mut q = Question::new(case["question"].as_str().expect("q"), method);
        q.high_res = case["high_res"].as_bool().expect("bool");
        let label = format!("{name} {stem} {} high_res={}", method.name(), q.high_res);

        let mut prepared = pipeline.prepare(&img).expect("prepare");
        let out = pipeline.run(&mut prepared, &q).expect("run");

        let layer = case.get("layer").or_else(|| case.get("lm_layer"));
        assert_eq!(
            out.layer as u64,
            layer.and_then(|l| l.as_u64()).expect("layer"),
            "{label}: layer"
        );
        assert_eq!(
            out.connector_layer.map(|c| c as u64),
            case.get("cross_attn_index").and_then(|c| c.as_u64()),
            "{label}: connector layer"
        );
        assert_eq!(
            out.answer.token_ids,
            ids(&case["baseline"]["ids"]),
            "{label}: baseline"
        );
        assert_eq!(
            out.answer.text,
            case["baseline"]["text"].as_str().expect("text").trim(),
            "{label}"
        );

        let rows: Vec<Vec<f64>> = case["map"]
            .as_array()
            .expect("map")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        assert_eq!(
            (out.map.rows(), out.map.cols()),
            (rows.len(), rows[0].len()),
            "{label}: map shape"
        );
        let scale = rows.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
        let mut worst = 0f64;
        for (r, row) in rows.iter().enumerate() {
            for (c, &g) in row.iter().enumerate() {
                let ours = f64::from(out.map.get(r, c));
                worst = worst.max((ours - g).abs() / scale);
            }
        }
        println!(
            "{label}: map max relative error {worst:.2e}, bbox {:?}",
            out.bbox.to_array()
        );
        assert!(worst <= REL_TOL, "{label}: map error {worst}");

        let bbox: Vec<u32> = ids(&case["bbox"]);
        assert_eq!(out.bbox.to_array().to_vec(), bbox, "{label}: bbox");
        assert_eq!(
            out.crop_answer.token_ids,
            ids(&case["crop"]["ids"]),
            "{label}: crop answer"
        );
        assert_eq!(
            out.crop_answer.text,
            case["crop"]["text"].as_str().expect("text").trim(),
            "{label}"
        );
        println!(
            "{label}: LLM positions {} (reference {}), images encoded {} (reference {})",
            out.cost.llm_positions,
            out.reference_cost.llm_positions,
            out.cost.vision_images,
            out.reference_cost.vision_images
        );
    }
}

/// The LLaVA fixture checkpoint `name`, on the CPU.
fn llava(name: &str) -> LlavaModel<B> {
    LlavaModel::<B>::load(&fixture(name), &Default::default(), LoadOptions::default())
        .expect("model")
}

const ALL_KINDS: [CaseKind; 3] = [CaseKind::Plain, CaseKind::HighRes, CaseKind::Portrait];

/// The cases of one kind in `goldens/vicrop.json`, on the two LLaVA-tiny checkpoints.
fn check_llava_tiny(kind: CaseKind) {
    check_goldens("goldens/vicrop.json", &[kind], |name| {
        LlavaVicrop::new(llava(name))
    });
}

#[test]
fn vicrop_matches_the_transformers_pipeline() {
    check_llava_tiny(CaseKind::Plain);
}

#[test]
fn vicrop_high_res_matches_the_transformers_pipeline() {
    check_llava_tiny(CaseKind::HighRes);
}

#[test]
fn vicrop_portraits_match_the_transformers_pipeline() {
    check_llava_tiny(CaseKind::Portrait);
}

/// The trained demo checkpoint (tools/train_demo_llava.py): the same pipeline checks on scene
/// images, where margins are those of a trained model.
#[test]
fn demo_vicrop_matches_the_transformers_pipeline() {
    check_goldens("goldens/vicrop-demo.json", &ALL_KINDS, |name| {
        LlavaVicrop::new(llava(name))
    });
}

/// Greedy ids of the demo checkpoint on every bundled scene, with one image and with the
/// oracle crop, against transformers (tools/gen_demo_goldens.py).
#[test]
fn demo_answers_match_transformers() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("goldens/vicrop-demo.json")).expect("golden"),
    )
    .expect("json");
    let max_new = golden["max_new_tokens"].as_u64().expect("max") as usize;
    let model = llava(golden["checkpoint"].as_str().expect("checkpoint"));
    let answers = golden["answers"].as_array().expect("answers");
    assert!(
        answers.len() >= 30,
        "the golden holds {} items",
        answers.len()
    );
    for a in answers {
        let path = fixture(&format!("scenes/{}", a["image"].as_str().expect("image")));
        let img = load_image(&path, &LoadLimits::default()).expect("image");
        let q = a["question"].as_str().expect("question");
        let b = ids(&a["oracle_bbox"]);
        let crop = image::imageops::crop_imm(&img, b[0], b[1], b[2] - b[0], b[3] - b[1]).to_image();
        let plain = model.answer(&[&img], q, max_new).expect("answer");
        assert_eq!(
            plain.token_ids,
            ids(&a["plain"]["ids"]),
            "{}: plain answer",
            path.display()
        );
        let with_crop = model.answer(&[&img, &crop], q, max_new).expect("answer");
        assert_eq!(
            with_crop.token_ids,
            ids(&a["oracle"]["ids"]),
            "{}: answer with the oracle crop",
            path.display()
        );
    }
}

#[test]
fn instructblip_vicrop_matches_the_transformers_pipeline() {
    check_goldens("goldens/vicrop-instructblip.json", &ALL_KINDS, |name| {
        let model = InstructBlipModel::<B>::load(
            &fixture(name),
            &Default::default(),
            LoadOptions::default(),
        )
        .expect("model");
        InstructBlipVicrop::new(model)
    });
}

#[test]
fn a_prepared_image_serves_many_questions_with_the_same_maps() {
    let pipeline = ViCrop::new(LlavaVicrop::new(llava("llava-tiny-b")));
    let img = image("chelsea");
    let questions = ["What is the number on the bus?", "What color is the cat?"];
    let mut shared = pipeline.prepare(&img).expect("prepare");
    let mut costs = Vec::new();
    for q in questions {
        for method in [Method::RelAtt, Method::GradAtt] {
            let question = Question::new(q, method);
            let reused = pipeline.run(&mut shared, &question).expect("run");
            let mut fresh_state = pipeline.prepare(&img).expect("prepare");
            let fresh = pipeline.run(&mut fresh_state, &question).expect("run");
            assert_eq!(
                reused.map,
                fresh.map,
                "{q} {}: map differs when reusing the image",
                method.name()
            );
            assert_eq!(reused.bbox, fresh.bbox);
            assert_eq!(reused.answer, fresh.answer);
            assert_eq!(reused.crop_answer, fresh.crop_answer);
            costs.push((reused.cost.llm_positions, fresh.cost.llm_positions));
        }
    }
    // The first run pays for the prefix; later ones reuse it (and the general map).
    assert_eq!(costs[0].0, costs[0].1);
    for (reused, fresh) in &costs[1..] {
        assert!(reused < fresh, "{costs:?}");
    }
}

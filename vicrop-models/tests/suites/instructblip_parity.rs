//! Parity of InstructBLIP-Vicuna with Hugging Face transformers 4.47.1 (f32, eager attention)
//! on the two tiny random checkpoints written by `tools/make_instructblip_fixtures.py`
//! (a: the legacy hub layout, bf16, sharded; b: the `image_token_index` layout, f16, one file).
//!
//! Tolerances: token ids (LLM and Q-Former), resized uint8 pixels, pixel values and greedy
//! continuations must be identical; vision states, Q-Former outputs, projections, hidden
//! states, logits, the LLM attention row and the Q-Former cross-attention within 1e-4
//! absolute. The attention signals (with and without gradients) are checked against the
//! ViCrop goldens' maps (`goldens/vicrop-instructblip.json`).

use std::collections::HashMap;

use crate::common::TestBackend as B;
use crate::common::{
    check_pixel_digests, copy_fixture, fixture, ids, image, max_abs_diff, read_goldens, to_vec,
    Golden,
};
use vicrop_models::instructblip::{AttentionSignals, InstructBlipModel, SignalProbe};
use vicrop_models::llama::Probe;
use vicrop_models::qformer::CrossProbe;
use vicrop_models::{LoadOptions, ModelError};

const TOL: f32 = 1e-4;

fn close(what: &str, ours: &[f32], golden: &[f32]) {
    let (diff, mag) = max_abs_diff(ours, golden);
    println!("{what}: max |diff| = {diff:.3e} (max |ref| = {mag:.3})");
    assert!(diff <= TOL, "{what}: max |diff| {diff} > {TOL}");
}

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(rel)).expect("read")).expect("json")
}

fn load(name: &str) -> InstructBlipModel<B> {
    InstructBlipModel::<B>::load(&fixture(name), &Default::default(), LoadOptions::default())
        .expect("model loads")
}

fn check_tokenizers(name: &str, model: &InstructBlipModel<B>, meta: &serde_json::Value) {
    for case in meta["llm_tokenizer"]["encode"].as_array().expect("encode") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(
            model.tokenizer().encode(text, true).expect("encode"),
            ids(&case["ids"]),
            "{name}: LLM ids of {text:?}"
        );
    }
    for case in meta["llm_tokenizer"]["decode"].as_array().expect("decode") {
        assert_eq!(
            model
                .tokenizer()
                .decode(&ids(&case["ids"]))
                .expect("decode"),
            case["text"].as_str().expect("text"),
            "{name}: LLM decode"
        );
    }
    for case in meta["qformer_tokenizer"].as_array().expect("qformer") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(
            model
                .qformer_tokenizer()
                .encode(text, true)
                .expect("encode"),
            ids(&case["ids"]),
            "{name}: Q-Former ids of {text:?}"
        );
    }
}

fn check_images(name: &str, model: &InstructBlipModel<B>, meta: &serde_json::Value) {
    let goldens = read_goldens(&fixture(&format!("goldens/{name}.safetensors")));
    let proc = model.processor();
    let mut n = 0;
    for (stem, info) in meta["images"].as_object().expect("images") {
        let img = image(stem);
        let ours = proc.resize_and_crop(&img);
        if let Some(key) = info["resized_u8"].as_str() {
            let g: &Golden = &goldens[key];
            assert_eq!(
                vec![ours.height() as usize, ours.width() as usize, 3],
                g.shape
            );
            assert!(ours.as_raw() == &g.u8, "{name} {stem}: uint8 pixels differ");
        }
        let (values, _) = proc.preprocess(&img);
        check_pixel_digests(&format!("{name} {stem}"), ours.as_raw(), &values, info);
        n += 1;
    }
    assert!(n >= 8, "{name}: only {n} images checked");
}

fn check_config(name: &str) {
    let goldens = read_goldens(&fixture(&format!("goldens/{name}.safetensors")));
    let meta = json(&format!("goldens/{name}.json"));
    let model = load(name);
    assert_eq!(
        model.eos_ids(),
        [meta["ids"]["generation_stops_on"].as_u64().expect("eos") as u32]
    );
    check_tokenizers(name, &model, &meta);
    check_images(name, &model, &meta);

    let net = model.net();
    let llm = net.llm();
    let nq = model.num_query_tokens();
    assert_eq!(nq as u64, meta["num_query_tokens"].as_u64().expect("nq"));
    assert_eq!(model.grid() as u64, meta["grid"].as_u64().expect("grid"));
    let layer = meta["lm_layer"].as_u64().expect("layer") as usize;
    let kx = meta["cross_attn_index"].as_u64().expect("kx") as usize;
    let image_id = meta["ids"]["image"].as_u64().expect("image id") as u32;
    for (case, info) in meta["cases"].as_object().expect("cases") {
        let stems: Vec<&str> = info["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|s| s.as_str().expect("stem"))
            .collect();
        let images: Vec<image::RgbImage> = stems.iter().map(|s| image(s)).collect();
        let refs: Vec<&image::RgbImage> = images.iter().collect();
        let question = info["question"].as_str().expect("question");
        let g = |k: &str| -> &Golden {
            goldens
                .get(&format!("{case}/{k}"))
                .unwrap_or_else(|| panic!("{case}/{k}"))
        };
        let what = |k: &str| format!("{name} {case} {k}");

        // Token ids: the golden input_ids may carry the <image> placeholders (layout b).
        let prompt_ids = model.prompt_ids(question).expect("ids");
        let golden_ids: Vec<u32> = g("input_ids").i64.iter().map(|&i| i as u32).collect();
        let text_ids: Vec<u32> = golden_ids
            .iter()
            .copied()
            .filter(|&i| i != image_id)
            .collect();
        assert_eq!(prompt_ids, text_ids, "{name} {case}: LLM prompt ids");
        let qf_ids = model.qformer_ids(question).expect("qformer ids");
        let golden_qf: Vec<u32> = g("qformer_input_ids")
            .i64
            .iter()
            .map(|&i| i as u32)
            .collect();
        assert_eq!(qf_ids, golden_qf, "{name} {case}: Q-Former ids");
        let seq_len = info["seq_len"].as_u64().expect("seq_len") as usize;
        assert_eq!(
            model.llm_seq_len(question, images.len()).expect("len"),
            seq_len
        );

        let states = model.encode_images(&refs).expect("vision");
        close(
            &what("vision_last_hidden"),
            &to_vec(states.clone()),
            &g("vision_last_hidden").f32,
        );
        let probe = CrossProbe {
            index: kx,
            grad_leaf: false,
        };
        let (queries, cross) = net
            .query_outputs(states.clone(), &qf_ids, Some(probe))
            .expect("qformer");
        close(
            &what("qformer_query_output"),
            &to_vec(queries.clone()),
            &g("qformer_query_output").f32,
        );
        close(
            &what("cross_attn"),
            &to_vec(cross.expect("cross probe")),
            &g("cross_attn").f32,
        );
        let projected = net.project(queries);
        close(
            &what("projected"),
            &to_vec(projected.clone()),
            &g("projected").f32,
        );
        // The same through the public helper (no probe).
        let (projected2, none) = model
            .project_queries(states.clone(), question, None)
            .expect("project");
        assert!(none.is_none());
        close(
            &what("projected (public)"),
            &to_vec(projected2),
            &g("projected").f32,
        );

        let embeds = model.embed(projected, question).expect("embed");
        assert_eq!(embeds.dims()[1], seq_len);
        let mut cache = llm.new_cache();
        let out = llm
            .forward(embeds, &mut cache, Some(Probe::through(layer)))
            .expect("forward");
        let hidden = out.hidden.expect("hidden");
        let t = hidden.dims()[0];
        let last = hidden.narrow(0, t - 1, 1);
        close(
            &what("hidden_last"),
            &to_vec(last.clone()),
            &g("hidden_last").f32,
        );
        close(
            &what("logits_last"),
            &to_vec(llm.logits(last)),
            &g("logits_last").f32,
        );
        close(
            &what("lm_attn_row"),
            &to_vec(out.probe.expect("probe")),
            &g("lm_attn_row").f32,
        );

        // Greedy continuation through the public API, and again with the probes on.
        let max_new = meta["max_new_tokens"].as_u64().expect("max new") as usize;
        let answer = model.answer(&refs, question, max_new).expect("answer");
        let golden_gen: Vec<u32> = g("generated_ids").i64.iter().map(|&i| i as u32).collect();
        assert_eq!(
            answer.token_ids, golden_gen,
            "{name} {case}: greedy continuation"
        );
        assert_eq!(
            answer.text,
            info["answer"].as_str().expect("answer").trim(),
            "{name} {case}: text"
        );
        let (generation, signals) = model
            .generate_probed(
                states.clone(),
                question,
                max_new,
                Some(SignalProbe {
                    llm_layer: layer,
                    cross_index: kx,
                }),
            )
            .expect("probed generation");
        assert_eq!(generation.token_ids, golden_gen);
        assert_eq!(
            generation.stopped_at_eos,
            info["stopped_at_eos"].as_bool().expect("eos")
        );
        let signals = signals.expect("signals");
        check_signals(
            &what("generate_probed signals"),
            &signals,
            &goldens,
            case,
            nq,
            seq_len,
        );

        // The attention signals of a one-image prompt (the LLM stops at the probed layer).
        if images.len() == 1 {
            let s = model
                .attention_signals(states, question, layer, kx, false)
                .expect("signals");
            assert!(s.llm_row_grad.is_none() && s.cross_grad.is_none());
            check_signals(&what("attention_signals"), &s, &goldens, case, nq, seq_len);
        }
    }
}

/// The signals are the golden LLM row at the first image's query positions and the golden
/// cross-attention of the first image without the CLS column.
fn check_signals(
    what: &str,
    s: &AttentionSignals,
    goldens: &HashMap<String, Golden>,
    case: &str,
    nq: usize,
    seq_len: usize,
) {
    let g = |k: &str| &goldens[&format!("{case}/{k}")];
    let row = &g("lm_attn_row").f32;
    let heads = row.len() / seq_len;
    assert_eq!((s.llm_heads, s.n_queries), (heads, nq));
    let want_row: Vec<f32> = (0..heads)
        .flat_map(|h| row[h * seq_len..h * seq_len + nq].to_vec())
        .collect();
    close(&format!("{what} llm_row"), &s.llm_row, &want_row);
    let cross = g("cross_attn");
    let [_, ch, _, tokens] = cross.shape[..] else {
        panic!("cross_attn shape {:?}", cross.shape)
    };
    assert_eq!((s.cross_heads, s.patches), (ch, tokens - 1));
    let want_cross: Vec<f32> = (0..ch * nq)
        .flat_map(|r| cross.f32[r * tokens + 1..(r + 1) * tokens].to_vec())
        .collect();
    close(&format!("{what} cross"), &s.cross, &want_cross);
}

#[test]
fn parity_instructblip_tiny_a() {
    check_config("instructblip-tiny-a");
}

#[test]
fn parity_instructblip_tiny_b() {
    check_config("instructblip-tiny-b");
}

/// The input-gradient signal has one finite, non-negative value per pixel, not all zero.
#[test]
fn pixel_gradient_norm_shape() {
    let model = load("instructblip-tiny-b");
    let img = image("chelsea");
    let g = model
        .pixel_grad_norm(&img, "What is the number on the bus?")
        .expect("gradient");
    let r = model.image_size();
    assert_eq!(g.len(), r * r);
    assert!(g.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(g.iter().any(|v| *v > 0.0));
}

#[test]
fn counts_for_cost_accounting() {
    let model = load("instructblip-tiny-a");
    let meta = json("goldens/instructblip-tiny-a.json");
    assert_eq!(
        model.num_cross_layers(),
        meta["qformer_cross_attention_layers"]
            .as_array()
            .expect("layers")
            .len()
    );
    assert_eq!(
        model.patch_size() as u64,
        meta["patch_size"].as_u64().expect("p")
    );
    assert_eq!(
        model.image_size() as u64,
        meta["image_size"].as_u64().expect("r")
    );
    assert_eq!(model.num_llm_layers(), 6);
    let err = model
        .attention_signals(
            model.encode_images(&[&image("small")]).expect("vision"),
            "What is in the cup?",
            0,
            model.num_cross_layers(),
            false,
        )
        .unwrap_err();
    assert!(err.to_string().contains("cross-attention index"), "{err}");
}

// ---- bad input

fn load_dir(dir: &std::path::Path) -> Result<InstructBlipModel<B>, ModelError> {
    InstructBlipModel::<B>::load(dir, &Default::default(), LoadOptions::default())
}

#[test]
fn missing_qformer_tokenizer_is_named() {
    // copy_fixture copies plain files only: the qformer_tokenizer/ folder is left behind.
    let dir = copy_fixture("instructblip-tiny-b");
    let err = load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("qformer_tokenizer"), "{err}");
}

#[test]
fn query_count_disagreeing_with_weights_is_named() {
    let dir = copy_fixture("instructblip-tiny-b");
    let src = fixture("instructblip-tiny-b/qformer_tokenizer");
    let dst = dir.path().join("qformer_tokenizer");
    std::fs::create_dir(&dst).expect("mkdir");
    for entry in std::fs::read_dir(&src).expect("read") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy");
    }
    // The untouched copy loads.
    load_dir(dir.path()).expect("copy loads");
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let n = cfg["num_query_tokens"].as_u64().expect("nq");
    cfg["num_query_tokens"] = serde_json::json!(n + 3);
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).expect("json")).expect("write");
    let err = load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Config { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("num_query_tokens") && msg.contains("query_tokens"),
        "{msg}"
    );
}

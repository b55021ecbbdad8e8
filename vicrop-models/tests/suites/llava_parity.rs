//! Parity with Hugging Face transformers 4.47.1 (f32, eager attention) on the two tiny
//! random checkpoints written by `tools/make_llava_fixtures.py`.
//!
//! Tolerances: token ids, resized uint8 pixels, pixel values and greedy continuations must be
//! identical; vision features, projector outputs, hidden states, logits and attention rows
//! within 1e-4 absolute (f32 arithmetic in a different order).

use crate::common::TestBackend as B;
use crate::common::{
    check_pixel_digests, fixture, ids, image, max_abs_diff, read_goldens, to_vec, Golden,
};
use vicrop_models::llama::Probe;
use vicrop_models::{LlavaModel, LoadOptions};

const TOL: f32 = 1e-4;

fn close(what: &str, ours: &[f32], golden: &Golden) {
    let (diff, mag) = max_abs_diff(ours, &golden.f32);
    println!("{what}: max |diff| = {diff:.3e} (max |ref| = {mag:.3})");
    assert!(diff <= TOL, "{what}: max |diff| {diff} > {TOL}");
}

fn check_config(name: &str) {
    let goldens = read_goldens(&fixture(&format!("goldens/{name}.safetensors")));
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("goldens/{name}.json"))).expect("json"),
    )
    .expect("json");
    let model = LlavaModel::<B>::load(&fixture(name), &Default::default(), LoadOptions::default())
        .expect("model loads");
    let proc = model.processor();

    // Image processor, every image: the resized uint8 pixels and the normalised f32 values
    // must hash to the digests transformers' output has (bit-identical), and where the uint8
    // image itself is stored, match it value by value.
    let mut n_images = 0;
    for (stem, info) in meta["images"].as_object().expect("images") {
        let img = image(stem);
        let ours = proc.resize_and_crop(&img);
        if let Some(g) = goldens.get(&format!("resized_u8/{stem}")) {
            assert_eq!(
                vec![ours.height() as usize, ours.width() as usize, 3],
                g.shape,
                "{name} {stem} size"
            );
            let mismatches = ours
                .as_raw()
                .iter()
                .zip(&g.u8)
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                mismatches, 0,
                "{name} {stem}: {mismatches} uint8 values differ"
            );
        }
        let (values, _) = proc.preprocess(&img);
        check_pixel_digests(&format!("{name} {stem}"), ours.as_raw(), &values, info);
        n_images += 1;
    }
    assert!(n_images >= 8, "{name}: only {n_images} images checked");

    let net = model.net();
    let llm = net.llm();
    for (case, info) in meta["cases"].as_object().expect("cases") {
        let stems: Vec<String> = info["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|s| s.as_str().expect("stem").to_string())
            .collect();
        let images: Vec<image::RgbImage> = stems.iter().map(|s| image(s)).collect();
        let refs: Vec<&image::RgbImage> = images.iter().collect();
        let question = info["question"].as_str().expect("question");
        let g = |k: &str| {
            goldens
                .get(&format!("{case}/{k}"))
                .unwrap_or_else(|| panic!("{case}/{k}"))
        };

        let ids = model.prompt_ids(question, images.len()).expect("ids");
        let golden_ids: Vec<u32> = g("input_ids").i64.iter().map(|&i| i as u32).collect();
        assert_eq!(ids, golden_ids, "{name} {case}: prompt ids");

        let pixels = model.pixel_values(&refs).expect("pixels");
        let feats = net.image_features(pixels.clone());
        close(
            &format!("{name} {case} image_features"),
            &to_vec(feats.clone()),
            g("image_features"),
        );
        let projected = net.encode_images(pixels);
        close(
            &format!("{name} {case} projected"),
            &to_vec(projected.clone()),
            g("projected"),
        );

        let embeds = net.embed(&ids, Some(projected)).expect("embed");
        let mut cache = llm.new_cache();
        let layer = info["attn_layer"].as_u64().expect("layer") as usize;
        let out = llm
            .forward(embeds.clone(), &mut cache, Some(Probe::through(layer)))
            .expect("forward");
        let hidden = out.hidden.expect("hidden");
        let t = hidden.dims()[0];
        close(
            &format!("{name} {case} hidden_last"),
            &to_vec(hidden.clone().narrow(0, t - 1, 1)),
            g("hidden_last"),
        );
        let logits_last = llm.logits(hidden.clone().narrow(0, t - 1, 1));
        close(
            &format!("{name} {case} logits_last"),
            &to_vec(logits_last),
            g("logits_last"),
        );
        let pos = info["first_text_position"].as_u64().expect("pos") as usize;
        if let Some(gh) = goldens.get(&format!("{case}/hidden_first_text")) {
            close(
                &format!("{name} {case} hidden_first_text"),
                &to_vec(hidden.clone().narrow(0, pos, 1)),
                gh,
            );
        }
        if let Some(gl) = goldens.get(&format!("{case}/logits_first_text")) {
            let l = llm.logits(hidden.narrow(0, pos, 1));
            close(&format!("{name} {case} logits_first_text"), &to_vec(l), gl);
        }
        close(
            &format!("{name} {case} attn_row"),
            &to_vec(out.probe.expect("probe")),
            g("attn_row"),
        );

        // The probe that stops early gives the same row.
        let mut short_cache = llm.new_cache();
        let early = model
            .attention_row(embeds, &mut short_cache, layer)
            .expect("row");
        close(
            &format!("{name} {case} attn_row (stop early)"),
            &to_vec(early),
            g("attn_row"),
        );

        // Greedy continuation, through the public API.
        let max_new = meta_max_new(info);
        let answer = model.answer(&refs, question, max_new).expect("answer");
        let golden_gen: Vec<u32> = g("generated_ids").i64.iter().map(|&i| i as u32).collect();
        assert_eq!(
            answer.token_ids, golden_gen,
            "{name} {case}: greedy continuation"
        );
        assert_eq!(
            answer.text,
            info["answer"].as_str().expect("answer"),
            "{name} {case}: text"
        );
    }
}

fn meta_max_new(info: &serde_json::Value) -> usize {
    let n = info["generated_ids"].as_array().expect("ids").len();
    if info["stopped_at_eos"].as_bool().unwrap_or(false) {
        n + 1
    } else {
        n
    }
}

#[test]
fn parity_llava_tiny_a() {
    check_config("llava-tiny-a");
}

#[test]
fn parity_llava_tiny_b() {
    check_config("llava-tiny-b");
}

#[test]
fn full_vocabulary_tokenizer() {
    let tok =
        vicrop_models::tokenizer::Tokenizer::from_file(&fixture("llava-tiny-a/tokenizer.json"))
            .expect("tokenizer");
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("goldens/tokenizer.json")).expect("read"),
    )
    .expect("json");
    for case in golden["encode"].as_array().expect("encode") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(
            tok.encode(text, true).expect("encode"),
            ids(&case["ids"]),
            "{text:?}"
        );
        assert_eq!(
            tok.encode(text, false).expect("encode"),
            ids(&case["ids_no_special"]),
            "{text:?}"
        );
    }
    for case in golden["decode"].as_array().expect("decode") {
        assert_eq!(
            tok.decode(&ids(&case["ids"])).expect("decode"),
            case["text"].as_str().expect("text")
        );
    }
    // The known SentencePiece ids from shared/assets/README.md.
    assert_eq!(
        tok.encode("What is the number on the bus?", false)
            .expect("encode"),
        [1724, 338, 278, 1353, 373, 278, 3593, 29973]
    );
}

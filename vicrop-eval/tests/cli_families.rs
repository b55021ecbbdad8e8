//! Both model families through the same commands: the loader picks the family from
//! `config.json`; InstructBLIP's `crop --json` matches its transformers goldens; and the
//! defects and bad input of issue 6 (a tokenizer without BOS, token budgets past the context,
//! an unknown architecture, `--qformer-layer`).

mod common;

use common::{assert_clean_failure, fixture, s, vicrop};

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|i| i.as_u64().expect("id"))
        .collect()
}

fn golden_case(checkpoint: &str, method: &str) -> serde_json::Value {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("goldens/vicrop-instructblip.json")).expect("read"),
    )
    .expect("json");
    golden["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["checkpoint"] == checkpoint && c["method"] == method && c["high_res"] == false)
        .cloned()
        .expect("case")
}

#[test]
fn instructblip_crop_json_matches_the_goldens() {
    for (checkpoint, method) in [
        ("instructblip-tiny-a", "rel-att"),
        ("instructblip-tiny-b", "grad-att"),
    ] {
        let case = golden_case(checkpoint, method);
        let image = fixture(&format!(
            "images/{}.png",
            case["image"].as_str().expect("image")
        ));
        let out = vicrop(&[
            "crop",
            "--model",
            s(&fixture(checkpoint)),
            "--image",
            s(&image),
            "--question",
            case["question"].as_str().expect("q"),
            "--method",
            method,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(json["layer"], case["lm_layer"], "{checkpoint}");
        assert_eq!(
            json["qformer_layer"], case["cross_attn_index"],
            "{checkpoint}"
        );
        assert_eq!(
            ids(&json["answer_token_ids"]),
            ids(&case["baseline"]["ids"])
        );
        assert_eq!(ids(&json["bbox"]), ids(&case["bbox"]), "{checkpoint}");
        assert_eq!(
            ids(&json["crop_answer_token_ids"]),
            ids(&case["crop"]["ids"])
        );
        let map = &json["map"];
        assert_eq!(map["rows"], case["map_shape"][0]);
        assert_eq!(map["cols"], case["map_shape"][1]);
    }
}

#[test]
fn instructblip_answer_matches_the_golden_baseline() {
    let case = golden_case("instructblip-tiny-b", "rel-att");
    let out = vicrop(&[
        "answer",
        "--model",
        s(&fixture("instructblip-tiny-b")),
        "--image",
        s(&fixture("images/chelsea.png")),
        "--question",
        case["question"].as_str().expect("q"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        ids(&json["answer_token_ids"]),
        ids(&case["baseline"]["ids"])
    );
}

#[test]
fn qformer_layer_is_checked_for_instructblip_and_ignored_for_llava() {
    let args = |model: &str, k: &'static str| {
        vec![
            "crop".to_string(),
            "--model".into(),
            s(&fixture(model)).to_string(),
            "--image".into(),
            s(&fixture("images/small.png")).to_string(),
            "--question".into(),
            "What is it?".into(),
            "--method".into(),
            "rel-att".into(),
            "--max-new-tokens".into(),
            "2".into(),
            "--qformer-layer".into(),
            k.into(),
        ]
    };
    let run = |a: Vec<String>| vicrop(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(args("instructblip-tiny-b", "3"));
    assert_clean_failure(&out, "Q-Former cross-attention) layer 3 is out of range");
    let out = run(args("instructblip-tiny-b", "2"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(args("llava-tiny-b", "7"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--qformer-layer is ignored"));
}

#[test]
fn a_tokenizer_without_bos_works_for_crop_as_for_answer() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("llava-no-bos");
    std::fs::create_dir(&dir).expect("dir");
    for entry in std::fs::read_dir(fixture("llava-tiny-b")).expect("read") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    let tok_path = dir.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok_path).expect("read")).expect("json");
    tok["post_processor"] = serde_json::Value::Null; // no BOS added
    std::fs::write(&tok_path, tok.to_string()).expect("write");
    let image = fixture("images/chelsea.png");
    let common = [
        "--model",
        s(&dir),
        "--image",
        s(&image),
        "--question",
        "What is the number on the bus?",
        "--max-new-tokens",
        "6",
        "--json",
    ];
    let answer = vicrop(&[&["answer"], &common[..]].concat());
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    let crop = vicrop(&[&["crop", "--method", "rel-att"], &common[..]].concat());
    assert!(
        crop.status.success(),
        "{}",
        String::from_utf8_lossy(&crop.stderr)
    );
    let a: serde_json::Value = serde_json::from_slice(&answer.stdout).expect("json");
    let c: serde_json::Value = serde_json::from_slice(&crop.stdout).expect("json");
    assert_eq!(a["answer_token_ids"], c["answer_token_ids"]);
}

#[test]
fn max_new_tokens_past_the_context_is_an_error() {
    for model in ["llava-tiny-b", "instructblip-tiny-b"] {
        let (model_dir, image) = (fixture(model), fixture("images/small.png"));
        for command in ["answer", "crop"] {
            let mut args = vec![
                command,
                "--model",
                s(&model_dir),
                "--image",
                s(&image),
                "--question",
                "What is it?",
                "--max-new-tokens",
                "100000",
            ];
            if command == "crop" {
                args.extend(["--method", "rel-att"]);
            }
            assert_clean_failure(&vicrop(&args), "max_new_tokens 100000 does not fit");
        }
    }
}

#[test]
fn an_unknown_architecture_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl"}"#,
    )
    .expect("write");
    let out = vicrop(&[
        "answer",
        "--model",
        s(tmp.path()),
        "--image",
        s(&fixture("images/small.png")),
        "--question",
        "What is it?",
    ]);
    assert_clean_failure(&out, "Qwen2VLForConditionalGeneration");
    assert_clean_failure(&out, "config.json");
}

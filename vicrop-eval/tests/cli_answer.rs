//! `vicrop answer` end to end: the JSON contract, hub-cache resolution, and bad input.

mod common;

use std::process::Command;

use common::{fixture, s, vicrop};

fn answer_args<'a>(model: &'a str, image: &'a str, question: &'a str) -> Vec<&'a str> {
    vec![
        "answer",
        "--model",
        model,
        "--image",
        image,
        "--question",
        question,
        "--json",
    ]
}

/// The golden greedy continuation of a case, from the fixture generator's JSON.
fn golden_ids(config: &str, case: &str) -> Vec<u32> {
    let path = fixture(&format!("goldens/{config}.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("golden json")).expect("json");
    json["cases"][case]["generated_ids"]
        .as_array()
        .expect("generated_ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

fn assert_clean_failure(out: &std::process::Output, needle: &str) {
    common::assert_clean_failure(out, needle);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
}

#[test]
fn json_contract_on_both_tiny_checkpoints() {
    for config in ["llava-tiny-a", "llava-tiny-b"] {
        let model = fixture(config);
        let image = fixture("images/chelsea.png");
        let out = vicrop(&answer_args(
            s(&model),
            s(&image),
            "What is the number on the bus?",
        ));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{config}: {stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        let obj = json.as_object().expect("object");
        assert_eq!(obj.len(), 2, "{json}");
        let ids: Vec<u32> = obj["answer_token_ids"]
            .as_array()
            .expect("array")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        // max-new-tokens defaults to 20; the golden has 12 tokens, so compare that prefix.
        let golden = golden_ids(config, "q_chelsea");
        assert_eq!(
            &ids[..golden.len().min(ids.len())],
            &golden[..golden.len().min(ids.len())],
            "{config}"
        );
        assert!(obj["answer"].is_string());
    }
}

#[test]
fn max_new_tokens_and_plain_output() {
    let model = fixture("llava-tiny-a");
    let image = fixture("images/small.png");
    let out = vicrop(&[
        "answer",
        "--model",
        s(&model),
        "--image",
        s(&image),
        "--question",
        "What is it?",
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(json["answer_token_ids"].as_array().expect("array").len() <= 3);
}

#[test]
fn hub_id_from_the_local_cache() {
    let home = tempfile::tempdir().expect("tmp");
    let repo = home.path().join("hub/models--tiny-org--llava-tiny-b");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).expect("mkdir");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), "0123abcd").expect("write");
    for entry in std::fs::read_dir(fixture("llava-tiny-b")).expect("dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), snap.join(entry.file_name())).expect("copy");
    }
    let image = fixture("images/small.png");
    let out = Command::new(env!("CARGO_BIN_EXE_vicrop"))
        .env("HF_HOME", home.path())
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .args(answer_args("tiny-org/llava-tiny-b", s(&image), "What?"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not cached and downloads off (the variable, then the flag): no network, a clear error
    // naming the cache folder looked in.
    let not_cached = |offline_var: Option<&str>, flag: bool| {
        let mut args = answer_args("tiny-org/not-there", s(&image), "What?");
        if flag {
            args.push("--offline");
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vicrop"));
        cmd.env("HF_HOME", home.path())
            .env_remove("HF_HUB_CACHE")
            .env_remove("HUGGINGFACE_HUB_CACHE")
            .env_remove("HF_HUB_OFFLINE")
            // Nothing listens there: a request would fail, not reach the network.
            .env("HF_ENDPOINT", "http://127.0.0.1:9");
        if let Some(v) = offline_var {
            cmd.env("HF_HUB_OFFLINE", v);
        }
        cmd.args(args).output().expect("run")
    };
    for out in [not_cached(Some("1"), false), not_cached(None, true)] {
        assert_clean_failure(&out, "not in the local Hugging Face cache");
        assert_clean_failure(&out, "models--tiny-org--not-there");
    }

    // Online, the download is attempted (and here fails cleanly: nothing listens).
    let out = not_cached(None, false);
    assert_clean_failure(
        &out,
        "cannot reach http://127.0.0.1:9/api/models/tiny-org/not-there",
    );
}

#[test]
fn missing_model_folder() {
    let image = fixture("images/small.png");
    let out = vicrop(&answer_args("/no/such/model", s(&image), "What?"));
    assert_clean_failure(&out, "/no/such/model");
}

#[test]
fn missing_image() {
    let model = fixture("llava-tiny-b");
    let out = vicrop(&answer_args(s(&model), "/no/such/image.png", "What?"));
    assert_clean_failure(&out, "/no/such/image.png");
}

#[test]
fn zero_sized_and_garbage_images() {
    let dir = tempfile::tempdir().expect("tmp");
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").expect("write");
    let garbage = dir.path().join("garbage.jpg");
    std::fs::write(&garbage, b"this is not an image at all").expect("write");
    let model = fixture("llava-tiny-b");
    for img in [&empty, &garbage] {
        let out = vicrop(&answer_args(s(&model), s(img), "What?"));
        assert_clean_failure(
            &out,
            img.file_name().and_then(|n| n.to_str()).expect("name"),
        );
    }
}

#[test]
fn empty_question() {
    let model = fixture("llava-tiny-b");
    let image = fixture("images/small.png");
    let out = vicrop(&answer_args(s(&model), s(&image), "  "));
    assert_clean_failure(&out, "question");
}

#[test]
fn malformed_config() {
    let dir = tempfile::tempdir().expect("tmp");
    for entry in std::fs::read_dir(fixture("llava-tiny-b")).expect("dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    std::fs::write(dir.path().join("config.json"), "{ nope").expect("write");
    let image = fixture("images/small.png");
    let out = vicrop(&answer_args(
        dir.path().to_str().expect("utf8"),
        s(&image),
        "What?",
    ));
    assert_clean_failure(&out, "config.json");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_cuda_support() {
    let model = fixture("llava-tiny-b");
    let image = fixture("images/small.png");
    let mut args = answer_args(s(&model), s(&image), "What?");
    args.extend(["--device", "cuda"]);
    let out = vicrop(&args);
    assert_clean_failure(&out, "without CUDA");
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn wgpu_without_wgpu_support() {
    let model = fixture("llava-tiny-b");
    let image = fixture("images/small.png");
    let mut args = answer_args(s(&model), s(&image), "What?");
    args.extend(["--device", "wgpu"]);
    let out = vicrop(&args);
    assert_clean_failure(&out, "without wgpu");
}

/// wgpu has no bfloat16; the refusal names the alternatives, whatever the build.
#[test]
fn bf16_refused_on_wgpu() {
    let model = fixture("llava-tiny-b");
    let image = fixture("images/small.png");
    let mut args = answer_args(s(&model), s(&image), "What?");
    args.extend(["--device", "wgpu", "--dtype", "bf16"]);
    let out = vicrop(&args);
    assert_clean_failure(&out, "no bfloat16");
}

/// Only burn-flex stores half precision on the CPU; a burn-ndarray build refuses it clearly.
#[cfg(not(feature = "flex"))]
#[test]
fn dtype_not_available_on_cpu() {
    let model = fixture("llava-tiny-b");
    let image = fixture("images/small.png");
    let mut args = answer_args(s(&model), s(&image), "What?");
    args.extend(["--dtype", "bf16"]);
    let out = vicrop(&args);
    assert_clean_failure(&out, "f32");
}

//! Every kind of bad checkpoint gives one clear, typed error naming the culprit; never a panic.

use std::collections::HashMap;
use std::path::Path;

use crate::common::TestBackend as B;
use crate::common::{copy_fixture, fixture};
use vicrop_models::{LlavaModel, LoadOptions, ModelError};

fn load(dir: &Path) -> Result<LlavaModel<B>, ModelError> {
    LlavaModel::<B>::load(dir, &Default::default(), LoadOptions::default())
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).expect("json")).expect("write");
}

/// Rewrites `model.safetensors` with `edit` applied to its (name -> (dtype, shape, bytes)) map.
fn edit_weights(
    dir: &Path,
    edit: impl FnOnce(&mut HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut map: HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, safetensors::tensor::TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).expect("write");
}

#[test]
fn the_fixture_itself_loads() {
    load(&fixture("llava-tiny-b")).expect("tiny-b loads");
}

#[test]
fn missing_folder() {
    let err = load(Path::new("/nonexistent/model")).unwrap_err();
    assert!(matches!(err, ModelError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
}

#[test]
fn missing_config() {
    let dir = copy_fixture("llava-tiny-b");
    std::fs::remove_file(dir.path().join("config.json")).expect("rm");
    let err = load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn malformed_json() {
    let dir = copy_fixture("llava-tiny-b");
    std::fs::write(
        dir.path().join("config.json"),
        "{\"model_type\": \"llava\",",
    )
    .expect("write");
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Json { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn field_of_the_wrong_type() {
    let dir = copy_fixture("llava-tiny-b");
    edit_config(dir.path(), |c| {
        c["text_config"]["hidden_size"] = "wide".into()
    });
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("text_config.hidden_size"), "{err}");
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn another_architecture() {
    let dir = copy_fixture("llava-tiny-b");
    edit_config(dir.path(), |c| {
        c["architectures"] = serde_json::json!(["InstructBlipForConditionalGeneration"]);
        c["model_type"] = "instructblip".into();
    });
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Config { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("InstructBlipForConditionalGeneration"),
        "{err}"
    );
}

#[test]
fn unsupported_text_model() {
    let dir = copy_fixture("llava-tiny-b");
    edit_config(dir.path(), |c| {
        c["text_config"]["model_type"] = "mistral".into()
    });
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("mistral"), "{err}");
}

#[test]
fn truncated_safetensors() {
    let dir = copy_fixture("llava-tiny-b");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("truncated") && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn garbage_safetensors() {
    let dir = copy_fixture("llava-tiny-b");
    std::fs::write(dir.path().join("model.safetensors"), b"not a checkpoint").expect("write");
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
}

#[test]
fn no_weights_at_all() {
    let dir = copy_fixture("llava-tiny-b");
    std::fs::remove_file(dir.path().join("model.safetensors")).expect("rm");
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn missing_tensor() {
    let dir = copy_fixture("llava-tiny-b");
    edit_weights(dir.path(), |m| {
        m.remove("multi_modal_projector.linear_1.bias");
    });
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("multi_modal_projector.linear_1.bias"),
        "{err}"
    );
}

#[test]
fn unexpected_tensor() {
    let dir = copy_fixture("llava-tiny-b");
    edit_weights(dir.path(), |m| {
        m.insert(
            "qformer.layer.0.weight".into(),
            (safetensors::Dtype::F32, vec![2], vec![0u8; 8]),
        );
    });
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::UnexpectedTensors { .. }), "{err}");
    assert!(err.to_string().contains("qformer.layer.0.weight"), "{err}");
}

#[test]
fn wrong_shape() {
    let dir = copy_fixture("llava-tiny-b");
    edit_config(dir.path(), |c| {
        let inter = c["vision_config"]["intermediate_size"]
            .as_u64()
            .expect("int");
        c["vision_config"]["intermediate_size"] = (inter + 1).into();
    });
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("mlp.fc1.weight"), "{err}");
}

#[test]
fn unsupported_dtype() {
    let dir = copy_fixture("llava-tiny-b");
    edit_weights(dir.path(), |m| {
        let e = m
            .get_mut("multi_modal_projector.linear_2.bias")
            .expect("tensor");
        e.0 = safetensors::Dtype::I16;
    });
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::UnsupportedDtype { .. }), "{err}");
}

#[test]
fn missing_tokenizer() {
    let dir = copy_fixture("llava-tiny-b");
    std::fs::remove_file(dir.path().join("tokenizer.json")).expect("rm");
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn empty_question() {
    let model = load(&fixture("llava-tiny-b")).expect("loads");
    let img = image::RgbImage::new(32, 32);
    let err = model.answer(&[&img], "   ", 4).unwrap_err();
    assert!(matches!(err, ModelError::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("question is empty"), "{err}");
}

//! Loading and saving models: round trips keep every tensor and the config; every refusal names
//! the file and what is wrong, and nothing panics on bad user files.

mod common;

use std::path::Path;

use greentrainer::Error;
use greentrainer::device::ComputeDevice;
use greentrainer::io::{
    atomic::Existing,
    export::save_hf_folder,
    load_model,
    safetensors_file::{SafetensorsFiles, write_f32},
};
use greentrainer::model::Parameters;

fn copy_fixture(to: &Path) {
    for f in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json"] {
        std::fs::copy(common::fixture("tiny-llama").join(f), to.join(f)).unwrap();
    }
}

fn tensors(model: &impl Parameters) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    model.visit(&mut |n, p| out.push((n.to_string(), p.shape(), p.to_vec())));
    out
}

fn load_err(path: &Path) -> String {
    match load_model(path, &ComputeDevice::cpu().device) {
        Ok(_) => panic!("{} loaded but should be refused", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hf_folder_round_trip_is_exact() {
    let dev = ComputeDevice::cpu();
    let original = load_model(&common::fixture("tiny-llama"), &dev.device).unwrap();
    let out = tempfile::tempdir().unwrap();
    let saved = out.path().join("model");
    save_hf_folder(&original, &saved, Existing::Refuse, None).unwrap();
    let reloaded = load_model(&saved, &dev.device).unwrap();
    assert_eq!(tensors(&reloaded.model), tensors(&original.model));
    let mut want = original.model.raw_config().clone();
    want["torch_dtype"] = serde_json::json!("float32");
    want["dtype"] = serde_json::json!("float32");
    assert_eq!(reloaded.model.raw_config(), &want);
    // Nothing half-written is left beside the folder.
    let leftovers: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("model")]);
    // The tied head is not written, as transformers expects.
    let st = SafetensorsFiles::open_files(&[saved.join("model.safetensors")]).unwrap();
    assert!(!st.contains("lm_head.weight"));
}

#[test]
fn gguf_exports_to_an_hf_folder_that_reloads_identically() {
    let Some(path) = common::smollm2_gguf() else { return };
    let dev = ComputeDevice::cpu();
    let gguf = load_model(&path, &dev.device).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_hf_folder(&gguf, out.path().join("hf").as_path(), Existing::Refuse, None).unwrap();
    let hf = load_model(&out.path().join("hf"), &dev.device).unwrap();
    assert_eq!(tensors(&hf.model), tensors(&gguf.model));
    let text = "The capital of France is";
    assert_eq!(hf.tokenizer.encode(text, false).unwrap().get_ids(), gguf.tokenizer.encode(text, false).unwrap().get_ids());
    assert_eq!(hf.chat_template(), gguf.chat_template());
    assert!(hf.chat_template().is_some());
}

#[test]
fn unsupported_architecture_is_refused_with_what_is_supported() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"llama\"", "\"gpt_neox\"");
    std::fs::write(&cfg, text).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("config.json") && err.contains("gpt_neox") && err.contains("llama, qwen2"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let st = SafetensorsFiles::open_files(&[dir.path().join("model.safetensors")]).unwrap();
    let kept: Vec<_> = st
        .names()
        .filter(|n| *n != "model.layers.1.mlp.up_proj.weight")
        .map(|n| {
            let (shape, v) = st.read_f32(n).unwrap();
            (n.to_string(), shape, v)
        })
        .collect();
    drop(st);
    write_f32(&dir.path().join("model.safetensors"), &kept, None).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("missing"), "{err}");
}

#[test]
fn shape_that_disagrees_with_the_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"intermediate_size\": 160", "\"intermediate_size\": 128");
    std::fs::write(&cfg, text).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("mlp.gate_proj.weight") && err.contains("[160, 64]") && err.contains("[128, 64]"), "{err}");
}

#[test]
fn truncated_or_corrupt_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("model.safetensors") && err.contains("not a valid safetensors file"), "{err}");

    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("config.json") && err.contains("not valid JSON"), "{err}");

    let gguf = dir.path().join("broken.gguf");
    std::fs::write(&gguf, b"GGUF\x03\x00\x00\x00 too short").unwrap();
    let err = load_err(&gguf);
    assert!(err.contains("broken.gguf"), "{err}");
}

#[test]
fn wrong_kinds_of_path_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_err(&dir.path().join("nope")).contains("no such file"));
    let txt = dir.path().join("model.bin");
    std::fs::write(&txt, b"x").unwrap();
    assert!(load_err(&txt).contains("unsupported model file"));
    assert!(load_err(dir.path()).contains("config.json"));
    assert!(matches!(load_model(dir.path(), &ComputeDevice::cpu().device), Err(Error::Io { .. } | Error::Invalid { .. })));
}

#[test]
fn sharded_half_precision_checkpoints_load_into_f32() {
    use safetensors::{Dtype, tensor::TensorView};
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let st = SafetensorsFiles::open_files(&[dir.path().join("model.safetensors")]).unwrap();
    let all: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .names()
        .map(|n| {
            let (shape, v) = st.read_f32(n).unwrap();
            (n.to_string(), shape, v)
        })
        .collect();
    drop(st);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    // Shard 1 in bf16, shard 2 in f16, with the index transformers writes.
    let (first, second) = all.split_at(all.len() / 2);
    let encode = |part: &[(String, Vec<usize>, Vec<f32>)], dtype: Dtype| -> Vec<(String, Vec<usize>, Vec<u8>)> {
        part.iter()
            .map(|(n, s, v)| {
                let bytes = v
                    .iter()
                    .flat_map(|x| match dtype {
                        Dtype::BF16 => half::bf16::from_f32(*x).to_le_bytes(),
                        _ => half::f16::from_f32(*x).to_le_bytes(),
                    })
                    .collect();
                (n.clone(), s.clone(), bytes)
            })
            .collect()
    };
    let mut weight_map = serde_json::Map::new();
    for (file, part, dtype) in
        [("model-00001-of-00002.safetensors", first, Dtype::BF16), ("model-00002-of-00002.safetensors", second, Dtype::F16)]
    {
        let encoded = encode(part, dtype);
        let views: Vec<(String, TensorView<'_>)> =
            encoded.iter().map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &dir.path().join(file)).unwrap();
        for (n, _, _) in part {
            weight_map.insert(n.clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();

    let loaded = load_model(dir.path(), &ComputeDevice::cpu().device).unwrap();
    let got = tensors(&loaded.model);
    for (name, shape, values) in &got {
        let (_, want_shape, want) = all.iter().find(|(n, _, _)| n == name).unwrap();
        assert_eq!(shape, want_shape);
        let in_first = first.iter().any(|(n, _, _)| n == name);
        let tol = if in_first { 1.0 / 128.0 } else { 1.0 / 1024.0 }; // bf16 / f16 relative precision
        for (g, w) in values.iter().zip(want) {
            assert!((g - w).abs() <= tol * w.abs().max(1e-3), "{name}: {g} vs {w}");
        }
    }
}

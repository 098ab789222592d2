//! Shared helpers for integration tests: fixture paths, devices, numeric comparisons.
#![allow(dead_code)] // each test binary uses a different subset

pub mod gguf_writer;
pub mod stores;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use greentrainer::device::{BackendKind, ComputeDevice, DeviceChoice};
use greentrainer::model::Parameters;
use greentrainer::train::{MethodKind, TrainConfig};

/// A fixture under tests/fixtures (see its README for where each comes from).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The bundled demo training file (DialogSum rows).
pub fn demo_train() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/dialogsum.train.jsonl")
}

/// Three short steps of `method` on a tiny fixture model, saving the trained model to `out`.
pub fn short_run(fixture_name: &str, method: MethodKind, out: &Path) -> TrainConfig {
    TrainConfig {
        model: fixture(fixture_name),
        data: demo_train(),
        output: out.to_path_buf(),
        method,
        rho: 0.6,
        top_k: 1,
        epochs: 0,
        max_steps: 3,
        batch_size: 2,
        max_len: 40,
        lr: 1e-3,
        lora_dropout: 0.0,
        save_model: true,
        ..TrainConfig::default()
    }
}

/// Every parameter's values by name, to compare before and after training.
pub fn param_snapshot(model: &impl Parameters) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    model.visit(&mut |n, p| {
        out.insert(n.to_string(), p.to_vec());
    });
    out
}

/// A saved model folder holds exactly the tensors, by HF name and shape, of the checkpoint
/// transformers' `save_pretrained` wrote for the fixture (tied copies left out as it leaves them
/// out), and names the same architecture: what `from_pretrained` needs to load it without missing
/// or unexpected keys.
pub fn assert_hf_layout(saved: &Path, fixture_name: &str) {
    use greentrainer::io::safetensors_file::SafetensorsFiles;
    let layout = |dir: &Path| -> BTreeMap<String, Vec<usize>> {
        let st = SafetensorsFiles::open_dir(dir).unwrap();
        st.names().map(|n| (n.to_string(), st.read_f32(n).unwrap().0)).collect()
    };
    let reference = fixture(fixture_name);
    assert_eq!(layout(saved), layout(&reference), "{}: tensors differ from {fixture_name}'s", saved.display());
    let config =
        |dir: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap() };
    let (got, want) = (config(saved), config(&reference));
    for key in ["model_type", "architectures", "tie_word_embeddings"] {
        assert_eq!(got.get(key), want.get(key), "{}: config.json {key}", saved.display());
    }
}

/// A fixture's golden batch and what transformers computed on it (`expected.safetensors`).
pub struct Golden {
    /// The file itself, for the `grad.<name>` tensors.
    pub files: greentrainer::io::safetensors_file::SafetensorsFiles,
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<i64>,
    /// 1 on real tokens, 0 on padding.
    pub mask: Vec<i64>,
    pub labels: Vec<i64>,
    pub logits: Vec<f32>,
    pub loss: f32,
}

impl Golden {
    /// The mask as the models take it (1 = real token).
    pub fn padding(&self) -> Vec<u32> {
        self.mask.iter().map(|&m| m as u32).collect()
    }
}

pub fn golden(fixture_name: &str) -> Golden {
    let files =
        greentrainer::io::safetensors_file::SafetensorsFiles::open_files(&[fixture(fixture_name).join("expected.safetensors")]).unwrap();
    let ints = |name: &str| files.read_i64(name).unwrap();
    let ((shape, ids), mask, labels) = (ints("input_ids"), ints("attention_mask").1, ints("labels").1);
    let logits = files.read_f32("logits").unwrap().1;
    let loss = files.read_f32("loss").unwrap().1[0];
    Golden { batch: shape[0], seq: shape[1], ids, mask, labels, logits, loss, files }
}

/// The CPU, plus wgpu when an adapter exists. In CI (lavapipe installed) wgpu must be there, so
/// the GPU code path is always exercised.
pub fn devices() -> Vec<ComputeDevice> {
    let mut out = vec![ComputeDevice::cpu()];
    let gpu = ComputeDevice::open(DeviceChoice::Wgpu);
    if gpu.backend == BackendKind::Wgpu {
        out.push(gpu);
    } else if std::env::var_os("CI").is_some() {
        panic!("CI must run the wgpu path (install mesa-vulkan-drivers): {:?}", gpu.fallback_reason);
    } else {
        eprintln!("!!! wgpu unavailable, testing the CPU only: {:?}", gpu.fallback_reason);
    }
    out
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn rel_l2(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let num: f64 = actual.iter().zip(expected).map(|(a, e)| ((a - e) as f64).powi(2)).sum();
    let den: f64 = expected.iter().map(|e| (*e as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The real SmolLM2 GGUF fetched by scripts/fetch-model.sh; `None` (with a loud message) when
/// absent outside CI.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing: .ci/run must fetch it with scripts/fetch-model.sh", path.display());
    }
    eprintln!("!!! SKIPPING: {} not found; run scripts/fetch-model.sh", path.display());
    None
}

/// Checks every parameter's gradient in `grads` against `grad.<name>` in a fixture's
/// expected.safetensors (relative L2 <= 1e-3; a missing gradient fails). Returns how many were
/// checked and the worst relative error with its parameter.
pub fn assert_gradients_match(
    model: &impl Parameters,
    grads: &burn::tensor::Gradients,
    expected: &greentrainer::io::safetensors_file::SafetensorsFiles,
    device: &str,
) -> (usize, (f64, String)) {
    let (mut checked, mut worst) = (0, (0.0, String::new()));
    model.visit(&mut |name, p| {
        let grad = p.grad_flat(grads).unwrap_or_else(|| panic!("{device}: no gradient for {name}"));
        let got: Vec<f32> = grad.try_into_vec_as::<f32>().unwrap();
        let (_, want) = expected.read_f32(&format!("grad.{name}")).unwrap();
        let e = rel_l2(&got, &want);
        assert!(e <= 1e-3, "{device}: gradient of {name}: relative L2 error {e}");
        if e > worst.0 {
            worst = (e, name.to_string());
        }
        checked += 1;
    });
    (checked, worst)
}

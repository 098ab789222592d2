//! The OPT implementation against HF transformers (tiny-opt fixture: pre-LN, no projections, tied
//! head), cached decoding, the paper's FLOPs rows from config.json alone, config errors, and the
//! variants the fixture does not cover (opt-350m's post-LN with project_in/out; no biases, no
//! LayerNorm affine, untied head).

mod common;

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use greentrainer::error::{Error, Result};
use greentrainer::io::safetensors_file::SafetensorsFiles;
use greentrainer::model::opt::opt_ops;
use greentrainer::model::opt::{Opt, OptConfig};
use greentrainer::model::{KvCache, Parameters, attention_mask, loss::causal_lm_loss, params::with_trainable};
use greentrainer::profile::{BatchShape, FlopsConvention, profile};
use serde_json::{Value, json};

fn read_config(path: &Path) -> OptConfig {
    let text = std::fs::read_to_string(path).unwrap();
    OptConfig::from_json_str(&text, &path.display().to_string()).unwrap()
}

/// Loads an HF OPT folder the way `io::hf` loads Llama: every tensor by name, shape checked.
fn load_fixture(dir: &Path, device: &Device) -> Result<Opt> {
    let config = read_config(&dir.join("config.json"));
    let files = SafetensorsFiles::open_dir(dir)?;
    Opt::load(config, device, &mut |name, shape| {
        let path = files.path_of(name).unwrap_or(dir).to_path_buf();
        if !files.contains(name) {
            return Err(Error::MissingTensor { path, tensor: name.into() });
        }
        let (found, values) = files.read_f32(name)?;
        if found != shape {
            return Err(Error::tensor(path, name, format!("shape {found:?}, expected {shape:?}")));
        }
        Ok(values)
    })
}

/// Deterministic weights in [-0.2, 0.2) from each name (splitmix64), LayerNorm weights near 1.
fn random_weights(name: &str, shape: &[usize]) -> Vec<f32> {
    let mut state = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let is_norm_weight = name.contains("layer_norm.weight");
    (0..shape.iter().product::<usize>())
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let u = ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            if is_norm_weight { 1.0 + 0.4 * u } else { 0.4 * u }
        })
        .collect()
}

/// A random model of `config`, with the names it asked the source for.
fn random_model(config: OptConfig, device: &Device) -> (Opt, Vec<String>) {
    let mut asked = Vec::new();
    let model = Opt::load(config, device, &mut |name, shape| {
        asked.push(name.to_string());
        Ok(random_weights(name, shape))
    })
    .unwrap();
    (model, asked)
}

fn id_tensor(ids: &[i64], b: usize, s: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [b, s]), device)
}

fn values(t: Tensor<3>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

#[test]
fn tiny_opt_matches_transformers() {
    let dir = common::fixture("tiny-opt");
    let common::Golden { files: expected, batch: b, seq: s, ids, mask, labels, logits: want_logits, loss: want_loss } =
        common::golden("tiny-opt");
    let vocab = want_logits.len() / (b * s);

    for dev in common::devices() {
        let device = dev.device.clone();
        let loaded = load_fixture(&dir, &device).unwrap();
        let model = with_trainable(&loaded, |_| true);
        let padding: Vec<u32> = mask.iter().map(|&m| m as u32).collect();
        let mask_t = attention_mask(Some(&padding), b, s, 0);
        let logits = model.forward(id_tensor(&ids, b, s, &device), Some(&mask_t), None);
        let got_logits = values(logits.clone().inner());
        // The fixture is right-padded. HF puts padded tokens at position 1 (cumulative mask sum - 1 + offset 2),
        // this model at their index: logits agree at real tokens, which are all that the loss and gradients see.
        let real = |v: &[f32]| -> Vec<f32> {
            v.chunks(vocab).zip(&mask).filter(|(_, m)| **m != 0).flat_map(|(row, _)| row.iter().copied()).collect()
        };
        let err = common::max_abs_diff(&real(&got_logits), &real(&want_logits));
        assert!(err <= 1e-4, "{}: logits max abs error {err} at real tokens", dev.name);

        let (loss, _) = causal_lm_loss(logits, &labels);
        let got_loss: f32 = loss.clone().inner().into_scalar();
        let loss_rel = ((got_loss - want_loss) / want_loss).abs();
        assert!(loss_rel <= 1e-5, "{}: loss {got_loss} vs {want_loss} (relative {loss_rel})", dev.name);

        let grads = loss.backward();
        let (mut checked, mut zero, mut worst) = (0, 0, (0.0f64, String::new()));
        model.visit(&mut |name, p| {
            let grad = p.grad_flat(&grads).unwrap_or_else(|| panic!("{}: no gradient for {name}", dev.name));
            let got: Vec<f32> = grad.try_into_vec_as::<f32>().unwrap();
            let (_, want) = expected.read_f32(&format!("grad.{name}")).unwrap();
            let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            if norm(&want) < 1e-6 {
                // k_proj.bias: a bias shared by every key shifts all scores of a query equally, which softmax
                // cancels, so its gradient is zero up to rounding (~1e-10 in HF); a relative error means nothing.
                assert!(norm(&got) < 1e-6, "{}: gradient of {name} should vanish, has L2 norm {}", dev.name, norm(&got));
                zero += 1;
                return;
            }
            let e = common::rel_l2(&got, &want);
            assert!(e <= 1e-3, "{}: gradient of {name}: relative L2 error {e}", dev.name);
            checked += 1;
            if e > worst.0 {
                worst = (e, name.to_string());
            }
        });
        let in_fixture = expected.names().filter(|n| n.starts_with("grad.")).count();
        assert_eq!(checked + zero, in_fixture, "{}: every parameter of the fixture is visited once", dev.name);
        let all_err = common::max_abs_diff(&got_logits, &want_logits);
        eprintln!(
            "{}: logits max abs err {err:.2e} at real tokens ({all_err:.2e} with padding), loss {got_loss} vs {want_loss} \
             (rel {loss_rel:.2e}), {checked} gradients, worst rel L2 {:.2e} ({}), {zero} vanishing gradients ok",
            dev.name, worst.0, worst.1
        );
    }
}

/// Incremental decoding (a prefill, then one token at a time) gives the uncached last-position logits.
fn assert_cache_matches(model: &Opt, ids: &[i64], prefill: usize, label: &str) {
    let device = model.device();
    let vocab = model.config.vocab_size;
    let last_uncached = |n: usize| {
        let mask = attention_mask(None, 1, n, 0);
        let logits = values(model.forward(id_tensor(&ids[..n], 1, n, &device), Some(&mask), None));
        logits[(n - 1) * vocab..].to_vec()
    };
    let mut cache = KvCache::new(model.layers.len());
    let mut fed = 0;
    for n in prefill..=ids.len() {
        let step = n - fed;
        let mask = attention_mask(None, 1, step, fed);
        let logits = values(model.forward(id_tensor(&ids[fed..n], 1, step, &device), Some(&mask), Some(&mut cache)));
        fed = n;
        assert_eq!(cache.len(), n, "{label}");
        let err = common::max_abs_diff(&logits[(step - 1) * vocab..], &last_uncached(n));
        assert!(err <= 1e-4, "{label}: cached logits after {n} tokens differ by {err}");
    }
}

#[test]
fn tiny_opt_cached_decoding_matches_the_full_forward() {
    let dir = common::fixture("tiny-opt");
    let ids = common::golden("tiny-opt").ids;
    for dev in common::devices() {
        let model = load_fixture(&dir, &dev.device).unwrap();
        assert_cache_matches(&model, &ids[..12], 7, &dev.name);
    }
}

#[test]
fn paper_full_fine_tuning_pflops_from_config_json() {
    // tests/fixtures/paper-configs/README.md: batch 4 padded to 512 tokens, 5 epochs, 1 MAC = 1 FLOP;
    // the paper's figures are matched with full (not halved) causal attention.
    let (scitldr, dialogsum) = (2490.0, 15575.0);
    let rows = [("opt-1.3b", scitldr, 20.8), ("opt-2.7b", scitldr, 41.8), ("opt-2.7b", dialogsum, 262.0)];
    for (name, steps, paper_pflops) in rows {
        let config = read_config(&common::fixture("paper-configs").join(format!("{name}.json")));
        let profile =
            profile(&opt_ops(&config), BatchShape { batch: 4, seq: 512, decoder_seq: None, head_tokens: None, grad_tokens: None }, false)
                .unwrap();
        let pflops = FlopsConvention::PaperMac.from_macs(profile.t_full()) * steps / 1e15;
        assert!((pflops / paper_pflops - 1.0).abs() < 0.005, "{name}: {pflops:.2} PFLOPs vs paper {paper_pflops}");
        eprintln!("{name}, {steps} steps: {pflops:.2} PFLOPs (paper {paper_pflops})");
    }
}

#[test]
fn paper_configs_count_the_published_parameters() {
    // Parameter counts of the facebook/opt-* checkpoints; opt-350m has project_in/out and no final LayerNorm.
    for (name, params) in [("opt-350m", 331_196_416), ("opt-1.3b", 1_315_758_080), ("opt-2.7b", 2_651_596_800usize)] {
        let config = read_config(&common::fixture("paper-configs").join(format!("{name}.json")));
        let profile =
            profile(&opt_ops(&config), BatchShape { batch: 1, seq: 1, decoder_seq: None, head_tokens: None, grad_tokens: None }, false)
                .unwrap();
        assert_eq!(profile.nodes.iter().map(|n| n.param_numel).sum::<usize>(), params, "{name}");
    }
}

fn tiny_config(overrides: Value) -> Value {
    let mut config = json!({
        "model_type": "opt", "activation_function": "relu", "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 32, "word_embed_proj_dim": 64,
        "do_layer_norm_before": true, "enable_bias": true, "layer_norm_elementwise_affine": true,
        "_remove_final_layer_norm": false, "tie_word_embeddings": true, "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1
    });
    for (k, v) in overrides.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

#[test]
fn bad_configs_are_refused_naming_the_file() {
    let origin = "models/bad-opt/config.json";
    let cases = [
        (json!({"activation_function": "gelu_new"}), "activation_function"),
        (json!({"num_attention_heads": 0}), "must be > 0"),
        (json!({"num_attention_heads": 5}), "not a multiple"),
        (json!({"word_embed_proj_dim": 0}), "must be > 0"),
        (json!({"model_type": "llama"}), "model_type"),
        (json!({"hidden_size": "wide"}), "not an OPT config.json"),
    ];
    for (overrides, what) in cases {
        let err = OptConfig::from_value(tiny_config(overrides.clone()), origin).unwrap_err().to_string();
        assert!(err.contains(origin) && err.contains(what), "{overrides}: {err}");
    }
    let err = OptConfig::from_json_str("{ not json", origin).unwrap_err().to_string();
    assert!(err.contains(origin), "{err}");
}

#[test]
fn variants_beyond_the_fixture_load_run_and_train() {
    let variants = [
        // opt-350m's layout: post-LN, 32-wide embeddings projected in and out, no decoder final LayerNorm.
        ("post-LN with projections", json!({"do_layer_norm_before": false, "word_embed_proj_dim": 32})),
        // Pre-LN with projections, no biases, no LayerNorm parameters, an untied head.
        (
            "bias-free, affine-free, untied",
            json!({"word_embed_proj_dim": 48, "enable_bias": false, "layer_norm_elementwise_affine": false,
                   "tie_word_embeddings": false}),
        ),
    ];
    let ids: Vec<i64> = (0..10).map(|i| (i * 37 + 5) % 100).collect();
    for dev in common::devices() {
        for (label, overrides) in &variants {
            let label = format!("{}: {label}", dev.name);
            let config = OptConfig::from_value(tiny_config(overrides.clone()), "variant").unwrap();
            let (model, asked) = random_model(config, &dev.device);
            assert_eq!(model.param_names(), asked, "{label}: visit order is load order");
            assert!(model.param_names().iter().any(|n| n == "model.decoder.project_in.weight"), "{label}");
            assert!(!model.param_names().iter().any(|n| n == "model.decoder.final_layer_norm.weight"), "{label}");

            let trained = with_trainable(&model, |_| true);
            let mask = attention_mask(None, 2, 5, 0);
            let logits = trained.forward(id_tensor(&ids, 2, 5, &dev.device), Some(&mask), None);
            assert_eq!(logits.dims(), [2, 5, 100], "{label}");
            let (loss, _) = causal_lm_loss(logits, &ids);
            let grads = loss.backward();
            trained.visit(&mut |name, p| {
                let grad = p.grad_flat(&grads).unwrap_or_else(|| panic!("{label}: no gradient for {name}"));
                let g: Vec<f32> = grad.try_into_vec_as::<f32>().unwrap();
                assert!(g.iter().all(|x| x.is_finite()) && g.iter().any(|x| *x != 0.0), "{label}: gradient of {name}");
            });
            assert_cache_matches(&model, &ids, 4, &label);
        }
    }
}

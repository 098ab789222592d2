//! The BLOOM implementation against HF transformers (tiny-bloom fixture): logits, loss, every
//! parameter's gradient on the CPU and on wgpu; cached decoding; an untied head; the paper's
//! BLOOMZ-3B FLOPs from its config; config validation; ALiBi slopes.

mod common;

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use greentrainer::device::ComputeDevice;
use greentrainer::error::Error;
use greentrainer::io::safetensors_file::SafetensorsFiles;
use greentrainer::model::bloom::bloom_ops;
use greentrainer::model::bloom::{Bloom, BloomConfig, alibi_slopes};
use greentrainer::model::{KvCache, Parameters, attention_mask, loss::causal_lm_loss, params::with_trainable};
use greentrainer::profile::{BatchShape, FlopsConvention, profile};

fn read_config(path: &Path) -> BloomConfig {
    let text = std::fs::read_to_string(path).unwrap();
    BloomConfig::from_json_str(&text, &path.display().to_string()).unwrap()
}

/// Loads tiny-bloom with `config`; `lm_head.weight`, absent from the tied file, is served as a
/// copy of the word embeddings.
fn load_with(config: BloomConfig, device: &Device) -> Bloom {
    let dir = common::fixture("tiny-bloom");
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    Bloom::load(config, device, &mut |name, shape| {
        let name = if name == "lm_head.weight" { "transformer.word_embeddings.weight" } else { name };
        if !files.contains(name) {
            return Err(Error::MissingTensor { path: dir.clone(), tensor: name.into() });
        }
        let (found, values) = files.read_f32(name)?;
        assert_eq!(found, shape, "{name}");
        Ok(values)
    })
    .unwrap()
}

fn load(device: &Device) -> Bloom {
    load_with(read_config(&common::fixture("tiny-bloom").join("config.json")), device)
}

#[test]
fn tiny_bloom_matches_transformers() {
    let common::Golden { files: expected, batch: b, seq: s, ids, mask, labels, logits: want_logits, loss: want_loss } =
        common::golden("tiny-bloom");

    for dev in common::devices() {
        let loaded = load(&dev.device);
        let model = with_trainable(&loaded, |_| true);
        let device = dev.device.clone();
        let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, s]), &device);
        let padding: Vec<u32> = mask.iter().map(|&m| m as u32).collect();
        let mask_t = attention_mask(Some(&padding), b, s, 0);
        let logits = model.forward(ids_t, Some(&mask_t), None);
        // Row 1 is right-padded. transformers numbers ALiBi key positions by the mask's cumulative
        // sum; for real keys that is 0..S as here, and padded keys are masked, so padded query
        // positions match too and every position is compared.
        let got_logits: Vec<f32> = logits.clone().inner().try_into_vec_as::<f32>().unwrap();
        let err = common::max_abs_diff(&got_logits, &want_logits);
        assert!(err <= 1e-4, "{}: logits max abs error {err}", dev.name);

        let (loss, _) = causal_lm_loss(logits, &labels);
        let got_loss: f32 = loss.clone().inner().into_scalar();
        let rel = ((got_loss - want_loss) / want_loss).abs();
        assert!(rel <= 1e-5, "{}: loss {got_loss} vs {want_loss} (relative {rel})", dev.name);

        let grads = loss.backward();
        let (checked, worst) = common::assert_gradients_match(&model, &grads, &expected, &dev.name);
        let grad_count = expected.names().filter(|n| n.starts_with("grad.")).count();
        assert_eq!(checked, grad_count, "{}: every parameter has a reference gradient", dev.name);
        eprintln!(
            "{}: logits max abs err {err:.2e}, loss {got_loss} vs {want_loss} (rel {rel:.2e}), {checked} gradients, worst rel L2 {:.2e} ({})",
            dev.name, worst.0, worst.1
        );
    }
}

#[test]
fn cached_decoding_matches_the_uncached_forward() {
    let common::Golden { ids, seq, .. } = common::golden("tiny-bloom");
    let (prefix, steps) = (8, 4);
    // The first prefix + steps tokens of both rows, all real.
    let rows: Vec<Vec<i64>> = (0..2).map(|r| ids[r * seq..r * seq + prefix + steps].to_vec()).collect();
    let tokens = |from: usize, to: usize| -> Vec<i64> { rows.iter().flat_map(|r| r[from..to].to_vec()).collect() };

    for dev in common::devices() {
        let device = dev.device.clone();
        let model = load(&device);
        let ids_t = |from: usize, to: usize| Tensor::<2, Int>::from_data(TensorData::new(tokens(from, to), [2, to - from]), &device);
        let last = |logits: Tensor<3>| -> Vec<f32> {
            let [b, s, v] = logits.dims();
            logits.narrow(1, s - 1, 1).reshape([b, v]).try_into_vec_as::<f32>().unwrap()
        };
        let mut cache = KvCache::new(model.h.len());
        let mask = attention_mask(None, 2, prefix, 0);
        let mut cached = model.forward(ids_t(0, prefix), Some(&mask), Some(&mut cache));
        let mut worst = 0f32;
        for end in prefix..=prefix + steps {
            if end > prefix {
                let mask = attention_mask(None, 2, 1, end - 1);
                cached = model.forward(ids_t(end - 1, end), Some(&mask), Some(&mut cache));
            }
            assert_eq!(cache.len(), end);
            let full = model.forward(ids_t(0, end), Some(&attention_mask(None, 2, end, 0)), None);
            let err = common::max_abs_diff(&last(cached.clone()), &last(full));
            assert!(err <= 1e-4, "{}: {end} tokens: cached vs uncached last logits differ by {err}", dev.name);
            worst = worst.max(err);
        }
        eprintln!("{}: cached decoding, worst last-position logits difference {worst:.2e}", dev.name);
    }
}

#[test]
fn an_untied_head_is_a_parameter_of_its_own_with_the_same_logits() {
    let device = ComputeDevice::cpu().device;
    let path = common::fixture("tiny-bloom").join("config.json");
    let tied = load(&device);
    let mut config = read_config(&path);
    config.tie_word_embeddings = false;
    let untied = load_with(config, &device);
    assert_eq!(untied.param_names().last().map(String::as_str), Some("lm_head.weight"));
    assert_eq!(untied.param_names().len(), tied.param_names().len() + 1);
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![4i64, 264, 18, 268, 222], [1, 5]), &device);
    let a: Vec<f32> = tied.forward(ids.clone(), None, None).try_into_vec_as::<f32>().unwrap();
    let b: Vec<f32> = untied.forward(ids, None, None).try_into_vec_as::<f32>().unwrap();
    assert_eq!(a, b);
}

#[test]
fn paper_bloomz_3b_full_fine_tuning_pflops_are_reproduced() {
    // paper-configs/README.md: batch 4 padded to 512 tokens, 5 epochs, 1 MAC = 1 FLOP; the paper's
    // figures are matched with full (not halved) causal attention.
    let config = read_config(&common::fixture("paper-configs").join("bloomz-3b.json"));
    let p = profile(&bloom_ops(&config), BatchShape { batch: 4, seq: 512, decoder_seq: None, head_tokens: None, grad_tokens: None }, false)
        .unwrap();
    for (dataset, steps, paper_pflops) in [("SciTLDR", 2490.0, 47.2), ("DialogSum", 15575.0, 294.8)] {
        let pflops = FlopsConvention::PaperMac.from_macs(p.t_full()) * steps / 1e15;
        eprintln!("BLOOMZ-3B {dataset}: {pflops:.2} PFLOPs vs paper {paper_pflops}");
        assert!((pflops / paper_pflops - 1.0).abs() < 0.005, "BLOOMZ-3B {dataset}: {pflops:.2} PFLOPs vs paper {paper_pflops}");
    }
}

#[test]
fn bad_configs_are_refused_naming_the_file() {
    let origin = "bad/config.json";
    let base = serde_json::json!({"model_type": "bloom", "hidden_size": 64, "n_layer": 2, "n_head": 4, "vocab_size": 512});
    let with = |patch: serde_json::Value| {
        let mut v = base.clone();
        for (k, x) in patch.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    };
    let bad = [
        with(serde_json::json!({"n_head": 5})),
        with(serde_json::json!({"pretraining_tp": 2, "slow_but_exact": true})),
        with(serde_json::json!({"n_head": null})),
        with(serde_json::json!({"model_type": "gpt2"})),
        with(serde_json::json!({"num_hidden_layers": 3})),
        with(serde_json::json!({"hidden_size": "wide"})),
        with(serde_json::json!({"n_layer": 0})),
    ];
    for raw in bad {
        let err = BloomConfig::from_value(raw.clone(), origin).expect_err(&raw.to_string()).to_string();
        assert!(err.contains(origin), "{raw}: {err}");
    }
    let err = BloomConfig::from_json_str("{", origin).unwrap_err().to_string();
    assert!(err.contains(origin), "{err}");

    // transformers' aliases, and tensor parallelism that does not change the arithmetic, are accepted.
    let aliases = serde_json::json!({"architectures": ["BloomForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 512, "pretraining_tp": 4, "slow_but_exact": false});
    let c = BloomConfig::from_value(aliases, origin).unwrap();
    assert_eq!((c.hidden_size, c.n_layer, c.n_head, c.head_dim()), (64, 2, 4, 16));
    assert!(c.tie_word_embeddings && !c.apply_residual_connection_post_layernorm);
    assert_eq!(c.layer_norm_epsilon, 1e-5);
}

/// The ALiBi paper's slopes (Press et al.): for n a power of two, the geometric sequence starting
/// at 2^(-8/n) with that ratio; otherwise those of the closest smaller power of two p, then every
/// other slope of the sequence for 2p.
fn paper_slopes(n: usize) -> Vec<f64> {
    let power_of_two = |n: usize| -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powi(i as i32)).collect()
    };
    if n.is_power_of_two() {
        return power_of_two(n);
    }
    let p = 2usize.pow((n as f64).log2().floor() as u32);
    let mut slopes = power_of_two(p);
    slopes.extend(power_of_two(2 * p).into_iter().step_by(2).take(n - p));
    slopes
}

#[test]
fn alibi_slopes_follow_the_paper() {
    for n in [4, 6, 12] {
        let got = alibi_slopes(n);
        let want = paper_slopes(n);
        assert_eq!(got.len(), n);
        for (h, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((*g as f64 / w - 1.0).abs() < 1e-6, "{n} heads, head {h}: {g} vs {w}");
        }
    }
    assert_eq!(alibi_slopes(6), [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]);
}

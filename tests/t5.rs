//! The T5 implementation against HF transformers (tiny-t5 fixture): logits, loss and every
//! parameter's gradient on the CPU and on wgpu; cached decoding; the config-derived op graph and the
//! paper's FLAN-T5-XL FLOPs; bad configs.

mod common;

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use greentrainer::error::{Error, Result};
use greentrainer::io::safetensors_file::SafetensorsFiles;
use greentrainer::model::loss::seq2seq_lm_loss;
use greentrainer::model::params::with_trainable;
use greentrainer::model::t5::t5_ops;
use greentrainer::model::t5::{T5, T5Cache, T5Config};
use greentrainer::model::{Linears, Parameters};
use greentrainer::profile::t5::paper_accounting;
use greentrainer::profile::{BatchShape, OpKind, ProfileError, Stream, profile};

fn config_at(path: &Path) -> Result<T5Config> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    T5Config::from_json_str(&text, &path.display().to_string())
}

/// Loads a model folder with `config` (the folder's own when `None`).
fn load(dir: &Path, config: Option<T5Config>, device: &Device) -> Result<T5> {
    let config = match config {
        Some(c) => c,
        None => config_at(&dir.join("config.json"))?,
    };
    let files = SafetensorsFiles::open_dir(dir)?;
    T5::load(config, device, &mut |name, shape| {
        let path = files.path_of(name).unwrap_or(dir).to_path_buf();
        if !files.contains(name) {
            return Err(Error::MissingTensor { path, tensor: name.into() });
        }
        let (found, values) = files.read_f32(name)?;
        if found != shape {
            return Err(Error::tensor(path, name, format!("shape {found:?}, config implies {shape:?}")));
        }
        Ok(values)
    })
}

fn int_tensor(values: Vec<i64>, shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[test]
fn tiny_t5_matches_transformers() {
    let dir = common::fixture("tiny-t5");
    let x = common::golden("tiny-t5");
    let (expected, want_logits, want_loss, padding) = (&x.files, &x.logits, x.loss, x.padding());

    for dev in common::devices() {
        let device = dev.device.clone();
        let loaded = load(&dir, None, &device).unwrap();
        assert!(loaded.lm_head.is_none(), "tiny-t5 ties its head to shared.weight");
        let model = with_trainable(&loaded, |_| true);
        let decoder_ids = model.shift_right(&x.labels, x.seq);
        let shape = [x.batch, x.seq];
        let logits = model.forward(int_tensor(x.ids.clone(), shape, &device), Some(&padding), int_tensor(decoder_ids, shape, &device));
        let got_logits: Vec<f32> = logits.clone().inner().try_into_vec_as::<f32>().unwrap();
        let err = common::max_abs_diff(&got_logits, want_logits);
        assert!(err <= 1e-4, "{}: logits max abs error {err}", dev.name);

        let (loss, _) = seq2seq_lm_loss(logits, &x.labels);
        let got_loss: f32 = loss.clone().inner().into_scalar();
        let rel = ((got_loss - want_loss) / want_loss).abs();
        assert!(rel <= 1e-5, "{}: loss {got_loss} vs {want_loss} (relative {rel})", dev.name);

        let grads = loss.backward();
        let (checked, worst) = common::assert_gradients_match(&model, &grads, expected, &dev.name);
        assert_eq!(checked, expected.names().filter(|n| n.starts_with("grad.")).count());
        eprintln!(
            "{}: logits max abs err {err:.2e}, loss {got_loss} (want {want_loss}, rel {rel:.2e}), {checked} gradients, worst rel L2 {:.2e} ({})",
            dev.name, worst.0, worst.1
        );
    }
}

#[test]
fn cached_decoding_equals_uncached() {
    let dir = common::fixture("tiny-t5");
    let x = common::golden("tiny-t5");
    let padding = x.padding();
    for dev in common::devices() {
        let device = dev.device.clone();
        let model = load(&dir, None, &device).unwrap();
        let encoder_out = model.encode(int_tensor(x.ids.clone(), [x.batch, x.seq], &device), Some(&padding));
        let decoder_ids = model.shift_right(&x.labels, x.seq);
        let prefix = |n: usize| -> Vec<i64> { decoder_ids.chunks(x.seq).flat_map(|row| row[..n].iter().copied()).collect() };
        let last_logits = |logits: Tensor<3>| -> Vec<f32> {
            let [b, t, v] = logits.dims();
            logits.narrow(1, t - 1, 1).reshape([b, v]).try_into_vec_as::<f32>().unwrap()
        };
        let steps = 5;
        let mut cache = T5Cache::new();
        for n in 1..=steps {
            let full = model.decode(&encoder_out, Some(&padding), int_tensor(prefix(n), [x.batch, n], &device), None);
            let step: Vec<i64> = decoder_ids.chunks(x.seq).map(|row| row[n - 1]).collect();
            let cached = model.decode(&encoder_out, Some(&padding), int_tensor(step, [x.batch, 1], &device), Some(&mut cache));
            let err = common::max_abs_diff(&last_logits(cached), &last_logits(full));
            assert!(err <= 1e-4, "{}: step {n}: cached vs uncached max abs error {err}", dev.name);
        }
        assert_eq!(cache.len(), steps);

        // Swapping the two rows of the cache swaps the next step's rows.
        cache.select_rows(Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &device), &[1, 0]);
        let next: Vec<i64> = decoder_ids.chunks(x.seq).map(|row| row[steps]).collect();
        let swapped = vec![next[1], next[0]];
        let cached = last_logits(model.decode(&encoder_out, None, int_tensor(swapped, [2, 1], &device), Some(&mut cache)));
        let full = last_logits(model.decode(&encoder_out, Some(&padding), int_tensor(prefix(steps + 1), [2, steps + 1], &device), None));
        let v = model.config.vocab_size;
        let full_swapped: Vec<f32> = full[v..].iter().chain(&full[..v]).copied().collect();
        let err = common::max_abs_diff(&cached, &full_swapped);
        assert!(err <= 1e-4, "{}: after select_rows: max abs error {err}", dev.name);
    }
}

#[test]
fn op_graph_from_the_config_equals_the_loaded_models() {
    let dir = common::fixture("tiny-t5");
    let model = load(&dir, None, &common::devices()[0].device).unwrap();
    let ops = model.op_graph();
    assert_eq!(ops, t5_ops(&model.config));

    // Linears come in the op graph's order; every parameter is a node, the tied head counted once.
    let op_linears: Vec<String> =
        ops.iter().filter(|o| matches!(o.kind, OpKind::Linear { .. })).map(|o| o.name.trim_end_matches(".weight").to_string()).collect();
    let linears: Vec<String> = model.linears().into_iter().map(|l| l.name).collect();
    assert_eq!(op_linears, linears);
    let shape = BatchShape { batch: 2, seq: 20, decoder_seq: Some(7), head_tokens: None, grad_tokens: None };
    let p = profile(&ops, shape, false).unwrap();
    assert_eq!(p.nodes.iter().map(|n| n.param_numel).sum::<usize>(), model.num_params());
    let mut names = model.param_names();
    names.sort();
    let mut selectable: Vec<String> = p.nodes.iter().filter(|n| n.selectable).map(|n| n.name.clone()).collect();
    selectable.sort();
    assert_eq!(names, selectable);

    // Decoder ops are charged the decoder length, cross-attention the encoder length as keys.
    let c = &model.config;
    let node = |name: &str| p.nodes.iter().find(|n| n.name == name).unwrap();
    let (d, inner) = (c.d_model as f64, c.inner_dim() as f64);
    assert_eq!(node("encoder.block.1.layer.0.SelfAttention.q.weight").t_fp, 40.0 * d * inner);
    assert_eq!(node("decoder.block.1.layer.0.SelfAttention.q.weight").t_fp, 14.0 * d * inner);
    assert_eq!(node("decoder.block.1.layer.1.EncDecAttention.k.weight").t_fp, 40.0 * d * inner);
    assert_eq!(node("decoder.block.1.layer.0.SelfAttention.core").t_fp, 2.0 * 14.0 * 7.0 * inner);
    assert_eq!(node("decoder.block.1.layer.1.EncDecAttention.core").t_fp, 2.0 * 14.0 * 20.0 * inner);
    assert_eq!(node("encoder.block.0.layer.0.SelfAttention.core").t_dy, 4.0 * 40.0 * 20.0 * inner);

    // Decoder ops need a decoder length.
    let err = profile(&ops, BatchShape { decoder_seq: None, ..shape }, false).unwrap_err();
    assert!(matches!(err, ProfileError::NoDecoderLength { .. }), "{err}");
    assert!(ops.iter().any(|o| o.stream == Stream::Decoder));
}

#[test]
fn paper_flan_t5_xl_full_fine_tuning_pflops_are_reproduced() {
    // tests/fixtures/paper-configs/README.md: batch 4, inputs padded to 512 tokens, decoder length 64,
    // 5 epochs, PFLOPs counted as MACs, full (not halved) causal attention.
    let config = config_at(&common::fixture("paper-configs").join("flan-t5-xl.json")).unwrap();
    let shape = BatchShape { batch: 4, seq: 512, decoder_seq: Some(64), head_tokens: None, grad_tokens: None };
    let paper = profile(&paper_accounting(t5_ops(&config)), shape, false).unwrap();
    for (name, steps, want) in [("SciTLDR", 2490.0, 21.7), ("DialogSum", 15575.0, 135.7)] {
        let pflops = paper.t_full() * steps / 1e15;
        assert!((pflops / want - 1.0).abs() < 0.01, "FLAN-T5-XL {name}: {pflops:.2} PFLOPs vs paper {want}");
        eprintln!("FLAN-T5-XL {name}: {pflops:.2} PFLOPs (paper {want})");
    }
    // The engine charges the cross-attention keys/values at the encoder length, where they run:
    // three times (forward, dx, dW) 2 d inner MACs per layer for each of the 4 x (512 - 64) extra tokens.
    let engine = profile(&t5_ops(&config), shape, false).unwrap();
    let extra = 3.0 * 2.0 * (config.d_model * config.inner_dim() * config.num_decoder_layers) as f64 * (4.0 * 448.0);
    assert!((engine.t_full() - paper.t_full() - extra).abs() < 1e-9 * engine.t_full());
    eprintln!("FLAN-T5-XL SciTLDR as the engine counts it: {:.2} PFLOPs", engine.t_full() * 2490.0 / 1e15);
}

#[test]
fn bad_configs_are_refused_naming_the_file() {
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("tiny-t5").join("config.json")).unwrap()).unwrap();
    let origin = "/models/bad-t5/config.json";
    let with = |key: &str, value: serde_json::Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("d_model");
    let cases = [
        ("gated-silu", with("feed_forward_proj", "gated-silu".into())),
        ("model_type", with("model_type", "bart".into())),
        ("d_model", missing),
        ("must be > 0", with("num_heads", 0.into())),
        ("relative_attention_num_buckets", with("relative_attention_num_buckets", 2.into())),
        ("eos_token_id", with("eos_token_id", "end".into())),
    ];
    for (what, raw) in cases {
        let err = T5Config::from_value(raw, origin).unwrap_err().to_string();
        assert!(err.contains(origin) && err.contains(what), "{what}: {err}");
    }
    assert!(T5Config::from_json_str("{ not json", origin).unwrap_err().to_string().contains(origin));

    // An untied head must be in the checkpoint; tiny-t5's is not.
    let dir = common::fixture("tiny-t5");
    let untied = T5Config::from_value(with("tie_word_embeddings", false.into()), origin).unwrap();
    let err = load(&dir, Some(untied), &common::devices()[0].device).unwrap_err();
    assert!(matches!(&err, Error::MissingTensor { tensor, .. } if tensor == "lm_head.weight"), "{err}");
}

#[test]
fn original_t5_relu_feed_forward_and_output_scaling() {
    // Original T5: ReLU feed-forward (`wi`, `wo`), tied head, and (no `scale_decoder_outputs` key, so
    // from `tie_word_embeddings`) the decoder output scaled by d_model^-0.5.
    let mut raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("tiny-t5").join("config.json")).unwrap()).unwrap();
    raw["feed_forward_proj"] = "relu".into();
    raw.as_object_mut().unwrap().remove("scale_decoder_outputs");
    let scaled = T5Config::from_value(raw.clone(), "t5-relu/config.json").unwrap();
    assert!(scaled.scale_decoder_outputs && scaled.tie_word_embeddings);
    let device = common::devices()[0].device.clone();
    let build = |config: T5Config| {
        let mut asked = Vec::new();
        let model = T5::load(config, &device, &mut |name, shape| {
            if name == "lm_head.weight" {
                return Err(Error::MissingTensor { path: "t5-relu".into(), tensor: name.into() });
            }
            asked.push(name.to_string());
            let n: usize = shape.iter().product();
            Ok((0..n).map(|i| ((i * 7919 + asked.len() * 104729) % 1000) as f32 / 5000.0 - 0.1).collect())
        })
        .unwrap();
        (model, asked)
    };
    let (model, asked) = build(scaled.clone());
    assert!(asked.contains(&"decoder.block.1.layer.2.DenseReluDense.wi.weight".to_string()));
    assert_eq!(asked, model.param_names());
    assert_eq!(model.op_graph(), t5_ops(&model.config));

    let ids = || int_tensor(vec![5, 9, 13, 2, 0, 1], [2, 3], &device);
    let logits = model.forward(ids(), Some(&[1, 1, 1, 1, 1, 0]), ids());
    assert_eq!(logits.dims(), [2, 3, 512]);
    let got: Vec<f32> = logits.try_into_vec_as::<f32>().unwrap();
    assert!(got.iter().all(|v| v.is_finite()));

    let (unscaled, _) = build(T5Config { scale_decoder_outputs: false, ..scaled });
    let plain: Vec<f32> = unscaled.forward(ids(), Some(&[1, 1, 1, 1, 1, 0]), ids()).try_into_vec_as::<f32>().unwrap();
    let rescaled: Vec<f32> = plain.iter().map(|v| v / 8.0).collect();
    assert!(common::max_abs_diff(&got, &rescaled) <= 1e-5);
}

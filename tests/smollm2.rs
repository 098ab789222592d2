//! The real pretrained model (SmolLM2-135M-Instruct, Q4_1 GGUF) against transformers' outputs in
//! tests/fixtures/smollm2/expected.json: top-10 logits, log-sum-exp, the DialogSum dev0 loss
//! and greedy decoding.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use greentrainer::device::ComputeDevice;
use greentrainer::eval::generate::{GenerateOptions, generate};
use greentrainer::io::load_model;
use greentrainer::model::{attention_mask, loss::causal_lm_loss};
use serde_json::Value;

fn expected() -> Value {
    let text = std::fs::read_to_string(common::fixture("smollm2/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn smollm2_matches_transformers() {
    let Some(path) = common::smollm2_gguf() else { return };
    let want = expected();
    let dev = ComputeDevice::cpu();
    let loaded = load_model(&path, &dev.device).unwrap();
    let device = &dev.device;

    let prompt = loaded.tokenizer.encode(want["prompt"].as_str().unwrap(), false).unwrap();
    assert_eq!(prompt.get_ids(), ids(&want["prompt_ids"]).as_slice());
    let n = prompt.get_ids().len();
    let input: Vec<i64> = prompt.get_ids().iter().map(|&t| t as i64).collect();
    let logits = loaded
        .model
        .forward(Tensor::<2, Int>::from_data(TensorData::new(input, [1, n]), device), Some(&attention_mask(None, 1, n, 0)), None)
        .unwrap();
    let vocab = logits.dims()[2];
    let last: Vec<f32> = logits.narrow(1, n - 1, 1).reshape([vocab]).try_into_vec_as::<f32>().unwrap();
    for entry in want["last_logits_top10"].as_array().unwrap() {
        let id = entry["id"].as_u64().unwrap() as usize;
        let expected = entry["logit"].as_f64().unwrap() as f32;
        assert!((last[id] - expected).abs() <= 2e-3, "logit of {} ({id}): {} vs {expected}", entry["token"], last[id]);
    }
    let max = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + last.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
    assert!((lse - want["last_logsumexp"].as_f64().unwrap() as f32).abs() <= 2e-3, "logsumexp {lse}");

    let dev0 = &want["dialogsum_dev0"];
    let enc = loaded.tokenizer.encode(dev0["text"].as_str().unwrap(), false).unwrap();
    let tokens = enc.get_ids();
    assert_eq!(tokens.len() as u64, dev0["n_tokens"].as_u64().unwrap());
    let n_prompt = dev0["n_prompt_tokens"].as_u64().unwrap() as usize;
    let labels: Vec<i64> = tokens.iter().enumerate().map(|(i, &t)| if i < n_prompt { -100 } else { t as i64 }).collect();
    let s = tokens.len();
    let input: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let logits = loaded
        .model
        .forward(Tensor::<2, Int>::from_data(TensorData::new(input, [1, s]), device), Some(&attention_mask(None, 1, s, 0)), None)
        .unwrap();
    let (loss, _) = causal_lm_loss(logits, &labels);
    let loss: f32 = loss.into_scalar();
    let want_loss = dev0["loss"].as_f64().unwrap() as f32;
    assert!((loss - want_loss).abs() <= 1e-3, "DialogSum dev0 loss {loss} vs {want_loss}");

    let greedy = ids(&want["greedy16_ids"]);
    let out = generate(&loaded.model, prompt.get_ids(), &GenerateOptions::greedy(greedy.len() - n));
    assert_eq!(out, greedy[n..], "greedy ids");
    assert_eq!(loaded.tokenizer.decode(&out, false).unwrap(), want["greedy16_text"].as_str().unwrap());
}

//! The Llama implementation against HF transformers (tiny-llama fixture): logits, loss, every
//! parameter's gradient, and greedy generation, on the CPU and on wgpu.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use greentrainer::io::load_model;
use greentrainer::model::{BatchInput, Parameters, attention_mask, loss::causal_lm_loss, params::with_trainable};

#[test]
fn tiny_llama_matches_transformers() {
    let dir = common::fixture("tiny-llama");
    let common::Golden { files: expected, batch: b, seq: s, ids, mask, labels, logits: want_logits, loss: want_loss } =
        common::golden("tiny-llama");

    for dev in common::devices() {
        let loaded = load_model(&dir, &dev.device).unwrap();
        let model = with_trainable(&loaded.model, |_| true);
        let device = dev.device.clone();
        let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, s]), &device);
        let padding: Vec<u32> = mask.iter().map(|&m| m as u32).collect();
        let mask_t = attention_mask(Some(&padding), b, s, 0);
        let logits = model.forward(ids_t, Some(&mask_t), None).unwrap();
        let got_logits: Vec<f32> = logits.clone().inner().try_into_vec_as::<f32>().unwrap();
        let err = common::max_abs_diff(&got_logits, &want_logits);
        assert!(err <= 1e-4, "{}: logits max abs error {err}", dev.name);

        let (loss, _) = causal_lm_loss(logits, &labels);
        let got_loss: f32 = loss.clone().inner().into_scalar();
        let rel = ((got_loss - want_loss) / want_loss).abs();
        assert!(rel <= 1e-5, "{}: loss {got_loss} vs {want_loss} (relative {rel})", dev.name);

        let grads = loss.backward();
        let (checked, _) = common::assert_gradients_match(&model, &grads, &expected, &dev.name);
        assert_eq!(checked, loaded.model.param_names().len());
        eprintln!("{}: logits err {err:.2e}, loss {got_loss} (want {want_loss}), {checked} gradients ok", dev.name);

        // Training's path: the head and the loss in chunks, no logits tensor.
        let input = BatchInput::Causal { ids: Tensor::from_data(TensorData::new(ids.clone(), [b, s]), &device), mask: mask_t };
        let (loss, _) = model.train_loss(&input, &labels).unwrap();
        let got_loss: f32 = loss.clone().inner().into_scalar();
        assert!(((got_loss - want_loss) / want_loss).abs() <= 1e-5, "{}: training loss {got_loss} vs {want_loss}", dev.name);
        let (checked, _) = common::assert_gradients_match(&model, &loss.backward(), &expected, &format!("{} (train_loss)", dev.name));
        assert_eq!(checked, loaded.model.param_names().len());
    }
}

#[test]
fn tiny_llama_greedy_generation_matches_transformers() {
    use greentrainer::eval::generate::{GenerateOptions, generate};
    let dir = common::fixture("tiny-llama");
    let expected = common::golden("tiny-llama").files;
    let tokens = |name: &str| -> Vec<u32> { expected.read_i64(name).unwrap().1.iter().map(|&t| t as u32).collect() };
    let (prompt, want) = (tokens("gen.prompt"), tokens("gen.greedy"));
    for dev in common::devices() {
        let loaded = load_model(&dir, &dev.device).unwrap();
        for use_cache in [true, false] {
            let opts = GenerateOptions { use_cache, ..GenerateOptions::greedy(want.len() - prompt.len()) };
            let out = generate(&loaded.model, &prompt, &opts);
            assert_eq!(out, want[prompt.len()..], "{} (cache {use_cache})", dev.name);
        }
    }
}

//! The training loss that runs the LM head in chunks of tokens (`head_cross_entropy`) against the
//! reference that builds the whole logits tensor and takes its log-softmax: the same loss and the
//! same gradients for the hidden states and the head, on odd chunk sizes, on the CPU and on wgpu.

mod common;

use burn::tensor::{Tensor, TensorData};
use greentrainer::model::loss::{
    IGNORE_INDEX, causal_lm_loss, causal_targets, head_cross_entropy, head_cross_entropy_chunked, seq2seq_lm_loss,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn random(rng: &mut StdRng, shape: [usize; 2], device: &burn::tensor::Device) -> Tensor<2> {
    let v: Vec<f32> = (0..shape[0] * shape[1]).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

#[test]
fn chunked_head_loss_equals_the_full_logits_reference_in_value_and_gradients() {
    let mut rng = StdRng::seed_from_u64(21);
    let (n, d, v) = (37, 19, 101);
    for dev in common::devices() {
        let device = &dev.device;
        let (hidden, head) = (random(&mut rng, [n, d], device), random(&mut rng, [v, d], device));
        // Ignored positions and a label past the vocabulary are not counted.
        let targets: Vec<i64> = (0..n)
            .map(|i| match i % 7 {
                3 => IGNORE_INDEX,
                5 if i == 12 => v as i64 + 4,
                _ => rng.random_range(0..v as i64),
            })
            .collect();
        let (h_ref, w_ref) = (hidden.clone().autodiff().require_grad(), head.clone().autodiff().require_grad());
        let logits = h_ref.clone().matmul(w_ref.clone().transpose()).reshape([1, n, v]);
        let (want, want_count) = seq2seq_lm_loss(logits, &targets);
        let want_grads = want.clone().backward();
        let want_loss: f32 = want.inner().into_scalar();
        let (want_dh, want_dw) = (host(h_ref.grad(&want_grads).unwrap()), host(w_ref.grad(&want_grads).unwrap()));
        // One chunk, and odd chunks that leave a remainder (each shape compiles its own kernels
        // on wgpu, so few of them).
        for rows in [n, 8] {
            // Each side trained alone, and both (the tied-embedding case trains both).
            for (train_h, train_w) in [(true, true), (true, false), (false, true)] {
                let h = if train_h { hidden.clone().autodiff().require_grad() } else { hidden.clone().autodiff() };
                let w = if train_w { head.clone().autodiff().require_grad() } else { head.clone().autodiff() };
                let (loss, count) = head_cross_entropy_chunked(h.clone(), w.clone(), &targets, rows);
                let what = format!("{} rows={rows} train hidden={train_h} head={train_w}", dev.name);
                assert_eq!(count, want_count, "{what}: tokens counted");
                let grads = loss.clone().backward();
                let got: f32 = loss.inner().into_scalar();
                assert!((got - want_loss).abs() <= 1e-5 * want_loss.abs(), "{what}: loss {got} vs {want_loss}");
                if train_h {
                    let err = common::max_abs_diff(&host(h.grad(&grads).unwrap()), &want_dh);
                    assert!(err < 1e-6, "{what}: hidden gradient off by {err}");
                }
                if train_w {
                    let err = common::max_abs_diff(&host(w.grad(&grads).unwrap()), &want_dw);
                    assert!(err < 1e-6, "{what}: head gradient off by {err}");
                }
            }
        }
    }
}

#[test]
fn causal_targets_shift_labels_within_each_row() {
    let labels = [10, 11, 12, 20, 21, IGNORE_INDEX];
    assert_eq!(causal_targets(&labels, 3), vec![11, 12, IGNORE_INDEX, 21, IGNORE_INDEX, IGNORE_INDEX]);
    // The same loss as the reference, which narrows the logits instead.
    let device = burn::tensor::Device::flex();
    let mut rng = StdRng::seed_from_u64(2);
    let (hidden, head) = (random(&mut rng, [6, 4], &device), random(&mut rng, [30, 4], &device));
    let logits = hidden.clone().matmul(head.clone().transpose()).reshape([2, 3, 30]);
    let want: f32 = causal_lm_loss(logits, &labels).0.into_scalar();
    let got: f32 = head_cross_entropy_chunked(hidden, head, &causal_targets(&labels, 3), 4).0.into_scalar();
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

#[test]
fn only_positions_with_a_target_reach_the_head_and_the_loss_is_unchanged() {
    let mut rng = StdRng::seed_from_u64(8);
    let (n, d, v) = (23, 7, 41);
    for dev in common::devices() {
        let device = &dev.device;
        let (hidden, head) = (random(&mut rng, [n, d], device), random(&mut rng, [v, d], device));
        // A prompt (ignored), then answer tokens, then padding (ignored).
        let targets: Vec<i64> = (0..n).map(|i| if (6..17).contains(&i) { rng.random_range(0..v as i64) } else { IGNORE_INDEX }).collect();
        let (h_ref, w_ref) = (hidden.clone().autodiff().require_grad(), head.clone().autodiff().require_grad());
        let logits = h_ref.clone().matmul(w_ref.clone().transpose()).reshape([1, n, v]);
        let (want, _) = seq2seq_lm_loss(logits, &targets);
        let want_grads = want.clone().backward();
        let (h, w) = (hidden.clone().autodiff().require_grad(), head.clone().autodiff().require_grad());
        let (loss, count) = head_cross_entropy(h.clone(), w.clone(), &targets);
        assert_eq!(count, 11, "{}", dev.name);
        let grads = loss.clone().backward();
        let (got, want): (f32, f32) = (loss.inner().into_scalar(), want.inner().into_scalar());
        assert!((got - want).abs() <= 1e-5 * want.abs(), "{}: loss {got} vs {want}", dev.name);
        let dh = host(h.grad(&grads).unwrap());
        assert!(common::max_abs_diff(&dh, &host(h_ref.grad(&want_grads).unwrap())) < 1e-6, "{}: hidden gradient", dev.name);
        assert!(dh[..6 * d].iter().chain(&dh[17 * d..]).all(|&g| g == 0.0), "{}: an ignored position got a gradient", dev.name);
        let dw_err = common::max_abs_diff(&host(w.grad(&grads).unwrap()), &host(w_ref.grad(&want_grads).unwrap()));
        assert!(dw_err < 1e-6, "{}: head gradient", dev.name);
        // No target at all: a zero loss over zero tokens.
        let (none, count) = head_cross_entropy(hidden.clone().autodiff().require_grad(), head.clone(), &vec![IGNORE_INDEX; n]);
        assert_eq!((none.inner().into_scalar::<f32>(), count), (0.0, 0), "{}", dev.name);
    }
}

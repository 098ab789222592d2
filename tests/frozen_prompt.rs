//! A frozen prompt prefix (`DeviceBatch::freeze_prompt`, `Model::train_loss_after_prefix`) on
//! the tiny-llama fixture: where the prefix runs through the tracked model the split pass is the
//! whole pass, and where it runs through the frozen model the loss stays and only the gradient
//! that flows through the prefix's keys and values is lost.

mod common;

use greentrainer::io::load_model;
use greentrainer::model::{Parameters, params::with_trainable};

/// Two rows of 8 on tiny-llama: a 4-token prompt and a 3-token answer, then a 3-token prompt, a
/// 2-token answer and 3 pads. The earliest position whose output has a target is 2 (it predicts
/// the second row's first answer token), so the rows share a 2-token frozen prefix.
fn prompt_batch() -> greentrainer::data::Batch {
    let ignore = greentrainer::data::IGNORE_INDEX;
    greentrainer::data::Batch {
        input_ids: vec![5, 17, 42, 9, 300, 301, 302, 0, 7, 8, 99, 400, 401, 1, 1, 1],
        attention_mask: vec![1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0],
        labels: vec![ignore, ignore, ignore, ignore, 300, 301, 302, ignore, ignore, ignore, ignore, 400, 401, ignore, ignore, ignore],
        batch: 2,
        seq: 8,
        real_tokens: 12,
        target_tokens: 5,
    }
}

/// Every parameter's gradient, flattened, by name.
fn gradients(model: &impl Parameters, grads: &burn::tensor::Gradients) -> std::collections::BTreeMap<String, Vec<f32>> {
    let mut out = std::collections::BTreeMap::new();
    model.visit(&mut |name, p| {
        out.insert(name.to_string(), p.grad_flat(grads).unwrap().try_into_vec_as().unwrap());
    });
    out
}

/// The whole pass's loss and gradients on `prompt_batch`, and the split pass's with the prefix run
/// through the tracked model itself: the cache carries the gradient back, so the two are the
/// same when positions, masks and targets line up.
fn assert_split_is_whole(fixture: &str) {
    use greentrainer::train::batch::DeviceBatch;
    for dev in common::devices() {
        let loaded = load_model(&common::fixture(fixture), &dev.device).unwrap();
        let batch = DeviceBatch::new(&prompt_batch(), &loaded.model);
        let trainable = with_trainable(&loaded.model, |_| true);
        let (whole, _) = trainable.train_loss(&batch.input, &batch.labels).unwrap();
        let whole_loss: f32 = whole.clone().inner().into_scalar();
        let exact = gradients(&trainable, &whole.backward());
        let (split, _) = trainable.train_loss_after_prefix(&trainable, &batch.input, &batch.labels, 2).unwrap();
        let split_loss: f32 = split.clone().inner().into_scalar();
        assert!((split_loss - whole_loss).abs() <= 1e-5 * whole_loss.abs(), "{fixture} on {}: {split_loss} vs {whole_loss}", dev.name);
        for (name, got) in gradients(&trainable, &split.backward()) {
            // A key bias shifts every score of a query alike, which softmax ignores: its exact
            // gradient is rounding noise, so it is compared absolutely.
            let (e, abs) = (common::rel_l2(&got, &exact[&name]), common::max_abs_diff(&got, &exact[&name]));
            assert!(
                e <= 1e-4 || abs <= 1e-7,
                "{fixture} on {}: split pass, gradient of {name}: relative L2 error {e}, max abs {abs}",
                dev.name
            );
        }
    }
}

#[test]
fn opt_and_bloom_split_their_passes_at_the_prefix_as_llama_does() {
    // OPT's learned positions and BLOOM's ALiBi both continue after the cached prefix.
    assert_split_is_whole("tiny-opt");
    assert_split_is_whole("tiny-bloom");
}

#[test]
fn a_frozen_prompt_prefix_keeps_the_loss_and_the_answer_path_gradients() {
    use greentrainer::train::batch::DeviceBatch;
    assert_split_is_whole("tiny-llama");
    let dir = common::fixture("tiny-llama");
    for dev in common::devices() {
        let loaded = load_model(&dir, &dev.device).unwrap();
        let batch = DeviceBatch::new(&prompt_batch(), &loaded.model);
        let frozen = batch.clone().freeze_prompt();
        assert_eq!(frozen.frozen_prefix, 2);
        assert_eq!(frozen.shape.grad_tokens, Some(2 * 6));

        let trainable = with_trainable(&loaded.model, |_| true);
        let (whole, _) = trainable.train_loss(&batch.input, &batch.labels).unwrap();
        let whole_loss: f32 = whole.clone().inner().into_scalar();
        let exact = gradients(&trainable, &whole.backward());

        // The prefix run through the frozen model: the same loss; the top block's MLP, its output
        // projection and the final norm never see the prefix's keys and values and keep their
        // gradients, every key and value projection loses the prefix's share.
        let (cut, _) = trainable.train_loss_after_prefix(&loaded.model, &batch.input, &batch.labels, 2).unwrap();
        let cut_loss: f32 = cut.clone().inner().into_scalar();
        assert!((cut_loss - whole_loss).abs() <= 1e-5 * whole_loss.abs(), "{}: {cut_loss} vs {whole_loss}", dev.name);
        for (name, got) in gradients(&trainable, &cut.backward()) {
            let e = common::rel_l2(&got, &exact[&name]);
            let untouched =
                ["model.layers.1.mlp.", "model.layers.1.post_attention_layernorm", "model.layers.1.self_attn.o_proj", "model.norm"]
                    .iter()
                    .any(|p| name.starts_with(p));
            if untouched {
                assert!(e <= 1e-4, "{}: {name} should keep its gradient, relative L2 error {e}", dev.name);
            } else if name.contains("k_proj") || name.contains("v_proj") {
                assert!(e > 1e-3, "{}: {name} should lose the prefix's share, relative L2 error only {e}", dev.name);
            }
        }
    }
}

#[test]
fn the_planned_share_follows_batches_grouped_by_length() {
    use greentrainer::train::batch::frozen_share;
    // Sorted by length: [(2, 5), (3, 8)] -> 8 positions from 1 on: 7 of 8 each;
    // [(10, 12), (9, 12)] -> 12 positions from 8 on: 4 of 12 each. (14 + 8) / (16 + 24).
    let share = frozen_share(&[(3, 8), (10, 12), (2, 5), (9, 12)], 2);
    assert!((share - 22.0 / 40.0).abs() < 1e-12, "{share}");
    assert_eq!(frozen_share(&[], 4), 1.0);
    // One row alone: everything after its prompt's last token.
    assert!((frozen_share(&[(6, 10)], 4) - 0.5).abs() < 1e-12);
}

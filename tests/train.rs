//! Selective training on the tiny Llama: what is frozen stays bit-identical, what is selected
//! changes, gradients cover exactly the selection, importance scoring leaves no trace, and a
//! resumed run reproduces the uninterrupted loss curve.

mod common;

use greentrainer::device::ComputeDevice;
use greentrainer::model::Parameters;
use greentrainer::train::batch::DeviceBatch;
use greentrainer::train::optim::{AdamW, AdamWConfig};
use greentrainer::train::step::forward_backward;
use greentrainer::train::{Event, MethodKind, RunControl, TrainConfig, Trainer};

fn config(method: MethodKind, out: &std::path::Path) -> TrainConfig {
    TrainConfig {
        model: common::fixture("tiny-llama"),
        data: common::demo_train(),
        output: out.to_path_buf(),
        method,
        rho: 0.5,
        top_k: 1,
        epochs: 0,
        max_steps: 4,
        batch_size: 2,
        max_len: 48,
        lr: 1e-3,
        save_model: false,
        ..TrainConfig::default()
    }
}

/// Runs `config` on the CPU, cancelling once `cancel_on` holds for an event.
fn run(config: TrainConfig, resume: bool, cancel_on: Option<&dyn Fn(&Event) -> bool>) -> (Trainer, Vec<Event>, Vec<f64>) {
    let mut trainer = Trainer::prepare(config, ComputeDevice::cpu()).unwrap();
    let control = RunControl::default();
    let mut events = Vec::new();
    let outcome = trainer
        .run(
            &mut |e: &Event| {
                if cancel_on.is_some_and(|on| on(e)) {
                    control.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                events.push(e.clone());
            },
            &control,
            resume,
        )
        .unwrap();
    (trainer, events, outcome.losses)
}

#[test]
fn frozen_tensors_are_untouched_and_selected_ones_change() {
    for method in [MethodKind::TopK, MethodKind::Greentrainer] {
        let dir = tempfile::tempdir().unwrap();
        let before = common::param_snapshot(&Trainer::prepare(config(method, dir.path()), ComputeDevice::cpu()).unwrap().loaded.model);
        let (trainer, events, losses) = run(config(method, dir.path()), false, None);
        assert_eq!(losses.len(), 4);
        let selected: Vec<String> = events
            .iter()
            .find_map(|e| match e {
                Event::Selection { selected, .. } => Some(selected.clone()),
                _ => None,
            })
            .expect("a selection event");
        assert!(!selected.is_empty(), "{method:?} selected nothing");
        let after = common::param_snapshot(&trainer.loaded.model);
        for (name, values) in &before {
            let same = after[name] == *values;
            assert_eq!(same, !selected.contains(name), "{method:?}: {name} selected={} but unchanged={same}", selected.contains(name));
        }
        if method == MethodKind::TopK {
            assert!(selected.iter().all(|n| n.starts_with("model.layers.1.") || n == "model.norm.weight"), "{selected:?}");
        }
    }
}

#[test]
fn gradients_cover_exactly_the_selection_and_scoring_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer::prepare(config(MethodKind::Greentrainer, dir.path()), ComputeDevice::cpu()).unwrap();
    let model = trainer.loaded.model.clone();
    let data = &trainer.examples[..2];
    let batch = greentrainer::data::pad_batch(&data.iter().collect::<Vec<_>>(), 1);
    let batch = DeviceBatch::new(&batch, &model);
    let wanted = ["model.layers.1.mlp.down_proj.weight", "model.layers.1.post_attention_layernorm.weight", "model.norm.weight"];
    let pass = forward_backward(&model, &|n| wanted.contains(&n), &batch).unwrap();
    assert_eq!(pass.grads.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut w = wanted.to_vec();
        w.sort();
        w
    });

    // Importance takes a real optimizer step on copies: weights and optimizer state are unchanged.
    let mut optimizer = AdamW::new(AdamWConfig::default());
    let mut warm = model.clone();
    optimizer.step(&mut warm, &pass.grads, 1e-3, 1.0);
    let weights_before = common::param_snapshot(&warm);
    let state_before: Vec<(String, Vec<f32>, u64)> =
        optimizer.state.iter().map(|(k, m)| (k.clone(), m.m.try_to_vec_as::<f32>().unwrap(), m.step)).collect();
    let imp = greentrainer::train::scoring::score(&warm, &optimizer, &batch, 1e-3, &|_| true).unwrap();
    assert_eq!(common::param_snapshot(&warm), weights_before);
    let state_after: Vec<(String, Vec<f32>, u64)> =
        optimizer.state.iter().map(|(k, m)| (k.clone(), m.m.try_to_vec_as::<f32>().unwrap(), m.step)).collect();
    assert_eq!(state_after, state_before);
    // Scoring's update is the run's update: the same weights as a step of a copy of the optimizer
    // (a tensor with moments and ones without), bit for bit.
    let every = forward_backward(&warm, &|_| true, &batch).unwrap().grads;
    let (mut detached, mut copied) = (warm.clone(), warm.clone());
    optimizer.step_detached(&mut detached, every.clone(), 1e-3);
    optimizer.clone().step(&mut copied, &every, 1e-3, 1.0);
    assert_eq!(common::param_snapshot(&detached), common::param_snapshot(&copied));
    assert_ne!(common::param_snapshot(&detached), weights_before);
    assert_eq!(imp.scores.len(), model.param_names().len());
    let max = imp.scores.values().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!((max - 1.0).abs() < 1e-9, "importance is normalised by max |I|: {max}");
}

/// Importance on several batches sums each batch's contributions (per tensor and per row) before
/// normalising, and reports the batches' mean loss.
#[test]
fn importance_on_several_batches_sums_each_batch() {
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer::prepare(config(MethodKind::Greentrainer, dir.path()), ComputeDevice::cpu()).unwrap();
    let model = trainer.loaded.model.clone();
    let batch = |rows: &[greentrainer::data::Example]| {
        DeviceBatch::new(&greentrainer::data::pad_batch(&rows.iter().collect::<Vec<_>>(), 1), &model)
    };
    let (a, b) = (batch(&trainer.examples[..2]), batch(&trainer.examples[2..4]));
    let optimizer = AdamW::new(AdamWConfig::default());
    let score = |batches: &[DeviceBatch]| {
        greentrainer::train::scoring::score_batches(&model, &optimizer, batches, 1e-3, &|_| true, &mut |_, _| true).unwrap()
    };
    let (one, two, both) = (score(std::slice::from_ref(&a)), score(std::slice::from_ref(&b)), score(&[a, b]));
    assert!((both.loss - (one.loss + two.loss) / 2.0).abs() < 1e-9);
    for (name, &v) in &both.raw {
        let want = one.raw[name] + two.raw[name];
        assert!((v - want).abs() <= 1e-9 + 1e-6 * want.abs(), "{name}: {v} vs {want}");
    }
    for (name, rows) in &both.rows {
        let want: Vec<f64> = one.rows[name].iter().zip(&two.rows[name]).map(|(x, y)| x + y).collect();
        assert!(rows.iter().zip(&want).all(|(v, w)| (v - w).abs() <= 1e-9 + 1e-6 * w.abs()), "{name} rows");
    }
    let max = both.raw.values().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(both.scores.iter().all(|(n, s)| (s - both.raw[n] / max).abs() < 1e-12));
}

#[test]
fn resume_reproduces_the_uninterrupted_run() {
    let straight_dir = tempfile::tempdir().unwrap();
    let (_, _, straight) = run(config(MethodKind::Greentrainer, straight_dir.path()), false, None);

    let dir = tempfile::tempdir().unwrap();
    let (_, events, first) = run(config(MethodKind::Greentrainer, dir.path()), false, Some(&|e| matches!(e, Event::Step { step: 2, .. })));
    assert!(events.iter().any(|e| matches!(e, Event::Cancelled { step: 2, .. })));
    let (_, _, rest) = run(config(MethodKind::Greentrainer, dir.path()), true, None);
    let resumed: Vec<f64> = first.into_iter().chain(rest).collect();
    assert_eq!(resumed, straight, "losses after resume must equal the uninterrupted run");

    // Cancelled inside importance scoring, before the first step: scoring stops after the pass
    // under way, nothing is selected or trained, and resuming starts the run over.
    let dir = tempfile::tempdir().unwrap();
    let (_, events, first) =
        run(config(MethodKind::Greentrainer, dir.path()), false, Some(&|e| matches!(e, Event::Scoring { pass: 1, .. })));
    let scoring: Vec<(usize, usize)> =
        events.iter().filter_map(|e| if let Event::Scoring { pass, passes, .. } = e { Some((*pass, *passes)) } else { None }).collect();
    assert_eq!(scoring, [(0, 2), (1, 2)], "one batch scored in two passes, stopped before the second ran");
    assert!(first.is_empty() && !events.iter().any(|e| matches!(e, Event::Selection { .. } | Event::Step { .. })), "{events:?}");
    assert!(matches!(events.last(), Some(Event::Cancelled { step: 0, .. })), "{events:?}");
    let (_, _, rest) = run(config(MethodKind::Greentrainer, dir.path()), true, None);
    assert_eq!(rest, straight, "a run resumed from a cancelled scoring equals the uninterrupted run");
}

#[test]
fn lora_trains_adapters_only_and_exports_merged_weights() {
    use burn::tensor::{Int, Tensor, TensorData};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(MethodKind::Lora, dir.path());
    cfg.save_model = true;
    cfg.lora_dropout = 0.0;
    let before = common::param_snapshot(&Trainer::prepare(cfg.clone(), ComputeDevice::cpu()).unwrap().loaded.model);
    let (trainer, _, losses) = run(cfg, false, None);
    assert_eq!(losses.len(), 4);
    let after = common::param_snapshot(&trainer.loaded.model);
    for (name, values) in &before {
        assert_eq!(after[name], *values, "base weight {name} changed under LoRA");
    }
    let adapters: Vec<&String> = after.keys().filter(|n| n.contains(".lora_")).collect();
    assert_eq!(adapters.len(), 2 * 2 * 2, "q and v of 2 layers, A and B each");
    assert!(adapters.iter().filter(|n| n.contains("lora_B")).all(|n| after[*n].iter().any(|v| *v != 0.0)), "B trained away from zero");

    // The exported folder holds merged weights: same logits as the adapted model, no adapter tensors.
    let device = ComputeDevice::cpu().device;
    common::assert_hf_layout(&dir.path().join("model"), "tiny-llama");
    let exported = greentrainer::io::load_model(&dir.path().join("model"), &device).unwrap();
    assert!(exported.model.param_names().iter().all(|n| !n.contains("lora")));
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 9, 42, 7, 300, 11], [1, 6]), &device);
    let mask = greentrainer::model::attention_mask(None, 1, 6, 0);
    let a: Vec<f32> = trainer.loaded.model.forward(ids.clone(), Some(&mask), None).unwrap().try_into_vec_as::<f32>().unwrap();
    let b: Vec<f32> = exported.model.forward(ids, Some(&mask), None).unwrap().try_into_vec_as::<f32>().unwrap();
    assert!(common::max_abs_diff(&a, &b) < 1e-4);
    // ...and the PEFT adapter sits beside it.
    let adapter = dir.path().join("adapter");
    assert!(adapter.join("adapter_model.safetensors").exists());
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 8);
}

#[test]
fn a_file_of_unknown_layout_trains_once_its_columns_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("notes.jsonl");
    let rows: String = (0..6).map(|i| format!("{{\"article\": \"text number {i} about cats\", \"tldr\": \"cats {i}\"}}\n")).collect();
    std::fs::write(&data, rows).unwrap();
    let mut cfg = config(MethodKind::Full, dir.path());
    cfg.data = data.clone();
    let err = Trainer::prepare(cfg.clone(), ComputeDevice::cpu()).err().expect("no preset fits").to_string();
    assert!(err.contains("notes.jsonl") && err.contains("article") && err.contains("tldr"), "{err}");
    cfg.source_field = Some("article".into());
    cfg.target_fields = vec!["tldr".into()];
    let trainer = Trainer::prepare(cfg, ComputeDevice::cpu()).unwrap();
    assert_eq!(trainer.examples.len(), 6);
    assert_eq!(trainer.examples[0].references, vec!["cats 0".to_string()]);
}

#[test]
fn gradient_accumulation_takes_one_step_per_group_of_batches() {
    let step_tokens = |accum: usize, steps: usize| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(MethodKind::Full, dir.path());
        cfg.grad_accum = accum;
        cfg.max_steps = steps;
        let (_, events, losses) = run(cfg, false, None);
        assert_eq!(losses.len(), steps);
        events.iter().filter_map(|e| if let Event::Step { tokens, .. } = e { Some(*tokens) } else { None }).collect::<Vec<_>>()
    };
    // One step over three micro-batches sees exactly the tokens of three plain steps.
    let single = step_tokens(1, 3);
    let accumulated = step_tokens(3, 1);
    assert_eq!(accumulated, vec![single.iter().sum::<usize>()]);
}

#[test]
fn a_batch_charges_the_head_for_its_answer_tokens_only() {
    let loaded = greentrainer::io::load_model(&common::fixture("tiny-llama"), &ComputeDevice::cpu().device).unwrap();
    let ignore = greentrainer::data::IGNORE_INDEX;
    // Two rows of 6: a 3-token prompt and a 2-token answer, then a 4-token prompt, 1 answer, 1 pad.
    let labels = vec![ignore, ignore, ignore, 5, 6, 7, ignore, ignore, ignore, ignore, 9, ignore];
    let host = greentrainer::data::Batch {
        input_ids: vec![1, 2, 3, 5, 6, 7, 1, 2, 3, 4, 9, 0],
        attention_mask: vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
        labels,
        batch: 2,
        seq: 6,
        real_tokens: 11,
        target_tokens: 4,
    };
    // Position t predicts label t+1: 5, 6, 7 in the first row and 9 in the second.
    assert_eq!(DeviceBatch::new(&host, &loaded.model).shape.head_tokens, Some(4));
}

#[test]
fn a_frozen_prompt_trains_deeper_within_the_same_rho() {
    let selection = |events: &[Event]| {
        events
            .iter()
            .find_map(|e| match e {
                Event::Selection { selected, realised_rho, time_rho, .. } => Some((selected.clone(), (*realised_rho, *time_rho))),
                _ => None,
            })
            .expect("a selection event")
    };
    let dir = tempfile::tempdir().unwrap();
    // Rows long enough that the prompts are most of them, as in the demo data at max_len 256.
    let long = |out: &std::path::Path| TrainConfig { max_len: 160, ..config(MethodKind::Greentrainer, out) };
    let (_, exact, _) = run(long(dir.path()), false, None);
    let dir = tempfile::tempdir().unwrap();
    let (_, frozen, losses) = run(TrainConfig { frozen_prompt: true, ..long(dir.path()) }, false, None);
    assert_eq!(losses.len(), 4);
    let ((exact_set, _), (frozen_set, (frozen_rho, frozen_time))) = (selection(&exact), selection(&frozen));
    // The demo rows' prompts are most of each row: the backward pass left over is cheap enough to
    // train more tensors within the same budget.
    assert!(frozen_set.len() > exact_set.len(), "{frozen_set:?} frozen-prompt vs {exact_set:?} exact");
    assert!(frozen_rho <= 0.5 + 1e-9, "planned {frozen_rho}");
    // The modelled step time, each trained parameter's update included, within rho too.
    assert!(frozen_time <= 0.5 + 1e-9, "planned time {frozen_time}");
    // Spent over the run (scoring included) against full fine-tuning on every token: scoring with
    // the prefix frozen is cheaper too.
    let ratio = |events: &[Event]| {
        events
            .iter()
            .find_map(|e| match e {
                Event::Finished { flops_spent, flops_full, .. } => Some(flops_spent / flops_full),
                _ => None,
            })
            .unwrap()
    };
    assert!(ratio(&frozen) < ratio(&exact), "{} vs {}", ratio(&frozen), ratio(&exact));
}

#[test]
fn a_too_shallow_rho_is_told_how_deep_a_frozen_prompt_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let long = TrainConfig { max_len: 160, ..config(MethodKind::Greentrainer, dir.path()) };
    let exact = Trainer::prepare(long.clone(), ComputeDevice::cpu()).unwrap();
    let reach = exact.reach().unwrap().unwrap();
    assert!(reach.shallow(), "{}", reach.describe());
    let text = exact.depth_guidance().unwrap().unwrap();
    assert!(text.starts_with(&reach.describe()) && text.contains("freeze the prompt prefix"), "{text}");

    let frozen = Trainer::prepare(TrainConfig { frozen_prompt: true, ..long }, ComputeDevice::cpu()).unwrap();
    let deeper = frozen.reach().unwrap().unwrap();
    assert!(deeper.reachable_blocks() > reach.reachable_blocks(), "{}", deeper.describe());
    assert!(text.contains(&format!("can reach {} of {} blocks", deeper.reachable_blocks(), deeper.blocks)), "{text}");
    // Once frozen, nothing more to suggest.
    assert_eq!(frozen.depth_guidance().unwrap().unwrap(), deeper.describe());
}

#[test]
fn a_paused_run_waits_between_steps_until_cancelled() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::prepare(config(MethodKind::Full, dir.path()), ComputeDevice::cpu()).unwrap();
    let control = RunControl::default();
    let last_step = Arc::new(AtomicUsize::new(0));
    // Another thread, as the app's buttons and the CLI's signals are: once the run is paused it
    // watches for a while, then cancels.
    let watcher = {
        let (control, last_step) = (control.clone(), last_step.clone());
        std::thread::spawn(move || {
            while !control.paused() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            let seen = last_step.load(Ordering::Relaxed);
            control.cancel.store(true, Ordering::Relaxed);
            seen
        })
    };
    let outcome = trainer
        .run(
            &mut |e: &Event| {
                if let Event::Step { step, .. } = e {
                    last_step.store(*step, Ordering::Relaxed);
                    if *step == 1 {
                        control.pause.store(true, Ordering::Relaxed);
                    }
                }
            },
            &control,
            false,
        )
        .unwrap();
    assert_eq!(watcher.join().unwrap(), 1, "steps ran while paused");
    assert!(outcome.cancelled && outcome.steps == 1, "{} steps, cancelled {}", outcome.steps, outcome.cancelled);
    assert!(dir.path().join("checkpoint").exists(), "a cancel while paused leaves a checkpoint");
}

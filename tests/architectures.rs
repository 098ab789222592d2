//! OPT and BLOOM through the whole engine, as Llama goes: loaded from an HF folder by
//! `model_type`, trained with GreenTrainer, full fine-tuning, FT-top-k and LoRA (frozen tensors
//! bit-identical, selected ones changed), saved, and reloaded with the same logits.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use greentrainer::device::ComputeDevice;
use greentrainer::io::load_model;
use greentrainer::model::{Model, Parameters, attention_mask};
use greentrainer::profile::blocks::parse_block;
use greentrainer::train::{Event, Granularity, MethodKind, RunControl, TrainConfig, Trainer};

const FIXTURES: [&str; 2] = ["tiny-opt", "tiny-bloom"];

fn logits(model: &Model) -> Vec<f32> {
    let device = ComputeDevice::cpu().device;
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 9, 42, 7, 300, 11], [1, 6]), &device);
    let mask = attention_mask(None, 1, 6, 0);
    model.forward(ids, Some(&mask), None).unwrap().try_into_vec_as::<f32>().unwrap()
}

/// Trains `config`; returns the trainer, the first selection's tensors and realised rho, and the losses.
fn train(config: TrainConfig) -> (Trainer, Vec<String>, Vec<f64>, f64) {
    let mut trainer = Trainer::prepare(config, ComputeDevice::cpu()).unwrap();
    let mut selected = None;
    let mut rho = 1.0;
    let outcome = trainer
        .run(
            &mut |e: &Event| {
                if let Event::Selection { selected: s, realised_rho, .. } = e {
                    selected.get_or_insert_with(|| s.clone());
                    rho = *realised_rho;
                }
            },
            &RunControl::default(),
            false,
        )
        .unwrap();
    (trainer, selected.unwrap_or_default(), outcome.losses, rho)
}

#[test]
fn folders_load_by_model_type() {
    for (fixture, model_type) in [("tiny-opt", "opt"), ("tiny-bloom", "bloom")] {
        let loaded = load_model(&common::fixture(fixture), &ComputeDevice::cpu().device).unwrap();
        let info = loaded.model.info();
        assert_eq!(info.model_type, model_type);
        assert_eq!((info.layers, info.hidden_size, info.heads, info.vocab_size), (2, 64, 4, 512));
        let summary = greentrainer::io::summary::ModelSummary::of(&loaded).to_string();
        assert!(summary.contains(model_type), "{summary}");
    }
}

#[test]
fn every_method_trains_what_it_selects_and_saves_a_reloadable_folder() {
    for fixture in FIXTURES {
        for method in [MethodKind::Greentrainer, MethodKind::Full, MethodKind::TopK, MethodKind::Lora] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = common::short_run(fixture, method, dir.path());
            let before = common::param_snapshot(&Trainer::prepare(cfg.clone(), ComputeDevice::cpu()).unwrap().loaded.model);
            let (trainer, selected, losses, realised_rho) = train(cfg);
            assert_eq!(losses.len(), 3, "{fixture} {method:?}");
            assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{fixture} {method:?}: {losses:?}");
            let after = common::param_snapshot(&trainer.loaded.model);
            match method {
                MethodKind::Lora => {
                    for (name, values) in &before {
                        assert_eq!(after[name], *values, "{fixture}: base weight {name} changed under LoRA");
                    }
                    let target = if fixture == "tiny-bloom" { ".query_key_value.lora_B" } else { ".q_proj.lora_B" };
                    assert!(after.keys().any(|n| n.contains(target)), "{fixture}: no adapter on {target}");
                }
                _ => {
                    assert!(!selected.is_empty(), "{fixture} {method:?} selected nothing");
                    for (name, values) in &before {
                        let unchanged = after[name] == *values;
                        assert_eq!(unchanged, !selected.contains(name), "{fixture} {method:?}: {name}");
                    }
                }
            }
            if method == MethodKind::Greentrainer {
                assert!(realised_rho <= 0.6 && realised_rho > 0.4, "{fixture}: selection at rho 0.6 costs {realised_rho:.3}");
            }
            if method == MethodKind::TopK {
                assert!(selected.iter().all(|n| n.contains(".1.") || !n.contains("layers.") && !n.contains(".h.")), "{selected:?}");
            }
            common::assert_hf_layout(&dir.path().join("model"), fixture);
            let exported = load_model(&dir.path().join("model"), &ComputeDevice::cpu().device).unwrap();
            assert!(exported.model.param_names().iter().all(|n| !n.contains("lora")));
            let err = common::max_abs_diff(&logits(&trainer.loaded.model), &logits(&exported.model));
            assert!(err < 1e-4, "{fixture} {method:?}: reloaded logits differ by {err}");
        }
    }
}

#[test]
fn bloom_head_blocks_keep_a_heads_query_key_and_value_rows_together() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { granularity: Granularity::Head, ..common::short_run("tiny-bloom", MethodKind::Greentrainer, dir.path()) };
    let (_, selected, _, _) = train(cfg);
    let head_dim = 64 / 4;
    let blocks: Vec<(&str, std::ops::Range<usize>)> = selected.iter().filter_map(|n| parse_block(n)).collect();
    assert!(!blocks.is_empty(), "head granularity selected no row block: {selected:?}");
    for (tensor, rows) in blocks {
        let block = if tensor.ends_with("query_key_value.weight") { 3 * head_dim } else { head_dim };
        assert!(rows.start % block == 0 && rows.len() % block == 0, "{tensor} rows {rows:?} are not whole heads of {block}");
    }
}

#[test]
fn lora_targets_that_name_no_layer_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { lora_targets: vec!["q_proj".into()], ..common::short_run("tiny-bloom", MethodKind::Lora, dir.path()) };
    let err = Trainer::prepare(cfg, ComputeDevice::cpu()).err().expect("q_proj is not a BLOOM layer").to_string();
    assert!(err.contains("query_key_value") && err.contains("tiny-bloom"), "{err}");
}

#[test]
fn the_context_length_bounds_training_and_generation_instead_of_panicking() {
    use greentrainer::eval::generate::{GenerateOptions, generate};
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { max_len: 300, ..common::short_run("tiny-opt", MethodKind::Full, dir.path()) };
    let err = Trainer::prepare(cfg, ComputeDevice::cpu()).err().expect("tiny-opt has 256 positions").to_string();
    assert!(err.contains("max_len 300") && err.contains("256 positions") && err.contains("tiny-opt"), "{err}");

    let loaded = load_model(&common::fixture("tiny-opt"), &ComputeDevice::cpu().device).unwrap();
    let prompt: Vec<u32> = (0..250).map(|i| 2 + i % 500).collect();
    let out = generate(&loaded.model, &prompt, &GenerateOptions::greedy(20));
    assert!(out.len() <= 6, "generated {} tokens past the 256-position table", out.len());
    assert!(generate(&loaded.model, &(0..256).map(|i| 2 + i % 500).collect::<Vec<u32>>(), &GenerateOptions::greedy(5)).is_empty());
}

#[test]
fn each_architecture_visits_its_parameters_in_the_order_its_graph_declares_them() {
    use greentrainer::model::Linears;
    use greentrainer::model::graph::OpKind;
    let device = ComputeDevice::cpu().device;
    for fixture in ["tiny-llama", "tiny-opt", "tiny-bloom", "tiny-t5"] {
        let model = load_model(&common::fixture(fixture), &device).unwrap().model;
        let ops = model.op_graph();
        let weightless = |kind: &OpKind| {
            matches!(kind, OpKind::AttentionCore { .. } | OpKind::CrossAttentionCore { .. } | OpKind::LmHead { tied: true, .. })
        };
        let declared: Vec<String> = ops.iter().filter(|op| !weightless(&op.kind)).map(|op| op.name.clone()).collect();
        assert_eq!(model.param_names(), declared, "{fixture}");
        let linears: Vec<String> = model.linears().into_iter().map(|l| format!("{}.weight", l.name)).collect();
        let declared_linears: Vec<String> =
            ops.iter().filter(|op| matches!(op.kind, OpKind::Linear { .. })).map(|op| op.name.clone()).collect();
        assert_eq!(linears, declared_linears, "{fixture}");
    }
}

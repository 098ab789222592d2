//! Block granularity: row blocks as selection candidates, partial training through the masked
//! kernels (on the CPU and on wgpu), and equivalence with whole-tensor training.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use greentrainer::device::ComputeDevice;
use greentrainer::io::load_model;
use greentrainer::model::Parameters;
use greentrainer::profile::blocks::{parse_block, split_rows};
use greentrainer::profile::{BatchShape, OpKind, profile};
use greentrainer::select::CostRule;
use greentrainer::train::batch::DeviceBatch;
use greentrainer::train::cost::step_time_share;
use greentrainer::train::optim::{AdamW, AdamWConfig};
use greentrainer::train::step::forward_backward_rows;
use greentrainer::train::{Event, Granularity, MethodKind, RunControl, TrainConfig, Trainer};

#[test]
fn row_blocks_keep_the_costs_of_their_tensor() {
    let model = load_model(&common::fixture("tiny-llama"), &ComputeDevice::cpu().device).unwrap().model;
    let ops = model.op_graph();
    let p = profile(&ops, BatchShape { batch: 2, seq: 40, decoder_seq: None, head_tokens: None, grad_tokens: None }, false).unwrap();
    let split = split_rows(&p, &ops, &|op| matches!(op.kind, OpKind::Linear { .. }).then_some(16));
    use greentrainer::profile::Node;
    let sum = |nodes: &[Node], f: fn(&Node) -> f64| nodes.iter().map(f).sum::<f64>();
    let costs: [fn(&Node) -> f64; 3] = [|n| n.t_fp, |n| n.t_dy, |n| n.t_dw];
    for f in costs {
        assert!((sum(&p.nodes, f) - sum(&split.nodes, f)).abs() < 1e-6 * sum(&p.nodes, f));
    }
    // q_proj is 64 x 64: four blocks of 16 rows.
    let q = "model.layers.1.self_attn.q_proj.weight";
    let blocks: Vec<usize> =
        split.nodes.iter().enumerate().filter(|(_, n)| parse_block(&n.name).is_some_and(|(t, _)| t == q)).map(|(i, _)| i).collect();
    assert_eq!(blocks.len(), 4);
    // Selecting every block costs what selecting the tensor costs.
    let whole = p.nodes.iter().position(|n| n.name == q).unwrap();
    let a = p.selection_cost(&[whole], CostRule::Exact).unwrap();
    let b = split.selection_cost(&blocks, CostRule::Exact).unwrap();
    assert!((a - b).abs() < 1e-6 * a, "{a} vs {b}");
    // One block costs less (a quarter of the weight gradient).
    let one = split.selection_cost(&blocks[..1], CostRule::Exact).unwrap();
    assert!(one < b);
    // The modelled step time (MACs and each trained parameter's update) is the tensor's too.
    let names = |p: &greentrainer::profile::Profile, at: &[usize]| at.iter().map(|&i| p.nodes[i].name.clone()).collect::<BTreeSet<_>>();
    let time_whole = step_time_share(&p, &model, &names(&p, &[whole]));
    let time_blocks = step_time_share(&split, &model, &names(&split, &blocks));
    assert!((time_whole - time_blocks).abs() < 1e-9 * time_whole, "{time_whole} vs {time_blocks}");
}

#[test]
fn all_rows_partial_equals_whole_tensor_training() {
    for dev in common::devices() {
        let loaded = load_model(&common::fixture("tiny-llama"), &dev.device).unwrap();
        let model = loaded.model;
        let ids: Vec<u32> = (0..2 * 24).map(|i| (i * 37 % 500) as u32).collect();
        let host = greentrainer::data::Batch {
            labels: ids.iter().map(|&t| t as i64).collect(),
            attention_mask: vec![1; 48],
            input_ids: ids,
            batch: 2,
            seq: 24,
            real_tokens: 48,
            target_tokens: 48,
        };
        let batch = DeviceBatch::new(&host, &model);
        let names = ["model.layers.1.mlp.up_proj.weight", "model.layers.1.self_attn.v_proj.weight"];

        let whole = forward_backward_rows(&model, &|n| names.contains(&n), &BTreeMap::new(), &batch).unwrap();
        let mut dense_model = model.clone();
        AdamW::new(AdamWConfig::default()).step(&mut dense_model, &whole.grads, 1e-2, 1.0);

        // Every row of each: up_proj is 160 x 64, v_proj 32 x 64 in the tiny model.
        let rows: BTreeMap<String, Vec<u32>> =
            [(names[0], 160u32), (names[1], 32)].into_iter().map(|(n, r)| (n.to_string(), (0..r).collect())).collect();
        let part = forward_backward_rows(&model, &|_| false, &rows, &batch).unwrap();
        assert!((whole.loss - part.loss).abs() < 1e-6, "{}: loss", dev.name);
        assert!(part.grads.is_empty());
        let mut masked_model = model.clone();
        AdamW::new(AdamWConfig::default()).step_rows(&mut masked_model, &part.row_grads, &rows, 1e-2, 1.0);

        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        dense_model.visit(&mut |n, p| {
            a.insert(n.to_string(), p.to_vec());
        });
        masked_model.visit(&mut |n, p| {
            b.insert(n.to_string(), p.to_vec());
        });
        for (n, va) in &a {
            let err = common::max_abs_diff(va, &b[n]);
            assert!(err < 1e-5, "{}: {n} differs by {err}", dev.name);
        }
    }
}

#[test]
fn head_granularity_trains_selected_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        model: common::fixture("tiny-llama"),
        data: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/dialogsum.train.jsonl"),
        output: dir.path().to_path_buf(),
        method: MethodKind::Greentrainer,
        granularity: Granularity::Head,
        rho: 0.45,
        epochs: 0,
        max_steps: 3,
        batch_size: 2,
        max_len: 48,
        lr: 1e-3,
        save_model: false,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::prepare(config, ComputeDevice::cpu()).unwrap();
    let mut before = BTreeMap::new();
    trainer.loaded.model.visit(&mut |n, p| {
        before.insert(n.to_string(), p.to_vec());
    });
    let mut selected = Vec::new();
    trainer
        .run(
            &mut |e: &Event| {
                if let Event::Selection { selected: s, .. } = e {
                    selected = s.clone();
                }
            },
            &RunControl::default(),
            false,
        )
        .unwrap();
    let mut partial: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for name in &selected {
        if let Some((t, r)) = parse_block(name) {
            partial.entry(t.to_string()).or_default().extend(r);
        }
    }
    assert!(!partial.is_empty(), "expected some head blocks in {selected:?}");
    let shapes: BTreeMap<String, Vec<usize>> = {
        let mut m = BTreeMap::new();
        trainer.loaded.model.visit(&mut |n, p| {
            m.insert(n.to_string(), p.shape());
        });
        m
    };
    let mut after = BTreeMap::new();
    trainer.loaded.model.visit(&mut |n, p| {
        after.insert(n.to_string(), p.to_vec());
    });
    for (tensor, rows) in &partial {
        let d_in = shapes[tensor][1];
        let (old, new): (&Vec<f32>, &Vec<f32>) = (&before[tensor], &after[tensor]);
        for r in 0..shapes[tensor][0] {
            let changed = old[r * d_in..(r + 1) * d_in] != new[r * d_in..(r + 1) * d_in];
            assert_eq!(changed, rows.contains(&r), "{tensor} row {r}: trained={} changed={changed}", rows.contains(&r));
        }
    }
}

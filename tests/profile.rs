//! The FLOPs profiler against closed forms, selection on a SmolLM2-135M-shaped profile, and each
//! architecture's config-derived op graph against the parameters its model loads. The paper's
//! PFLOPs rows are reproduced from the paper configs in tests/opt.rs and tests/bloom.rs.

mod common;

use greentrainer::device::ComputeDevice;
use greentrainer::model::bloom::{Bloom, BloomConfig};
use greentrainer::model::opt::{Opt, OptConfig};
use greentrainer::model::t5::{T5, T5Config};
use greentrainer::model::{Llama as LlamaModel, LlamaConfig, Parameters};
use greentrainer::{profile::*, select::*};
use serde_json::{Value, json};

/// The shape of a Llama-style decoder (pre-norm, SwiGLU MLP, grouped-query attention).
struct Llama {
    layers: usize,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    tied: bool,
}

/// SmolLM2-135M, as in tests/fixtures/paper-configs/smollm2-135m.json.
const SMOLLM2_135M: Llama =
    Llama { layers: 30, hidden: 576, intermediate: 1536, heads: 9, kv_heads: 3, head_dim: 64, vocab: 49152, tied: true };

const SMALL: Llama = Llama { layers: 2, hidden: 64, intermediate: 176, heads: 4, kv_heads: 2, head_dim: 16, vocab: 1000, tied: false };

fn op(name: String, kind: OpKind, layer: Option<usize>, role: TensorRole) -> OpSpec {
    OpSpec { name, kind, layer, role, stream: Stream::Input }
}

/// The op list in execution order, named like the HF parameters.
fn llama_ops(m: &Llama) -> Vec<OpSpec> {
    let (d, attn, kv) = (m.hidden, m.heads * m.head_dim, m.kv_heads * m.head_dim);
    let mut ops = vec![op("model.embed_tokens.weight".into(), OpKind::Embedding { vocab: m.vocab, dim: d }, None, TensorRole::Embedding)];
    for l in 0..m.layers {
        let p = |suffix: &str| format!("model.layers.{l}.{suffix}");
        let linear = |d_in, d_out| OpKind::Linear { d_in, d_out };
        let at = Some(l);
        ops.extend([
            op(p("input_layernorm.weight"), OpKind::Norm { dim: d }, at, TensorRole::Norm),
            op(p("self_attn.q_proj.weight"), linear(d, attn), at, TensorRole::Q),
            op(p("self_attn.k_proj.weight"), linear(d, kv), at, TensorRole::K),
            op(p("self_attn.v_proj.weight"), linear(d, kv), at, TensorRole::V),
            op(p("self_attn.core"), OpKind::AttentionCore { n_heads: m.heads, head_dim: m.head_dim, causal: true }, at, TensorRole::Other),
            op(p("self_attn.o_proj.weight"), linear(attn, d), at, TensorRole::O),
            op(p("post_attention_layernorm.weight"), OpKind::Norm { dim: d }, at, TensorRole::Norm),
            op(p("mlp.gate_proj.weight"), linear(d, m.intermediate), at, TensorRole::Gate),
            op(p("mlp.up_proj.weight"), linear(d, m.intermediate), at, TensorRole::Up),
            op(p("mlp.down_proj.weight"), linear(m.intermediate, d), at, TensorRole::Down),
        ]);
    }
    ops.push(op("model.norm.weight".into(), OpKind::Norm { dim: d }, None, TensorRole::Norm));
    ops.push(op("lm_head.weight".into(), OpKind::LmHead { vocab: m.vocab, dim: d, tied: m.tied }, None, TensorRole::LmHead));
    ops
}

/// Full fine-tuning MACs written out per term, independently of the profiler.
struct ClosedForm {
    t_fp: f64,
    t_dy: f64,
    t_dw: f64,
}

fn closed_form(m: &Llama, shape: BatchShape, causal_half: bool) -> ClosedForm {
    let tokens = (shape.batch * shape.seq) as f64;
    let (d, attn, kv, f) = (m.hidden, m.heads * m.head_dim, m.kv_heads * m.head_dim, m.intermediate);
    let linears = (d * attn + 2 * d * kv + attn * d + 3 * d * f) as f64;
    let norms = 2.0 * d as f64;
    let core = if causal_half { 0.5 } else { 1.0 } * (shape.seq * attn) as f64;
    let (layers, d, head) = (m.layers as f64, d as f64, (m.vocab * m.hidden) as f64);
    ClosedForm {
        // embedding lookup + blocks (core: QK^T and PV) + final norm + head
        t_fp: tokens * (d + layers * (linears + norms + 2.0 * core) + d + head),
        // the embedding needs no input gradient; the core's backward is twice its forward
        t_dy: tokens * (layers * (linears + norms + 4.0 * core) + d + head),
        // scatter-add + blocks + final norm + head (charged to the embedding when tied)
        t_dw: tokens * (d + layers * (linears + norms) + d + head),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn sum(profile: &Profile, cost: impl Fn(&Node) -> f64) -> f64 {
    profile.nodes.iter().map(cost).sum()
}

#[test]
fn totals_match_the_closed_form_tied_and_untied() {
    let shape = BatchShape { batch: 2, seq: 24, decoder_seq: None, head_tokens: None, grad_tokens: None };
    for tied in [false, true] {
        for causal_half in [false, true] {
            let model = Llama { tied, ..SMALL };
            let profile = profile(&llama_ops(&model), shape, causal_half).unwrap();
            let expected = closed_form(&model, shape, causal_half);
            assert!(close(profile.t_fp(), expected.t_fp), "tied {tied}, causal_half {causal_half}");
            assert!(close(sum(&profile, |n| n.t_dy), expected.t_dy));
            assert!(close(sum(&profile, |n| n.t_dw), expected.t_dw));
            assert!(close(profile.t_bp_full(), expected.t_dy + expected.t_dw));
            assert!(close(profile.t_full(), expected.t_fp + expected.t_dy + expected.t_dw));
            assert!(close(profile.min_rho(), profile.t_fp() / profile.t_full()));
        }
    }
}

#[test]
fn tied_head_is_a_chain_node_charged_to_the_embedding() {
    let shape = BatchShape { batch: 2, seq: 24, decoder_seq: None, head_tokens: None, grad_tokens: None };
    let tokens = 48.0;
    let (d, v) = (SMALL.hidden as f64, SMALL.vocab as f64);
    let untied = profile(&llama_ops(&SMALL), shape, false).unwrap();
    let tied = profile(&llama_ops(&Llama { tied: true, ..SMALL }), shape, false).unwrap();

    let (embedding, head) = (&tied.nodes[0], tied.nodes.last().unwrap());
    assert!(embedding.selectable && embedding.t_dy == 0.0);
    assert_eq!(embedding.t_dw, tokens * v * d + tokens * d);
    assert_eq!(embedding.param_numel, SMALL.vocab * SMALL.hidden);
    assert!(!head.selectable);
    assert_eq!((head.t_fp, head.t_dy, head.t_dw, head.param_numel), (tokens * v * d, tokens * v * d, 0.0, 0));

    let untied_head = untied.nodes.last().unwrap();
    assert!(untied_head.selectable);
    assert_eq!(untied_head.t_dw, tokens * v * d);
    assert_eq!(untied.nodes[0].t_dw, tokens * d);
    assert_eq!(untied.nodes.iter().filter(|n| n.selectable).count(), 1 + 9 * SMALL.layers + 2);
    assert_eq!(tied.nodes.iter().filter(|n| n.selectable).count(), 1 + 9 * SMALL.layers + 1);
}

#[test]
fn causal_half_halves_only_the_attention_core() {
    let shape = BatchShape { batch: 3, seq: 10, decoder_seq: None, head_tokens: None, grad_tokens: None };
    let full = profile(&llama_ops(&SMALL), shape, false).unwrap();
    let half = profile(&llama_ops(&SMALL), shape, true).unwrap();
    for (a, b) in full.nodes.iter().zip(&half.nodes) {
        let scale = if a.name.ends_with("core") { 0.5 } else { 1.0 };
        assert_eq!((b.t_fp, b.t_dy, b.t_dw), (scale * a.t_fp, scale * a.t_dy, scale * a.t_dw), "{}", a.name);
    }
}

#[test]
fn biases_pass_gradients_through_for_free() {
    let ops = [
        op("fc1.weight".into(), OpKind::Linear { d_in: 8, d_out: 32 }, Some(0), TensorRole::Fc1),
        op("fc1.bias".into(), OpKind::Bias { dim: 32 }, Some(0), TensorRole::Fc1),
        op("ln.weight".into(), OpKind::Norm { dim: 32 }, Some(0), TensorRole::Norm),
        op("ln.bias".into(), OpKind::NormBias { dim: 32 }, Some(0), TensorRole::Norm),
    ];
    let profile = profile(&ops, BatchShape { batch: 1, seq: 5, decoder_seq: None, head_tokens: None, grad_tokens: None }, false).unwrap();
    let costs: Vec<_> = profile.nodes.iter().map(|n| (n.t_fp, n.t_dy, n.t_dw, n.param_numel)).collect();
    assert_eq!(costs, [(1280.0, 1280.0, 1280.0, 256), (160.0, 0.0, 160.0, 32), (160.0, 160.0, 160.0, 32), (160.0, 0.0, 160.0, 32)]);
}

#[test]
fn candidates_are_indexed_from_the_output() {
    let profile =
        profile(&llama_ops(&SMALL), BatchShape { batch: 1, seq: 8, decoder_seq: None, head_tokens: None, grad_tokens: None }, false)
            .unwrap();
    let n = profile.nodes.len();
    let importance: Vec<f64> = (0..n).map(|i| i as f64 + 1.0).collect();
    let candidates = profile.candidates(&importance).unwrap();
    assert_eq!(profile.execution_index(0), Some(n - 1));
    assert_eq!(profile.execution_index(n), None);
    for (j, c) in candidates.iter().enumerate() {
        let node = &profile.nodes[profile.execution_index(j).unwrap()];
        assert_eq!((c.t_dy, c.t_dw, c.selectable), (node.t_dy, node.t_dw, node.selectable));
        assert_eq!(c.importance, if node.selectable { importance[n - 1 - j] } else { 0.0 });
    }
    assert_eq!(profile.candidates(&importance[1..]).unwrap_err(), ProfileError::ImportanceLength { expected: n, got: n - 1 });
}

#[test]
fn reference_rule_adds_exactly_the_deepest_tensors_input_gradient() {
    let profile =
        profile(&llama_ops(&SMALL), BatchShape { batch: 2, seq: 16, decoder_seq: None, head_tokens: None, grad_tokens: None }, true)
            .unwrap();
    let index = |name: &str| profile.nodes.iter().position(|n| n.name == name).unwrap();
    let sets = [
        vec![index("model.layers.1.self_attn.q_proj.weight"), index("model.norm.weight")],
        vec![index("model.layers.0.mlp.down_proj.weight"), index("model.layers.1.mlp.up_proj.weight")],
        vec![index("lm_head.weight")],
    ];
    for set in sets {
        let exact = profile.selection_cost(&set, CostRule::Exact).unwrap();
        let reference = profile.selection_cost(&set, CostRule::Reference).unwrap();
        let deepest = &profile.nodes[*set.iter().min().unwrap()];
        assert!(close(reference - exact, deepest.t_dy), "{}", deepest.name);
    }
    // Training nothing costs the forward pass; training everything costs full fine-tuning.
    assert_eq!(profile.selection_cost(&[], CostRule::Exact).unwrap(), profile.t_fp());
    let all: Vec<usize> = (0..profile.nodes.len()).filter(|&i| profile.nodes[i].selectable).collect();
    assert!(close(profile.selection_cost(&all, CostRule::Reference).unwrap(), profile.t_full()));
}

#[test]
fn bad_selections_and_tied_heads_without_embedding_are_refused() {
    let profile =
        profile(&llama_ops(&SMALL), BatchShape { batch: 1, seq: 8, decoder_seq: None, head_tokens: None, grad_tokens: None }, false)
            .unwrap();
    let core = profile.nodes.iter().position(|n| n.name.ends_with("core")).unwrap();
    assert!(matches!(
        profile.selection_cost(&[core], CostRule::Exact),
        Err(ProfileError::NotSelectable { index, .. }) if index == core
    ));
    let len = profile.nodes.len();
    assert_eq!(profile.selection_cost(&[len], CostRule::Exact).unwrap_err(), ProfileError::NodeOutOfRange { index: len, len });

    let mut ops = llama_ops(&Llama { tied: true, ..SMALL });
    ops.remove(0);
    let err = greentrainer::profile::profile(
        &ops,
        BatchShape { batch: 1, seq: 8, decoder_seq: None, head_tokens: None, grad_tokens: None },
        false,
    )
    .unwrap_err();
    assert!(matches!(err, ProfileError::TiedHeadWithoutEmbedding { .. }), "{err}");
}

#[test]
fn flops_conventions() {
    assert_eq!(FlopsConvention::Flops.from_macs(3.0), 6.0);
    assert_eq!(FlopsConvention::PaperMac.from_macs(3.0), 3.0);
    assert_eq!(FlopsConvention::Flops.format(1.5e12), "3.000 TFLOPs (2 x MAC)");
    assert_eq!(FlopsConvention::PaperMac.format(41.8e15), "41.800 PFLOPs (paper: 1 MAC = 1 FLOP)");
}

/// splitmix64, for reproducible importances without the rand crate.
fn importances(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            1e-3 + ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// Full attention cost (no causal halving): the engine computes the whole S x S score matrix.
fn smollm2_profile(causal_half: bool) -> Profile {
    profile(
        &llama_ops(&SMOLLM2_135M),
        BatchShape { batch: 4, seq: 256, decoder_seq: None, head_tokens: None, grad_tokens: None },
        causal_half,
    )
    .unwrap()
}

#[test]
fn smollm2_selection_fills_the_budget() {
    let profile = smollm2_profile(false);
    let expected = closed_form(&SMOLLM2_135M, profile.shape, false);
    assert!(close(profile.t_full(), expected.t_fp + expected.t_dy + expected.t_dw));
    let candidates = profile.candidates(&importances(7, profile.nodes.len())).unwrap();
    for rho in [0.4, 0.5, 0.7] {
        let selection = select(&candidates, profile.t_fp(), &SelectConfig::new(rho)).unwrap();
        let fill = selection.total_cost / (rho * profile.t_full());
        assert!((0.98..=1.0 + 1e-12).contains(&fill), "rho {rho}: realised / budget = {fill}");
        assert!(!selection.is_empty(), "rho {rho}");
        let nodes = profile.selected_nodes(&selection).unwrap();
        assert!(close(profile.selection_cost(&nodes, CostRule::Exact).unwrap(), selection.total_cost));
    }
}

#[test]
fn smollm2_tied_head_gradient_walls_off_low_rho_with_causal_halving() {
    // Halving the S^2 terms makes the forward pass relatively dearer: at rho = 0.4 the backward budget is
    // smaller than the tied head's input gradient, which every selection must pay, so nothing is trained.
    let profile = smollm2_profile(true);
    let head = profile.nodes.last().unwrap();
    let backward_budget = 0.4 * profile.t_full() - profile.t_fp();
    assert!(backward_budget > 0.0 && backward_budget < head.t_dy);
    let candidates = profile.candidates(&importances(7, profile.nodes.len())).unwrap();
    let selection = select(&candidates, profile.t_fp(), &SelectConfig::new(0.4)).unwrap();
    assert!(selection.is_empty());
    assert_eq!(selection.total_cost, profile.t_fp());
}

/// Zero weights of the asked shape: enough to compare a model's parameters with its op graph.
fn zeros(_: &str, shape: &[usize]) -> greentrainer::error::Result<Vec<f32>> {
    Ok(vec![0.0; shape.iter().product()])
}

/// A tiny fixture's config.json with some fields replaced.
fn tiny_config(fixture: &str, overrides: &Value) -> Value {
    let text = std::fs::read_to_string(common::fixture(fixture).join("config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    for (k, v) in overrides.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

/// The graph's parameter ops, each with the HF shape its kind implies, are exactly the model's
/// parameters, in the same order.
fn assert_graph_matches_parameters(model: &impl Parameters, ops: &[OpSpec], label: &str) {
    let in_graph: Vec<(String, Vec<usize>)> = ops
        .iter()
        .filter_map(|op| {
            let shape = match op.kind {
                OpKind::Embedding { vocab, dim } | OpKind::LmHead { vocab, dim, tied: false } => vec![vocab, dim],
                OpKind::Linear { d_in, d_out } => vec![d_out, d_in],
                OpKind::Bias { dim } | OpKind::Norm { dim } | OpKind::NormBias { dim } => vec![dim],
                OpKind::RelativeBias { buckets, n_heads, .. } => vec![buckets, n_heads],
                OpKind::AttentionCore { .. } | OpKind::CrossAttentionCore { .. } | OpKind::LmHead { tied: true, .. } => return None,
            };
            Some((op.name.clone(), shape))
        })
        .collect();
    let mut in_model = Vec::new();
    model.visit(&mut |name, p| in_model.push((name.to_string(), p.shape())));
    assert_eq!(in_graph, in_model, "{label}");
}

#[test]
fn config_derived_op_graphs_match_the_loaded_parameters() {
    // `load` records the graph as it reads each parameter, and planning from the config alone
    // (`llama_ops` and its siblings) runs the same declaration without a file: both graphs must
    // agree, and list exactly the parameters the model visits.
    let device = ComputeDevice::cpu().device;
    let llama = [
        json!({}),
        json!({"tie_word_embeddings": false}),
        json!({"attention_bias": true, "mlp_bias": true}),
        json!({"model_type": "qwen2"}),
    ];
    for overrides in llama {
        let config = LlamaConfig::from_value(tiny_config("tiny-llama", &overrides), "tiny-llama").unwrap();
        let model = LlamaModel::load(config.clone(), &device, &mut zeros).unwrap();
        assert_eq!(model.op_graph(), greentrainer::model::llama::llama_ops(&config), "llama {overrides}");
        assert_graph_matches_parameters(&model, &model.op_graph(), &format!("llama {overrides}"));
    }
    let opt = [
        json!({}),
        json!({"do_layer_norm_before": false, "word_embed_proj_dim": 32}),
        json!({"word_embed_proj_dim": 48, "enable_bias": false, "layer_norm_elementwise_affine": false, "tie_word_embeddings": false}),
        json!({"_remove_final_layer_norm": true}),
    ];
    for overrides in opt {
        let config = OptConfig::from_value(tiny_config("tiny-opt", &overrides), "tiny-opt").unwrap();
        let model = Opt::load(config.clone(), &device, &mut zeros).unwrap();
        assert_eq!(model.op_graph(), greentrainer::model::opt::opt_ops(&config), "opt {overrides}");
        assert_graph_matches_parameters(&model, &model.op_graph(), &format!("opt {overrides}"));
    }
    for overrides in [json!({}), json!({"tie_word_embeddings": false})] {
        let config = BloomConfig::from_value(tiny_config("tiny-bloom", &overrides), "tiny-bloom").unwrap();
        let model = Bloom::load(config.clone(), &device, &mut zeros).unwrap();
        assert_eq!(model.op_graph(), greentrainer::model::bloom::bloom_ops(&config), "bloom {overrides}");
        assert_graph_matches_parameters(&model, &model.op_graph(), &format!("bloom {overrides}"));
    }
    for overrides in [json!({}), json!({"feed_forward_proj": "relu", "num_decoder_layers": 3})] {
        let config = T5Config::from_value(tiny_config("tiny-t5", &overrides), "tiny-t5").unwrap();
        // A checkpoint without `lm_head.weight` where the config ties it, as planning assumes.
        let tied = config.tie_word_embeddings;
        let mut source = |name: &str, shape: &[usize]| match name {
            "lm_head.weight" if tied => Err(greentrainer::error::Error::MissingTensor { path: "tiny-t5".into(), tensor: name.into() }),
            _ => zeros(name, shape),
        };
        let model = T5::load(config.clone(), &device, &mut source).unwrap();
        assert_eq!(model.op_graph(), greentrainer::model::t5::t5_ops(&config), "t5 {overrides}");
        assert_graph_matches_parameters(&model, &model.op_graph(), &format!("t5 {overrides}"));
    }
}

/// The depth a rho lets GreenTrainer reach, for the user choosing rho: every block at or above the
/// reported one has a tensor trainable within rho alone, none below it does, and less than half the
/// blocks is flagged.
#[test]
fn reach_reports_the_deepest_block_a_rho_affords() {
    use greentrainer::profile::reach::Reach;
    let ops = llama_ops(&SMOLLM2_135M);
    let p = profile(&ops, BatchShape::padded(&ops, 4, 256), false).unwrap();
    let single = |i: usize| p.selection_cost(&[i], CostRule::Exact).unwrap() / p.t_full();
    let affordable =
        |rho: f64, block: usize| p.nodes.iter().enumerate().any(|(i, n)| n.selectable && n.layer == Some(block) && single(i) <= rho);
    for rho in [0.5, 0.6, 0.7, 0.9] {
        let reach = Reach::of(&p, rho);
        assert_eq!(reach.blocks, 30);
        let deepest = reach.deepest_block.expect("the top block fits these rho");
        assert!(affordable(rho, deepest) && (0..deepest).all(|b| !affordable(rho, b)), "rho {rho}: block {deepest}");
        assert_eq!(reach.shallow(), 30 - deepest < 29, "rho {rho}: 95% of 30 blocks");
        let deep = reach.rho_for_deep.unwrap();
        assert!(Reach::of(&p, deep).reachable_blocks() >= 29 && Reach::of(&p, deep - 1e-6).reachable_blocks() < 29, "rho {rho}");
    }
    // Measured on SmolLM2: rho 0.5, 0.6 and 0.65 lost part of the task, 0.7 kept it.
    let shallow = |rho: f64| Reach::of(&p, rho).shallow();
    assert!(shallow(0.5) && shallow(0.6) && shallow(0.65) && !shallow(0.7));
    assert!(Reach::of(&p, 0.5).describe().contains("too shallow"));

    // Charged for DialogSum-like answers (48 target tokens a row) rather than every token, the head
    // leaves more of the budget for depth: rho 0.4 reaches the top blocks, which it cannot padded.
    let answers = profile(&ops, BatchShape::padded(&ops, 4, 256).with_mean_targets(48.0), false).unwrap();
    assert_eq!(Reach::of(&p, 0.4).deepest_block, None);
    for rho in [0.4, 0.5, 0.6] {
        let (deep, padded) = (Reach::of(&answers, rho).reachable_blocks(), Reach::of(&p, rho).reachable_blocks());
        assert!(deep > padded, "rho {rho}: {deep} blocks with answer tokens, {padded} padded");
    }
}

#[test]
fn the_head_is_charged_for_the_tokens_with_a_target_only() {
    let all = BatchShape { batch: 2, seq: 24, decoder_seq: None, head_tokens: None, grad_tokens: None };
    let answers = BatchShape { head_tokens: Some(10), ..all };
    let (d, v) = (SMALL.hidden as f64, SMALL.vocab as f64);
    let whole = profile(&llama_ops(&SMALL), all, false).unwrap();
    let trained = profile(&llama_ops(&SMALL), answers, false).unwrap();
    let (head, head_all) = (trained.nodes.last().unwrap(), whole.nodes.last().unwrap());
    assert_eq!((head.t_fp, head.t_dy, head.t_dw), (10.0 * v * d, 10.0 * v * d, 10.0 * v * d));
    assert_eq!(head_all.t_fp, 48.0 * v * d);
    // Every other op runs on all 48 tokens either way.
    let others = |p: &Profile| p.nodes[..p.nodes.len() - 1].iter().map(|n| n.t_fp + n.t_dy + n.t_dw).sum::<f64>();
    assert_eq!(others(&trained), others(&whole));
}

#[test]
fn a_frozen_prompt_prefix_charges_the_backward_pass_for_the_rest_only() {
    let all = BatchShape { batch: 2, seq: 24, decoder_seq: None, head_tokens: Some(10), grad_tokens: None };
    // 36 of the 48 tokens follow the frozen prefix.
    let frozen = BatchShape { grad_tokens: Some(36), ..all };
    let whole = profile(&llama_ops(&SMALL), all, false).unwrap();
    let cut = profile(&llama_ops(&SMALL), frozen, false).unwrap();
    for (a, b) in whole.nodes.iter().zip(&cut.nodes) {
        // The forward pass and the head (charged for its target tokens) do not change.
        assert_eq!(a.t_fp, b.t_fp, "{}", a.name);
        let share = if a.role == TensorRole::LmHead { 1.0 } else { 0.75 };
        assert!(close(b.t_dy, share * a.t_dy) && close(b.t_dw, share * a.t_dw), "{}", a.name);
    }
    // rho stays a fraction of full fine-tuning over every token.
    assert_eq!(cut.t_full(), whole.t_full());
    assert!(cut.nodes.iter().map(|n| n.t_dy + n.t_dw).sum::<f64>() < whole.t_bp_full());
    let importance = importances(3, cut.nodes.len());
    for rho in [0.5, 0.7] {
        let chosen = cut.select(&importance, &SelectConfig::new(rho)).unwrap();
        let spent = cut.selection_cost(&chosen, CostRule::Exact).unwrap();
        assert!(spent <= rho * whole.t_full() * (1.0 + 1e-12), "rho {rho}");
        assert!(
            chosen.len() >= whole.select(&importance, &SelectConfig::new(rho)).unwrap().len(),
            "rho {rho}: a cheaper backward pass trains no less"
        );
    }
}

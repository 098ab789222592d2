//! The memory pre-flight (`train::memory`) against hand counts on the tiny Llama fixture
//! (hidden 64, 4 query heads and 2 key/value heads of 16, MLP 160, 2 layers, vocabulary 512, tied
//! head). Measured peaks belong to `greentrainer bench memory`, not here.

use std::collections::BTreeMap;

use greentrainer::model::llama::llama_ops;
use greentrainer::model::{FrozenPrecision, LlamaConfig};
use greentrainer::profile::{BatchShape, OpKind, OpSpec};
use greentrainer::train::memory::{self, FrozenBytes, MemoryError, Target, Training, Verdict, estimate, propose};

const D: u64 = 64;
const Q: u64 = 64;
const KV: u64 = 32;
const HEADS: u64 = 4;
const FFN: u64 = 160;
const VOCAB: u64 = 512;

fn ops() -> Vec<OpSpec> {
    let text = std::fs::read_to_string("tests/fixtures/tiny-llama/config.json").unwrap();
    llama_ops(&LlamaConfig::from_json_str(&text, "tiny-llama").unwrap())
}

/// Only the tensors named train, whole.
fn training(ops: &[OpSpec], names: &[&str]) -> Vec<Training> {
    ops.iter().map(|op| if names.contains(&op.name.as_str()) { Training::Whole } else { Training::Frozen }).collect()
}

fn shape(batch: usize, seq: usize) -> BatchShape {
    BatchShape { batch, seq, decoder_seq: None, head_tokens: None, grad_tokens: None }
}

/// Per token of a crossed block: the fused RMSNorms' inputs (2 x d), flash attention's q, k, v,
/// output and log-sum-exp (2 x q + 2 x kv + heads), SwiGLU's gate and up (2 x ffn); frozen linears
/// keep nothing.
const BLOCK_FLOATS: u64 = 2 * D + 2 * Q + 2 * KV + HEADS + 2 * FFN;

#[test]
fn weights_are_four_bytes_a_parameter_and_only_trained_tensors_get_gradients_and_adamw_state() {
    let ops = ops();
    let params_per_layer = 2 * D + D * Q + 2 * D * KV + Q * D + 3 * D * FFN;
    let params = VOCAB * D + 2 * params_per_layer + D;
    let down = "model.layers.1.mlp.down_proj.weight";
    let e = estimate(&ops, &training(&ops, &[down]), shape(2, 8), Target::Cpu).unwrap();
    assert_eq!(e.weights, 4 * params);
    assert_eq!(e.gradients, 4 * FFN * D);
    assert_eq!(e.optimizer, 8 * FFN * D);
    // The head's [16 x 512] logits three times, whole on the CPU.
    assert_eq!(e.transient, 3 * 16 * VOCAB * 4);
    assert_eq!(e.peak(), e.weights + e.optimizer + e.step_peak);
}

#[test]
fn a_trained_linear_keeps_its_input_and_frozen_ones_keep_nothing() {
    let ops = ops();
    let tokens = 2 * 8;
    let down = estimate(&ops, &training(&ops, &["model.layers.1.mlp.down_proj.weight"]), shape(2, 8), Target::Cpu).unwrap();
    // down_proj's input, then the final norm's input above it.
    assert_eq!(down.activations, tokens * (FFN + D) * 4);
    assert_eq!(down.blocks_crossed, 1);
    // q, k and v read one normalised input: counted once.
    let qkv =
        ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight"];
    let shared = estimate(&ops, &training(&ops, &qkv), shape(2, 8), Target::Cpu).unwrap();
    let q_only = estimate(&ops, &training(&ops, &qkv[..1]), shape(2, 8), Target::Cpu).unwrap();
    assert_eq!(shared.activations, q_only.activations);
    assert_eq!(shared.gradients, q_only.gradients + 2 * 4 * D * KV);
}

#[test]
fn activations_grow_by_one_block_per_block_crossed_and_linearly_with_the_batch() {
    let ops = ops();
    let at = |name: &str, batch: usize| estimate(&ops, &training(&ops, &[name]), shape(batch, 8), Target::Cpu).unwrap();
    let final_norm = at("model.norm.weight", 2);
    let from_block_1 = at("model.layers.1.input_layernorm.weight", 2);
    let from_block_0 = at("model.layers.0.input_layernorm.weight", 2);
    let tokens = 2 * 8;
    assert_eq!(final_norm.activations, tokens * D * 4);
    assert_eq!(from_block_1.activations - final_norm.activations, tokens * BLOCK_FLOATS * 4);
    assert_eq!(from_block_0.activations - from_block_1.activations, tokens * BLOCK_FLOATS * 4);
    assert_eq!((final_norm.blocks_crossed, from_block_1.blocks_crossed, from_block_0.blocks_crossed), (0, 1, 2));
    let doubled = at("model.layers.0.input_layernorm.weight", 4);
    assert_eq!(doubled.activations, 2 * from_block_0.activations);
}

#[test]
fn eager_attention_on_a_gpu_keeps_the_scores_and_a_small_binding_chunks_the_head() {
    let ops = ops();
    let t = training(&ops, &["model.layers.1.input_layernorm.weight"]);
    let cpu = estimate(&ops, &t, shape(2, 8), Target::Cpu).unwrap();
    let gpu = estimate(&ops, &t, shape(2, 8), Target::Wgpu { max_binding: None }).unwrap();
    let tokens = 2 * 8;
    let scores = tokens * HEADS * 8 * 4;
    // Eager: q, k and v repeated to every head, the scores twice; flash: q, k, v, output, lse.
    let eager = tokens * 3 * Q * 4 + 2 * scores;
    let flash = tokens * (2 * Q + 2 * KV + HEADS) * 4;
    assert_eq!(gpu.activations - cpu.activations, eager - flash);
    // 16 x 512 logits are 32 KiB: a 32 KiB binding runs them in chunks of 8 KiB.
    let small = estimate(&ops, &t, shape(2, 8), Target::Wgpu { max_binding: Some(32 * 1024) }).unwrap();
    assert_eq!(small.transient, 4 * 8 * 1024 + tokens * D * 4);
}

#[test]
fn a_budget_that_fits_batch_2_but_not_4_proposes_batch_2() {
    let ops = ops();
    let t = training(&ops, &["model.layers.0.input_layernorm.weight"]);
    let at = |batch: usize| estimate(&ops, &t, shape(batch, 64), Target::Cpu).unwrap().peak();
    let budget = at(2);
    assert!(at(3) > budget);
    let shape_of = |batch: usize, max_len: usize| shape(batch, max_len);
    let fit = memory::preflight(&ops, &t, (4, 64), &shape_of, (Target::Cpu, FrozenPrecision::F32.into()), false, Some(budget)).unwrap();
    assert_eq!(fit.verdict, Verdict::OutOfMemory { need: at(4), total: budget });
    assert_eq!(fit.proposal, Some((2, 64)));
    // When batch 1 does not fit either, the longest max_len at batch 1 that does.
    let one_at_40 = estimate(&ops, &t, shape(1, 40), Target::Cpu).unwrap().peak();
    let fit = memory::preflight(&ops, &t, (4, 64), &shape_of, (Target::Cpu, FrozenPrecision::F32.into()), false, Some(one_at_40)).unwrap();
    assert_eq!(fit.proposal, Some((1, 40)));
    let fits = memory::preflight(&ops, &t, (2, 64), &shape_of, (Target::Cpu, FrozenPrecision::F32.into()), false, Some(budget)).unwrap();
    assert_eq!((fits.verdict, fits.proposal), (Verdict::Fits { total: budget }, None));
}

#[test]
fn a_weight_larger_than_the_binding_cannot_run() {
    let ops = ops();
    let e = estimate(&ops, &training(&ops, &[]), shape(1, 8), Target::Cpu).unwrap();
    let target = Target::Wgpu { max_binding: Some(4 * VOCAB * D - 1) };
    let gpu = estimate(&ops, &training(&ops, &[]), shape(1, 8), target).unwrap();
    assert_eq!(gpu.largest_tensor, 4 * VOCAB * D);
    assert_eq!(Verdict::of(&gpu, target, None), Verdict::TensorTooLarge { bytes: 4 * VOCAB * D, limit: 4 * VOCAB * D - 1 });
    assert_eq!(Verdict::of(&e, Target::Cpu, None), Verdict::Unknown);
}

#[test]
fn proposals_search_the_batch_then_max_len() {
    assert_eq!(propose(4, 256, &|b, len| b * len <= 600), Some((2, 256)));
    assert_eq!(propose(4, 256, &|b, len| b * len <= 100), Some((1, 100)));
    assert_eq!(propose(4, 256, &|_, _| false), None);
}

#[test]
fn one_training_entry_per_op_is_required() {
    let ops = ops();
    let err = estimate(&ops, &[Training::Whole], shape(1, 8), Target::Cpu).unwrap_err();
    assert_eq!(err, MemoryError::TrainingLength { ops: ops.len(), training: 1 });
}

/// The machine's memory, as the kernel states it on Linux.
#[cfg(target_os = "linux")]
#[test]
fn system_memory_is_the_kernels_mem_total() {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = info.lines().find_map(|l| l.strip_prefix("MemTotal:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    assert_eq!(greentrainer::green::system_memory(), Some(kib * 1024));
}

#[test]
fn frozen_matrices_take_the_bytes_they_are_stored_in_in_the_estimate() {
    let ops = ops();
    let trained = ["model.layers.1.mlp.down_proj.weight", "model.norm.weight"];
    let mut t = training(&ops, &trained);
    // A LoRA-adapted weight stays frozen under its adapter.
    let adapted = ops.iter().position(|op| op.name == "model.layers.0.self_attn.q_proj.weight").unwrap();
    t[adapted] = Training::Adapter { rank: 4 };
    let f32_estimate = estimate(&ops, &t, shape(2, 8), Target::Cpu).unwrap();
    // Under `source`, the linear weights the file keeps quantized take its bytes per weight (here
    // Q4_K's 144 per 256, all but one), every other frozen matrix f16's 2.
    let linears = ops.iter().filter(|op| matches!(op.kind, OpKind::Linear { .. }));
    let quantized: BTreeMap<String, f64> = linears.skip(1).map(|op| (op.name.clone(), 144.0 / 256.0)).collect();
    let source = FrozenBytes { precision: FrozenPrecision::Source, quantized: Some(&quantized) };
    let p = greentrainer::profile::profile(&ops, shape(2, 8), false).unwrap();
    for frozen in [FrozenPrecision::F16.into(), FrozenPrecision::Bf16.into(), source] {
        let stored = memory::estimate_stored(&ops, &t, shape(2, 8), Target::Cpu, frozen).unwrap();
        // Independently: every frozen matrix (embedding, linear weights, the adapted one) saves its
        // 4 bytes less what it is stored in.
        let bytes = |name: &str| frozen.quantized.and_then(|q| q.get(name)).copied().unwrap_or(2.0);
        let saved: f64 = ops
            .iter()
            .zip(&p.nodes)
            .filter(|(op, _)| !trained.contains(&op.name.as_str()))
            .filter(|(op, _)| matches!(op.kind, OpKind::Embedding { .. } | OpKind::Linear { .. }))
            .map(|(op, n)| n.param_numel as f64 * (4.0 - bytes(&op.name)))
            .sum();
        assert!(saved > 0.0);
        assert_eq!(stored.weights, f32_estimate.weights - saved as u64, "{:?}", frozen.precision);
        let kept = |e: &memory::MemoryEstimate| (e.gradients, e.optimizer, e.step_peak);
        assert_eq!(kept(&stored), kept(&f32_estimate), "{:?}", frozen.precision);
    }
}

#[test]
fn importance_scoring_peaks_above_a_greentrainer_step_and_the_verdict_counts_it() {
    let ops = ops();
    let shape_of = |batch, seq| shape(batch, seq);
    let t = training(&ops, &["model.layers.1.mlp.down_proj.weight"]);
    let step = estimate(&ops, &t, shape(4, 64), Target::Cpu).unwrap();
    let scoring = memory::scoring_peak(&ops, shape(4, 64), Target::Cpu, FrozenPrecision::F32.into()).unwrap();
    // Two f32 copies of every weight (the model and the stepped copy) and full fine-tuning's pass.
    let every: Vec<&str> = ops
        .iter()
        .filter(|op| !matches!(op.kind, OpKind::AttentionCore { .. } | OpKind::LmHead { tied: true, .. }))
        .map(|op| op.name.as_str())
        .collect();
    let full = estimate(&ops, &training(&ops, &every), shape(4, 64), Target::Cpu).unwrap();
    assert_eq!(scoring, 2 * full.weights + full.step_peak);
    assert!(scoring > step.peak());
    // A device between the two: the step alone fits, the run that scores does not.
    let between = (step.peak() + scoring) / 2;
    let fits = memory::preflight(&ops, &t, (4, 64), &shape_of, (Target::Cpu, FrozenPrecision::F32.into()), false, Some(between)).unwrap();
    assert!(fits.verdict.runs() && fits.scoring.is_none());
    let scored = memory::preflight(&ops, &t, (4, 64), &shape_of, (Target::Cpu, FrozenPrecision::F32.into()), true, Some(between)).unwrap();
    assert_eq!(scored.scoring, Some(scoring));
    assert_eq!(scored.verdict, Verdict::OutOfMemory { need: scoring, total: between });
    assert!(scored.proposal.is_some(), "a smaller batch that scores within the device is proposed");
    // Half-precision storage lowers the model's share of it.
    let f16 = memory::scoring_peak(&ops, shape(4, 64), Target::Cpu, FrozenPrecision::F16.into()).unwrap();
    assert!(f16 < scoring);
}

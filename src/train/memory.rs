//! Memory pre-flight: the peak memory of one training step, from the op graph alone, before
//! anything is loaded onto the device; whether it fits the device; and, when it does not, the
//! largest batch (then max_len) that does.
//!
//! The model counts what this engine keeps, not what a generic framework would:
//! - weights are f32 whatever the file held, except frozen weight matrices under a low
//!   `frozen_precision` (2 bytes, or under `source` the file's quantized bytes per weight:
//!   `model::precision`, [`FrozenBytes`]); gradients and AdamW's two moments exist only
//!   for trained tensors (or their trained rows, or LoRA adapters);
//! - autodiff records nothing below the deepest trained tensor, and a matmul keeps its input only
//!   when its weight is trained (burn keeps `lhs` only for a tracked `rhs`), so activations are
//!   counted op by op from the first trained op in execution order, each linear's input once even
//!   when q/k/v (gate/up) share it;
//! - attention on the CPU is the flash kernel, which keeps q, k, v, its output and one log-sum-exp
//!   per row, never the `S x T` probabilities; on wgpu the eager tensor-op attention keeps the
//!   scores where they fit half a binding (`model::attention::fused_pays`);
//! - RMSNorm and SwiGLU are fused kernels keeping their inputs (Llama family); OPT's and BLOOM's
//!   LayerNorm, BLOOM's tanh-GELU and T5's norm and GELU are tensor ops that keep more: those
//!   counts come from reading the code, not from a measurement, and are approximate;
//! - the largest transient is the LM head's: whole logits and their log-softmax where they fit
//!   half the binding and 512 MiB, chunks otherwise (`model::loss::head_chunk_bytes`).
//!
//! The peak is a sweep over the backward pass (output to input): at each op, the activations not
//! yet consumed, plus the gradients created so far, plus that op's transient buffers.
//! `greentrainer bench memory` compares it with measured peaks.

use crate::device::{BackendKind, ComputeDevice};
use std::collections::BTreeMap;

use crate::model::FrozenPrecision;
use crate::model::graph::top_k_blocks;
use crate::model::loss::head_chunk_bytes;
use crate::profile::{BatchShape, OpKind, OpSpec, Profile, ProfileError, Stream, TensorRole, profile};
use crate::select::SelectConfig;
use crate::train::MethodKind;

const F32: u64 = 4;
/// AdamW's first and second moments, f32 each.
const ADAMW_BYTES_PER_PARAM: u64 = 2 * F32;
/// `[N, V]` buffers alive at once around the whole-logits loss (the logits, their stable shift,
/// `exp` kept for the backward pass, the log-probabilities: `log_softmax` in tensor ops). Three
/// at the peak, measured: `bench memory` on SmolLM2 at rho 0.5, where the head dominates, matched
/// activations + 3 x logits within 1% at 1 x 256, 4 x 128 and 4 x 256.
const WHOLE_LOGITS_COPIES: u64 = 3;
/// A linear weight's gradient is held twice at the end of a pass: autodiff's, for the `W^T` the
/// forward pass multiplies by, and the contiguous flattened copy `train::step::forward_backward`
/// returns. Measured: SmolLM2's full fine-tuning at 1 x 128 peaks at 891 MiB, twice its 386 MiB of
/// linear weights plus its 113 MiB embedding once.
const LINEAR_GRADIENT_COPIES: u64 = 2;
/// Chunk-sized buffers alive at once in the chunked loss (logits, shift, exp, softmax gradient).
const CHUNK_COPIES: u64 = 4;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MemoryError {
    #[error("{training} training entries given for {ops} ops")]
    TrainingLength { ops: usize, training: usize },
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// How one parameter (op of the graph) is trained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Training {
    #[default]
    Frozen,
    Whole,
    /// Only these many output rows (block granularity): a compact leaf of `rows x d_in`.
    Rows(usize),
    /// A LoRA adapter of this rank beside the frozen weight.
    Adapter {
        rank: usize,
    },
}

/// Where the step runs, as far as memory goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The flex backend: flash attention, whole logits, no binding limit.
    Cpu,
    /// A wgpu adapter binding at most `max_binding` bytes in one buffer (`None`: not known yet,
    /// planned as a large GPU: eager attention, whole logits).
    Wgpu { max_binding: Option<u64> },
}

impl Target {
    pub fn of(device: &ComputeDevice) -> Self {
        match device.backend {
            BackendKind::Cpu => Self::Cpu,
            BackendKind::Wgpu => Self::Wgpu { max_binding: device.max_buffer_binding },
        }
    }

    fn max_binding(self) -> Option<u64> {
        match self {
            Self::Cpu => None,
            Self::Wgpu { max_binding } => max_binding,
        }
    }

    /// `model::attention::fused_pays`: the flash kernel on the CPU, and on wgpu when the scores
    /// would not fit half a binding.
    fn flash_attention(self, scores_bytes: u64) -> bool {
        match self {
            Self::Cpu => true,
            Self::Wgpu { max_binding } => max_binding.is_some_and(|limit| scores_bytes > limit / 2),
        }
    }
}

/// The memory of one training step, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub gradients: u64,
    /// AdamW's moments of the trained parameters.
    pub optimizer: u64,
    /// What autodiff keeps for the backward pass, over every layer it crosses.
    pub activations: u64,
    /// The largest set of short-lived buffers (the LM head's logits and softmax, or its chunks).
    pub transient: u64,
    /// The forward+backward pass's own peak over the weights and the optimizer state (what
    /// `bench train` and `bench memory` measure): activations, gradients and transients where
    /// their sum is largest in the backward pass, so less than their total.
    pub step_peak: u64,
    /// The largest single buffer (a weight, the whole logits, an attention's scores).
    pub largest_tensor: u64,
    /// Transformer blocks the backward pass crosses.
    pub blocks_crossed: usize,
}

impl MemoryEstimate {
    /// The whole step: weights and optimizer state stay resident, the step adds its peak.
    pub fn peak(&self) -> u64 {
        self.weights + self.optimizer + self.step_peak
    }
}

/// The memory of a step of `shape` training each op of `ops` as `training` (one entry per op, in
/// execution order) on `target`, every weight in f32.
pub fn estimate(ops: &[OpSpec], training: &[Training], shape: BatchShape, target: Target) -> Result<MemoryEstimate, MemoryError> {
    estimate_stored(ops, training, shape, target, FrozenPrecision::F32.into())
}

/// Importance scoring's peak (GreenTrainer, at each selection): the model as stored, an f32 copy
/// of every parameter (the weights after one AdamW step, which the second pass runs through), and
/// a forward and backward pass differentiating every tensor (full fine-tuning's, without AdamW
/// state; the update between the passes frees gradients and moments tensor by tensor). It is above
/// a GreenTrainer step's peak, the more so the lower rho. Measured on SmolLM2-135M it errs high
/// (2663 MiB estimated, 2134 MiB for a whole one-step run's process).
pub fn scoring_peak(ops: &[OpSpec], shape: BatchShape, target: Target, frozen: FrozenBytes<'_>) -> Result<u64, MemoryError> {
    let p = profile(ops, shape, false)?;
    let every = planned(ops, &p, MethodKind::Full, 1.0, 0, (0, &[]))?;
    let stored: u64 = ops.iter().zip(&p.nodes).map(|(op, n)| stored_bytes(op, Training::Frozen, n.param_numel, frozen)).sum();
    let full = estimate(ops, &every, shape, target)?;
    Ok(stored + full.weights + full.step_peak)
}

/// How frozen weight matrices are stored, for the estimates: in `precision`'s type, except, under
/// `source`, the linear weights the file keeps in a quantization the kernels decode.
#[derive(Clone, Copy, Debug)]
pub struct FrozenBytes<'a> {
    pub precision: FrozenPrecision,
    /// Bytes per weight of each quantized linear weight, by name (`io::source_bytes`).
    pub quantized: Option<&'a BTreeMap<String, f64>>,
}

impl From<FrozenPrecision> for FrozenBytes<'static> {
    fn from(precision: FrozenPrecision) -> Self {
        Self { precision, quantized: None }
    }
}

impl FrozenBytes<'_> {
    /// Bytes per weight of the frozen matrix `name`.
    fn of(&self, name: &str) -> f64 {
        let quantized = self.quantized.filter(|_| self.precision == FrozenPrecision::Source).and_then(|q| q.get(name));
        quantized.copied().unwrap_or(self.precision.bytes() as f64)
    }
}

/// Bytes a parameter takes as stored: a frozen weight matrix as `frozen` says, the rest in f32.
fn stored_bytes(op: &OpSpec, t: Training, numel: usize, frozen: FrozenBytes<'_>) -> u64 {
    let matrix = matches!(
        op.kind,
        OpKind::Embedding { .. } | OpKind::Linear { .. } | OpKind::RelativeBias { .. } | OpKind::LmHead { tied: false, .. }
    );
    // A LoRA-adapted weight is frozen too: only its adapters train.
    let frozen_matrix = matrix && matches!(t, Training::Frozen | Training::Adapter { .. });
    if frozen_matrix { (numel as f64 * frozen.of(&op.name)).ceil() as u64 } else { numel as u64 * F32 }
}

/// [`estimate`] with frozen weight matrices stored as `frozen` says.
pub fn estimate_stored(
    ops: &[OpSpec],
    training: &[Training],
    shape: BatchShape,
    target: Target,
    frozen: FrozenBytes<'_>,
) -> Result<MemoryEstimate, MemoryError> {
    if ops.len() != training.len() {
        return Err(MemoryError::TrainingLength { ops: ops.len(), training: training.len() });
    }
    let p = profile(ops, shape, false)?;
    let steps = walk(ops, &p, training, shape, target);
    let head = head_transient(ops, shape, target);
    let param = |i: usize| p.nodes[i].param_numel as u64 * F32;
    let trained_bytes: u64 = (0..ops.len()).map(|i| grad_bytes(&ops[i], training[i], p.nodes[i].param_numel)).sum();
    let adapters: u64 = (0..ops.len()).map(|i| adapter_params(&ops[i], training[i]) * F32).sum();
    let weights = (0..ops.len()).map(|i| stored_bytes(&ops[i], training[i], p.nodes[i].param_numel, frozen)).sum::<u64>() + adapters;
    let largest_weight = (0..ops.len()).map(param).max().unwrap_or(0);
    let largest_step = steps.iter().map(|s| s.largest).max().unwrap_or(0);
    Ok(MemoryEstimate {
        weights,
        gradients: trained_bytes,
        optimizer: trained_bytes / F32 * ADAMW_BYTES_PER_PARAM,
        activations: steps.iter().map(|s| s.kept).sum(),
        transient: head.bytes.max(steps.iter().map(|s| s.transient).max().unwrap_or(0)),
        step_peak: sweep(&steps, head.bytes),
        largest_tensor: largest_weight.max(largest_step).max(head.largest),
        blocks_crossed: crossed_blocks(ops, &steps),
    })
}

/// What one op contributes to the step.
#[derive(Clone, Copy, Default)]
struct OpMemory {
    /// Kept from the forward pass until this op's backward.
    kept: u64,
    /// Gradient bytes this op's backward creates and holds to the end of the pass.
    grad: u64,
    /// Alive only during this op's backward (incoming and outgoing activation gradients).
    transient: u64,
    largest: u64,
    tracked: bool,
}

/// The backward pass from the output: the peak of unconsumed activations, gradients so far and
/// the op's transients; the head's buffers sit on top of every activation, before any gradient.
fn sweep(steps: &[OpMemory], head: u64) -> u64 {
    let mut kept: u64 = steps.iter().map(|s| s.kept).sum();
    let mut grads = 0;
    let mut peak = kept + head;
    for s in steps.iter().rev() {
        grads += s.grad;
        peak = peak.max(kept + grads + s.transient);
        kept -= s.kept;
    }
    peak.max(grads)
}

/// How the architecture's unlisted ops (norm internals, MLP activation) keep memory, told apart by
/// the op graph: an encoder-decoder is T5; LayerNorm biases are OPT or BLOOM (BLOOM's fused qkv).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Llama,
    Opt,
    Bloom,
    T5,
}

impl Style {
    fn of(ops: &[OpSpec]) -> Self {
        let has = |f: &dyn Fn(&OpSpec) -> bool| ops.iter().any(f);
        if has(&|op| op.stream == Stream::Decoder) {
            Self::T5
        } else if has(&|op| op.role == TensorRole::Qkv) {
            Self::Bloom
        } else if has(&|op| matches!(op.kind, OpKind::NormBias { .. })) {
            Self::Opt
        } else {
            Self::Llama
        }
    }

    /// Widths of `dim` a norm keeps: the fused RMSNorm its input for either gradient; LayerNorm
    /// (OPT, BLOOM) its centred input for dx and its normalised output for dw; T5's tensor-op RMS
    /// norm its input for dx and the normalised values for dw.
    fn norm_widths(self, input_tracked: bool, trained: bool) -> u64 {
        match self {
            Self::Llama => u64::from(input_tracked || trained),
            Self::Opt | Self::Bloom | Self::T5 => u64::from(input_tracked) + u64::from(trained),
        }
    }

    /// Widths of the MLP's hidden size its activation keeps: SwiGLU's kernel gate and up; ReLU
    /// its output; BLOOM's tanh-GELU in tensor ops x, the cubic, tanh, 1 + tanh and x / 2; T5's
    /// gated GELU those and the product's two sides (T5's original ReLU MLP: one, like OPT).
    fn mlp_widths(self, gated: bool) -> u64 {
        match (self, gated) {
            (Self::Llama, _) => 2,
            (Self::Opt, _) | (Self::T5, false) => 1,
            (Self::Bloom, _) => 5,
            (Self::T5, true) => 7,
        }
    }
}

/// Per op in execution order: kept activations, gradients, transients.
fn walk(ops: &[OpSpec], p: &Profile, training: &[Training], shape: BatchShape, target: Target) -> Vec<OpMemory> {
    let style = Style::of(ops);
    let gated = ops.iter().any(|op| op.role == TensorRole::Gate);
    let mut tracked = false;
    // The input width of the linear just before (biases skipped), whose input a linear of the
    // same width shares (q/k/v, gate/up, T5's cross keys/values), and whether it was counted.
    let mut shared: Option<(usize, bool)> = None;
    let mut kv_width = None;
    let mut out = Vec::with_capacity(ops.len());
    for (i, (op, &t)) in ops.iter().zip(training).enumerate() {
        let trained = t != Training::Frozen;
        let n = shape.tokens_of(op.stream).unwrap_or(0) as u64;
        let copies = if matches!(op.kind, OpKind::Linear { .. }) { LINEAR_GRADIENT_COPIES } else { 1 };
        let mut m = OpMemory { grad: copies * grad_bytes(op, t, p.nodes[i].param_numel), ..OpMemory::default() };
        match op.kind {
            OpKind::Linear { d_in, d_out } => {
                if tracked && matches!(op.role, TensorRole::Down | TensorRole::Fc2) {
                    m.kept += n * d_in as u64 * style.mlp_widths(gated) * F32;
                }
                let counted = matches!(shared, Some((w, true)) if w == d_in);
                if trained && !counted {
                    m.kept += n * d_in as u64 * F32;
                }
                if let Training::Adapter { rank } = t {
                    m.kept += n * rank as u64 * F32;
                }
                shared = Some((d_in, counted || trained));
                kv_width = match op.role {
                    TensorRole::K => Some(d_out),
                    TensorRole::Qkv => Some(d_out / 3),
                    _ => kv_width,
                };
                if tracked || trained {
                    m.transient = 2 * n * d_in.max(d_out) as u64 * F32;
                }
                m.largest = n * d_in.max(d_out) as u64 * F32;
            }
            OpKind::Bias { .. } => {}
            OpKind::Norm { dim } => m.kept = n * dim as u64 * style.norm_widths(tracked, trained) * F32,
            OpKind::AttentionCore { n_heads, head_dim, .. } if tracked => {
                let (kept, scores) = attention(shape, (op.stream, op.stream), n_heads, head_dim, kv_width, target);
                (m.kept, m.largest) = (kept, scores);
            }
            OpKind::CrossAttentionCore { n_heads, head_dim } if tracked => {
                let (kept, scores) = attention(shape, (op.stream, Stream::Input), n_heads, head_dim, None, target);
                (m.kept, m.largest) = (kept, scores);
            }
            // The dense `[1, H, S, T]` bias every layer of the stack adds, kept by each kernel call.
            OpKind::RelativeBias { n_heads, .. } if tracked || trained => {
                let s = shape.len_of(op.stream).unwrap_or(0) as u64;
                m.kept = n_heads as u64 * s * s * F32;
            }
            _ => {}
        }
        if !matches!(op.kind, OpKind::Linear { .. } | OpKind::Bias { .. }) {
            shared = None;
        }
        tracked |= trained;
        m.tracked = tracked;
        out.push(m);
    }
    out
}

/// Kept bytes and the scores' bytes of one attention core whose queries and keys run on
/// `streams` (self-attention: the same stream; cross-attention: keys on the input stream).
fn attention(
    shape: BatchShape,
    (stream, keys_stream): (Stream, Stream),
    n_heads: usize,
    head_dim: usize,
    kv_width: Option<usize>,
    target: Target,
) -> (u64, u64) {
    let queries = shape.tokens_of(stream).unwrap_or(0) as u64;
    let keys = shape.tokens_of(keys_stream).unwrap_or(0) as u64;
    let key_len = shape.len_of(keys_stream).unwrap_or(0) as u64;
    let width = (n_heads * head_dim) as u64;
    let kv = kv_width.map_or(width, |w| w as u64);
    let scores = queries * n_heads as u64 * key_len * F32;
    let kept = if target.flash_attention(scores) {
        // q and the output per query, k and v per key, one log-sum-exp per query and head.
        (queries * (2 * width + n_heads as u64) + keys * 2 * kv) * F32
    } else {
        // q, k and v repeated to every head for the matmuls, the scores' softmax and its input.
        (queries * width + keys * 2 * width) * F32 + 2 * scores
    };
    (kept, scores)
}

/// Gradient bytes of training `op`'s parameter as `t` (`numel` elements in the profile).
fn grad_bytes(op: &OpSpec, t: Training, numel: usize) -> u64 {
    let elements = match (t, op.kind) {
        (Training::Frozen, _) => 0,
        (Training::Whole, _) => numel,
        (Training::Rows(rows), OpKind::Linear { d_in, .. }) => rows * d_in,
        (Training::Rows(_), _) => numel,
        (Training::Adapter { .. }, _) => adapter_params(op, t) as usize,
    };
    elements as u64 * F32
}

/// Parameters of a LoRA adapter on `op` (A `[r, d_in]`, B `[d_out, r]`).
fn adapter_params(op: &OpSpec, t: Training) -> u64 {
    match (t, op.kind) {
        (Training::Adapter { rank }, OpKind::Linear { d_in, d_out }) => (rank * (d_in + d_out)) as u64,
        _ => 0,
    }
}

/// The LM head's largest moment and its largest single buffer.
struct HeadMemory {
    bytes: u64,
    largest: u64,
}

/// `model::loss::head_cross_entropy`: whole `[N, V]` logits when they fit half the binding and
/// 512 MiB, else chunks ([`head_chunk_bytes`]) plus the hidden states' gradient assembled whole.
fn head_transient(ops: &[OpSpec], shape: BatchShape, target: Target) -> HeadMemory {
    let Some(head) = ops.iter().rev().find(|op| matches!(op.kind, OpKind::LmHead { .. })) else {
        return HeadMemory { bytes: 0, largest: 0 };
    };
    let OpKind::LmHead { vocab, dim, .. } = head.kind else { unreachable!("found as a head") };
    let rows = shape.head_tokens.or(shape.tokens_of(head.stream)).unwrap_or(0) as u64;
    let logits = rows * vocab as u64 * F32;
    match head_chunk_bytes(logits, target.max_binding()) {
        Some(chunk) => HeadMemory { bytes: CHUNK_COPIES * chunk + rows * dim as u64 * F32, largest: chunk },
        None => HeadMemory { bytes: WHOLE_LOGITS_COPIES * logits, largest: logits },
    }
}

/// Blocks holding a tracked op.
fn crossed_blocks(ops: &[OpSpec], steps: &[OpMemory]) -> usize {
    let mut blocks: Vec<usize> = ops.iter().zip(steps).filter(|(_, s)| s.tracked).filter_map(|(op, _)| op.layer).collect();
    blocks.dedup();
    blocks.len()
}

/// What a method trains, planned before training (`Trainer::choose` decides at the start):
/// GreenTrainer's selection follows importance measured then, so parameter counts stand in for it
/// and the DP picks a plausible selection of that rho's depth.
pub fn planned(
    ops: &[OpSpec],
    p: &Profile,
    method: MethodKind,
    rho: f64,
    top_k: usize,
    lora: (usize, &[String]),
) -> Result<Vec<Training>, ProfileError> {
    let mut training = vec![Training::Frozen; ops.len()];
    let mut set = |idx: &[usize], t: Training| idx.iter().for_each(|&i| training[i] = t);
    let selectable: Vec<usize> = (0..p.nodes.len()).filter(|&i| p.nodes[i].selectable).collect();
    match method {
        MethodKind::Full => set(&selectable, Training::Whole),
        MethodKind::TopK => {
            let top = top_k_blocks(&p.nodes.iter().map(|n| n.layer).collect::<Vec<_>>(), top_k);
            set(&selectable.iter().copied().filter(|&i| top[i]).collect::<Vec<_>>(), Training::Whole);
        }
        MethodKind::Greentrainer if rho >= p.min_rho() => {
            let proxy: Vec<f64> = p.nodes.iter().map(|n| n.param_numel as f64).collect();
            set(&p.select(&proxy, &SelectConfig::new(rho))?, Training::Whole);
        }
        MethodKind::Greentrainer => {}
        MethodKind::Lora => {
            let (rank, targets) = lora;
            let adapted = |i: &usize| {
                matches!(ops[*i].kind, OpKind::Linear { .. }) && targets.iter().any(|t| ops[*i].name.contains(&format!(".{t}.")))
            };
            set(&selectable.iter().copied().filter(adapted).collect::<Vec<_>>(), Training::Adapter { rank });
        }
    }
    Ok(training)
}

/// Parameters `training` trains (adapters' for LoRA).
pub fn trained_params(ops: &[OpSpec], p: &Profile, training: &[Training]) -> usize {
    ops.iter().zip(training).enumerate().map(|(i, (op, &t))| (grad_bytes(op, t, p.nodes[i].param_numel) / F32) as usize).sum()
}

/// Whether a step fits the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The peak fits `total` bytes.
    Fits { total: u64 },
    /// A single buffer exceeds what the adapter binds: the step cannot run at all.
    TensorTooLarge { bytes: u64, limit: u64 },
    /// The peak exceeds the device's memory.
    OutOfMemory { need: u64, total: u64 },
    /// The device does not report its memory (wgpu adapters); only the binding limit was checked.
    Unknown,
}

impl Verdict {
    pub fn of(e: &MemoryEstimate, target: Target, total: Option<u64>) -> Self {
        Self::of_peak(e, e.peak(), target, total)
    }

    /// [`Verdict::of`] for a run that needs `peak` bytes at its highest (a step's, or importance
    /// scoring's when that is higher).
    fn of_peak(e: &MemoryEstimate, peak: u64, target: Target, total: Option<u64>) -> Self {
        if let Some(limit) = target.max_binding().filter(|&limit| e.largest_tensor > limit) {
            return Self::TensorTooLarge { bytes: e.largest_tensor, limit };
        }
        match total {
            Some(total) if peak > total => Self::OutOfMemory { need: peak, total },
            Some(total) => Self::Fits { total },
            None => Self::Unknown,
        }
    }

    /// Fits, or nothing says it does not.
    pub fn runs(&self) -> bool {
        matches!(self, Self::Fits { .. } | Self::Unknown)
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Fits { total } => format!("fits the device's {}", mib(*total)),
            Self::TensorTooLarge { bytes, limit } => {
                format!("cannot run: one buffer needs {}, the adapter binds at most {}", mib(*bytes), mib(*limit))
            }
            Self::OutOfMemory { need, total } => format!("does not fit: needs {} of the device's {}", mib(*need), mib(*total)),
            Self::Unknown => "device memory unknown (wgpu does not report it); no single buffer exceeds the binding limit".into(),
        }
    }
}

/// The largest batch below `batch` whose step runs at `max_len`, else the longest max_len below
/// `max_len` that runs at batch 1; `None` when not even one token fits. `runs(batch, max_len)`
/// must only get harder with size, as memory does.
pub fn propose(batch: usize, max_len: usize, runs: &dyn Fn(usize, usize) -> bool) -> Option<(usize, usize)> {
    if let Some(b) = largest(1, batch.saturating_sub(1), &|b| runs(b, max_len)) {
        return Some((b, max_len));
    }
    largest(1, max_len.saturating_sub(1), &|len| runs(1, len)).map(|len| (1, len))
}

/// The largest `x` in `lo..=hi` with `ok(x)`, for `ok` true up to some point and false after.
fn largest(lo: usize, hi: usize, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
    if hi < lo || !ok(lo) {
        return None;
    }
    let (mut good, mut bad) = (lo, hi + 1);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if ok(mid) { good = mid } else { bad = mid }
    }
    Some(good)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The estimate of a planned run at `batch x max_len` and the proposal when it does not run.
pub struct Preflight {
    pub estimate: MemoryEstimate,
    /// Importance scoring's peak ([`scoring_peak`]), for a run that scores (GreenTrainer); the
    /// verdict counts it where it is the higher.
    pub scoring: Option<u64>,
    pub verdict: Verdict,
    /// (batch, max_len) that fits, when the settings do not.
    pub proposal: Option<(usize, usize)>,
}

impl Preflight {
    /// Lines for a report (`greentrainer train --dry-run`).
    pub fn describe(&self) -> String {
        let e = &self.estimate;
        let mut out = format!(
            "memory: peak {} = weights {} + AdamW state {} + the step's peak {} (gradients {}, activations {} over {} blocks crossed, LM head {})\n",
            mib(e.peak()),
            mib(e.weights),
            mib(e.optimizer),
            mib(e.step_peak),
            mib(e.gradients),
            mib(e.activations),
            e.blocks_crossed,
            mib(e.transient)
        );
        if let Some(scoring) = self.scoring {
            out += &format!(
                "memory: importance scoring (at each selection) peaks at {}: the model, an f32 copy of every weight and a pass differentiating all of them\n",
                mib(scoring)
            );
        }
        out += &format!("memory: {}\n", self.verdict.describe());
        match self.proposal {
            Some((batch, max_len)) => out += &format!("memory: --batch-size {batch} --max-len {max_len} fits\n"),
            None if !self.verdict.runs() => out += "memory: not even batch 1 of one token fits\n",
            None => {}
        }
        out
    }
}

/// [`estimate_stored`] and [`Verdict`] for `training` at `shape_of(batch, max_len)`, with
/// importance scoring's peak when the run `scores` it (GreenTrainer), and a proposal when it does
/// not run.
pub fn preflight(
    ops: &[OpSpec],
    training: &[Training],
    (batch, max_len): (usize, usize),
    shape_of: &dyn Fn(usize, usize) -> BatchShape,
    (target, frozen): (Target, FrozenBytes<'_>),
    scores: bool,
    total: Option<u64>,
) -> Result<Preflight, MemoryError> {
    let at = |b: usize, len: usize| -> Result<(MemoryEstimate, Option<u64>), MemoryError> {
        let shape = shape_of(b, len);
        let scoring = if scores { Some(scoring_peak(ops, shape, target, frozen)?) } else { None };
        Ok((estimate_stored(ops, training, shape, target, frozen)?, scoring))
    };
    let verdict_of = |(e, scoring): &(MemoryEstimate, Option<u64>)| Verdict::of_peak(e, e.peak().max(scoring.unwrap_or(0)), target, total);
    let (estimate, scoring) = at(batch, max_len)?;
    let verdict = verdict_of(&(estimate.clone(), scoring));
    let runs = |b: usize, len: usize| at(b, len).is_ok_and(|r| verdict_of(&r).runs());
    let proposal = if verdict.runs() { None } else { propose(batch, max_len, &runs) };
    Ok(Preflight { estimate, scoring, verdict, proposal })
}

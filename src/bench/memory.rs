//! `greentrainer bench memory`: the memory pre-flight's estimate of a forward+backward pass
//! (`train::memory`) against the peak measured on the device, for GreenTrainer at several rho
//! and batch shapes. The selection is the one the pre-flight plans (parameter counts standing in
//! for importance), so estimate and measurement train the same tensors.
//!
//! With `--whole-step`: the peak and time of whole training steps of GreenTrainer, LoRA and full
//! fine-tuning with frozen weights in each `frozen_precision` ([`run_steps`]).

use std::collections::BTreeSet;
use std::time::Instant;

use burn::tensor::Device;

use super::guarded;
use super::train::PeakProbe;
use crate::device::ComputeDevice;
use crate::io::gguf::GgmlType;
use crate::kernels::frozen::QuantFormat;
use crate::model::lora::{LoraConfig, default_targets};
use crate::model::precision::{FrozenStore, store_frozen};
use crate::model::{FrozenPrecision, Linears, Model, ParamRef, Parameters};
use crate::profile::{BatchShape, OpKind, OpSpec, Stream, profile};
use crate::train::MethodKind;
use crate::train::batch::DeviceBatch;
use crate::train::memory::{self, MemoryEstimate, Target, Training};
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::step::forward_backward;

#[derive(Debug, Clone)]
pub struct MemoryRow {
    pub rho: f64,
    pub batch: usize,
    pub seq: usize,
    pub tensors: usize,
    pub estimate: MemoryEstimate,
    /// The pass's measured peak over what was resident before it, MiB.
    pub measured_mib: Option<f64>,
}

/// Every rho at every batch x seq; one measured pass each, on a random batch whose every token is
/// a target.
pub fn run(model: &Model, dev: &ComputeDevice, rhos: &[f64], batches: &[usize], seqs: &[usize]) -> Result<Vec<MemoryRow>, String> {
    return_freed_memory();
    let ops = model.op_graph();
    let probe = PeakProbe::for_backend(dev.backend);
    let mut rows = Vec::new();
    for &batch in batches {
        for &seq in seqs {
            let b = DeviceBatch::new(&super::random_batch(model, batch, seq), model);
            let p = profile(&ops, b.shape, false).map_err(|e| e.to_string())?;
            for &rho in rhos {
                let training = memory::planned(&ops, &p, MethodKind::Greentrainer, rho, 0, (0, &[])).map_err(|e| e.to_string())?;
                let estimate = memory::estimate(&ops, &training, b.shape, Target::of(dev)).map_err(|e| e.to_string())?;
                let trained = |name: &str| ops.iter().zip(&training).any(|(op, &t)| t != Training::Frozen && op.name == name);
                let measured_mib = guarded(|| {
                    let before = probe.reset(&dev.device);
                    let pass = forward_backward(model, &trained, &b).map_err(|e| e.to_string())?;
                    let _ = dev.device.sync();
                    let peak = probe.peak(&dev.device);
                    drop(pass);
                    Ok::<_, String>(before.zip(peak).map(|(a, z)| z - a))
                })??;
                let tensors = training.iter().filter(|&&t| t != Training::Frozen).count();
                eprintln!("rho {rho} batch {batch} x {seq}: estimated {:.0} MiB, measured {measured_mib:.0?} MiB", mib(estimate.step_peak));
                rows.push(MemoryRow { rho, batch, seq, tensors, estimate, measured_mib });
            }
        }
    }
    Ok(rows)
}

/// glibc keeps freed buffers below its (self-raising) mmap threshold in the heap for reuse, where
/// the resident-set peak cannot see them being reused: a pass would then seem to need less than it
/// does. A fixed 64 KiB threshold maps every tensor on its own and unmaps it when freed, so the
/// resident set follows the live tensors.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; it is called before this
    // benchmark allocates its tensors, and any value is valid for M_MMAP_THRESHOLD.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

pub fn table(rows: &[MemoryRow], device: &str) -> String {
    let mut out = String::from(
        "| rho | batch x seq | tensors | blocks crossed | weights MiB | gradients MiB | activations MiB | transient MiB | estimated fwd+bwd peak MiB | measured MiB | measured / estimated | estimated total MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let e = &r.estimate;
        let (measured, ratio) = match r.measured_mib {
            Some(m) => (format!("{m:.0}"), format!("{:.2}", m / mib(e.step_peak))),
            None => ("-".into(), "-".into()),
        };
        out += &format!(
            "| {} | {} x {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {measured} | {ratio} | {:.0} |\n",
            r.rho,
            r.batch,
            r.seq,
            r.tensors,
            e.blocks_crossed,
            mib(e.weights),
            mib(e.gradients),
            mib(e.activations),
            mib(e.transient),
            mib(e.step_peak),
            mib(e.peak()),
        );
    }
    out + &format!(
        "\n{device}; measured = the peak of one forward+backward pass over what was resident before it (weights; no optimizer state yet), \
         the same quantity as the estimated fwd+bwd peak; estimated total adds weights and AdamW state\n"
    )
}

/// One method with frozen weights in one precision: a whole training step (forward, backward,
/// AdamW) measured over the process without a model, so weights, gradients, optimizer state and
/// activations all count.
#[derive(Debug, Clone)]
pub struct StepRow {
    pub method: String,
    pub precision: FrozenPrecision,
    /// What the frozen matrices were stored in on this device.
    pub storage: String,
    pub tensors: usize,
    pub estimate: MemoryEstimate,
    /// Peak over the process without a model, MiB; `None` where not measured.
    pub measured_mib: Option<f64>,
    /// The second step's time (the first allocates the optimizer state).
    pub step_s: Option<f64>,
    /// Why the step was not measured (it would not fit this machine).
    pub skipped: Option<String>,
}

/// What a whole-step row trains.
struct StepMethod {
    name: String,
    training: Vec<Training>,
    /// Whether some weights stay frozen (not full fine-tuning): else one f32 row is enough.
    freezes: bool,
    /// LoRA's adapters, attached before the step.
    lora: Option<LoraConfig>,
}

/// GreenTrainer at each of `rhos` (the pre-flight's planned selection), LoRA (the paper's rank 8
/// on the query and value projections) and full fine-tuning, each at every frozen precision (full
/// fine-tuning freezes nothing: f32 only), on a random batch of `batch x seq` tokens, every one a
/// target. `ops` is the model's op graph and `build` makes a fresh model (with random weights)
/// for each measured row; a row whose estimate exceeds `available` bytes (0: every row) is
/// listed with its estimate only.
pub fn run_steps(
    ops: &[OpSpec],
    build: &dyn Fn() -> Result<Model, String>,
    dev: &ComputeDevice,
    rhos: &[f64],
    (batch, seq): (usize, usize),
    precisions: &[FrozenPrecision],
    available: Option<u64>,
) -> Result<Vec<StepRow>, String> {
    if ops.iter().any(|op| op.stream == Stream::Decoder) {
        return Err("whole steps are measured on decoder-only models (the random batch is a causal one)".into());
    }
    return_freed_memory();
    let probe = PeakProbe::for_backend(dev.backend);
    let baseline = probe.reset(&dev.device);
    let shape = BatchShape::padded(ops, batch, seq);
    let p = profile(ops, shape, false).map_err(|e| e.to_string())?;
    let lora = LoraConfig::paper(default_targets(ops));
    let plan = |method, rho| memory::planned(ops, &p, method, rho, 0, (lora.rank, &lora.targets));
    let mut methods = Vec::new();
    for &rho in rhos {
        methods.push(StepMethod {
            name: format!("GreenTrainer rho {rho}"),
            training: plan(MethodKind::Greentrainer, rho).map_err(|e| e.to_string())?,
            freezes: true,
            lora: None,
        });
    }
    methods.push(StepMethod {
        name: format!("LoRA r{}", lora.rank),
        training: plan(MethodKind::Lora, 0.0).map_err(|e| e.to_string())?,
        freezes: true,
        lora: Some(lora.clone()),
    });
    methods.push(StepMethod {
        name: "full".into(),
        training: plan(MethodKind::Full, 1.0).map_err(|e| e.to_string())?,
        freezes: false,
        lora: None,
    });
    // `source` on random weights: each linear weight as a Q4_K file holds it (`frozen_store`).
    let source_bytes: std::collections::BTreeMap<String, f64> = ops
        .iter()
        .filter_map(|op| match op.kind {
            OpKind::Linear { d_in, .. } => Some((op.name.clone(), crate::io::gguf::written_type(SOURCE_TYPE, d_in))),
            _ => None,
        })
        .filter(|(_, ty)| QuantFormat::TYPES.contains(ty))
        .map(|(name, ty)| (name, ty.bytes_per_value()))
        .collect();
    let mut rows = Vec::new();
    for m in &methods {
        for &precision in precisions.iter().filter(|&&q| m.freezes || q == FrozenPrecision::F32) {
            let frozen = memory::FrozenBytes { precision, quantized: Some(&source_bytes) };
            let estimate = memory::estimate_stored(ops, &m.training, shape, Target::of(dev), frozen).map_err(|e| e.to_string())?;
            let tensors = m.training.iter().filter(|&&t| t != Training::Frozen).count();
            let storage = match (precision, precision.storage(&dev.device)) {
                (FrozenPrecision::Source, dtype) => format!("{} linears, {dtype:?}", SOURCE_TYPE.name()),
                (_, dtype) => format!("{dtype:?}"),
            };
            let mut row =
                StepRow { method: m.name.clone(), precision, storage, tensors, estimate, measured_mib: None, step_s: None, skipped: None };
            if available == Some(0) {
                row.skipped = Some("estimate only".into());
            } else if let Some(limit) = available.filter(|&a| row.estimate.peak() > a) {
                row.skipped = Some(format!("estimated {:.1} GiB > {:.1} GiB available", gib(row.estimate.peak()), gib(limit)));
            } else {
                let (peak, step_s) = guarded(|| measure_step(build, dev, m, ops, precision, (batch, seq), probe))??;
                row.measured_mib = baseline.zip(peak).map(|(a, z)| z - a);
                row.step_s = Some(step_s);
            }
            eprintln!(
                "{} / frozen {}: estimated {:.0} MiB, measured {:.0?} MiB",
                row.method,
                precision.name(),
                mib(row.estimate.peak()),
                row.measured_mib
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The type `source` keeps random linear weights in: Q4_K, as a Q4_K_M file holds most of them
/// (random weights come from no file).
const SOURCE_TYPE: GgmlType = GgmlType::Q4_K;

/// How `model`'s frozen matrices are stored under `precision` on `device`: under `source`, each
/// frozen linear weight quantized to [`SOURCE_TYPE`] (Q8_0 where its rows do not take 256-value
/// blocks, as GGUF export writes it).
fn frozen_store(model: &Model, precision: FrozenPrecision, device: &Device, trained: &dyn Fn(&str) -> bool) -> FrozenStore {
    let mut store = FrozenStore::float(precision.storage(device));
    if precision == FrozenPrecision::Source {
        model.visit(&mut |name, p| {
            if let (ParamRef::Weight(w), false) = (p, trained(name))
                && let Some(q) = crate::io::gguf::quantized(&p.to_vec(), w.dims(), SOURCE_TYPE, device)
            {
                store.quantized.insert(name.to_string(), q);
            }
        });
    }
    store
}

/// Two steps of `m` on a fresh model with frozen matrices in `precision`: the peak over both and
/// the second's time.
fn measure_step(
    build: &dyn Fn() -> Result<Model, String>,
    dev: &ComputeDevice,
    m: &StepMethod,
    ops: &[OpSpec],
    precision: FrozenPrecision,
    (batch, seq): (usize, usize),
    probe: PeakProbe,
) -> Result<(Option<f64>, f64), String> {
    let mut model = build()?;
    let trained: BTreeSet<String> = match &m.lora {
        Some(config) => model.attach_lora(config).into_iter().collect(),
        None => ops.iter().zip(&m.training).filter(|&(_, &t)| t != Training::Frozen).map(|(op, _)| op.name.clone()).collect(),
    };
    let store = frozen_store(&model, precision, &dev.device, &|name| trained.contains(name));
    store_frozen(&mut model, &store, &|name| trained.contains(name));
    let b = DeviceBatch::new(&super::random_batch(&model, batch, seq), &model);
    let mut optimizer = AdamW::new(AdamWConfig::default());
    probe.reset(&dev.device);
    let mut step_s = 0.0;
    for _ in 0..2 {
        let started = Instant::now();
        let pass = forward_backward(&model, &|n| trained.contains(n), &b).map_err(|e| e.to_string())?;
        optimizer.step(&mut model, &pass.grads, 1e-5, 1.0);
        let _ = dev.device.sync();
        step_s = started.elapsed().as_secs_f64();
    }
    Ok((probe.peak(&dev.device), step_s))
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

pub fn step_table(rows: &[StepRow], model: &str, device: &str, (batch, seq): (usize, usize)) -> String {
    let mut out = format!(
        "{model}, batch {batch} x {seq}, {device}\n\n| method | frozen weights | stored as | tensors trained | weights MiB | AdamW MiB | estimated peak MiB | measured peak MiB | step s |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let e = &r.estimate;
        let measured = match (&r.measured_mib, &r.skipped) {
            (Some(m), _) => format!("{m:.0}"),
            (None, Some(why)) => format!("not run: {why}"),
            (None, None) => "-".into(),
        };
        let step = r.step_s.map_or("-".into(), |s| format!("{s:.2}"));
        out += &format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {measured} | {step} |\n",
            r.method,
            r.precision.name(),
            r.storage,
            r.tensors,
            mib(e.weights),
            mib(e.optimizer),
            mib(e.peak()),
        );
    }
    out + "\nmeasured = the process's peak during two whole steps (forward, backward, AdamW) over its size without a model: \
           weights as stored, gradients, optimizer state and activations; step s = the second step's time\n"
}

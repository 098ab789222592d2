//! `greentrainer bench train`: per-step time, tokens/s, predicted FLOPs ratio and measured time
//! ratio against full fine-tuning, and memory, for GreenTrainer at several rho, FT-top-2 and full
//! fine-tuning, measured in one process on one device.

use std::collections::BTreeSet;
use std::time::Instant;

use burn::tensor::Device;
use serde::Serialize;

use super::torch_reference::TorchStep;
use super::{guarded, median};
use crate::device::{BackendKind, ComputeDevice};
use crate::model::lora::{LoraConfig, default_targets};
use crate::model::{Linears, Model, Parameters};
use crate::profile::{Profile, profile};
use crate::select::SelectConfig;
use crate::train::batch::DeviceBatch;
use crate::train::cost::{step_macs, step_time_share};
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::scoring;
use crate::train::step::forward_backward;

#[derive(Debug, Clone, Serialize)]
pub struct TrainRow {
    pub device: String,
    pub method: String,
    pub tensors: usize,
    pub step_s: f64,
    /// Forward + backward only (what the FLOPs model predicts), without the optimizer update.
    pub fwd_bwd_s: f64,
    pub tokens_per_s: f64,
    /// Predicted by the FLOPs model: (T_fp + bp(m)) / T_full.
    pub flops_ratio: f64,
    /// Predicted step time: MACs plus each trained parameter's update work, against full
    /// fine-tuning's (`train::cost::step_time_share`), to compare with `time_ratio`.
    pub modelled_time_ratio: f64,
    /// Measured: step time / full fine-tuning step time.
    pub time_ratio: f64,
    /// Measured: forward+backward time / that of full fine-tuning.
    pub fwd_bwd_ratio: f64,
    pub weights_mib: f64,
    pub grads_mib: f64,
    pub optimizer_mib: f64,
    /// Peak memory added by forward+backward (activations kept for backward, gradients,
    /// temporaries): on the CPU the kernel's peak-RSS mark (Linux), on a GPU the growth of the
    /// device pool (see `PeakProbe`); PyTorch's row on CUDA gives its allocator's peak instead.
    pub step_rss_mib: Option<f64>,
    /// PyTorch eager full fine-tuning's step time on the matching device / this step time
    /// (above 1: faster than PyTorch's full fine-tuning), when the reference ran.
    pub vs_torch_full: Option<f64>,
}

struct Method {
    name: String,
    /// The model as this method trains it (LoRA adds adapters).
    model: Model,
    trainable: BTreeSet<String>,
    /// Runs the batch's prompt prefix without gradient (GreenTrainer's `frozen_prompt`).
    frozen_prompt: bool,
}

/// The benchmark's batch: `batch` random rows of `seq` tokens whose first `frozen_prompt` share
/// is a prompt without targets.
#[derive(Clone, Copy)]
pub struct Shape {
    pub batch: usize,
    pub seq: usize,
    pub frozen_prompt: f64,
}

/// The batch as the methods see it: every token differentiated, and GreenTrainer's with the prompt
/// prefix frozen, each with its profile.
struct Batches {
    whole: (DeviceBatch, Profile),
    frozen: (DeviceBatch, Profile),
}

impl Batches {
    fn new(model: &Model, shape: Shape) -> Result<Self, String> {
        let Shape { batch, seq, frozen_prompt } = shape;
        let mut host = super::random_batch(model, batch, seq);
        let prompt = ((frozen_prompt.clamp(0.0, 1.0) * seq as f64) as usize).min(seq.saturating_sub(2));
        for row in host.labels.chunks_mut(seq) {
            row[..prompt].fill(-100);
        }
        host.target_tokens = batch * (seq - prompt);
        let whole = DeviceBatch::new(&host, model);
        let frozen = whole.clone().freeze_prompt();
        let profiled = |b: DeviceBatch| profile(&model.op_graph(), b.shape, false).map(|p| (b, p)).map_err(|e| e.to_string());
        Ok(Self { whole: profiled(whole)?, frozen: profiled(frozen)? })
    }

    fn of(&self, m: &Method) -> &(DeviceBatch, Profile) {
        if m.frozen_prompt { &self.frozen } else { &self.whole }
    }
}

/// Runs the comparison on `dev`; `steps` timed steps per method after one warm-up step.
/// `full_only` leaves out every method but full fine-tuning: the quick speed check against PyTorch.
pub fn run(model: &Model, dev: &ComputeDevice, shape: Shape, steps: usize, full_only: bool) -> Result<Vec<TrainRow>, String> {
    // No logits-size check: training runs the head in chunks (model::loss::head_cross_entropy).
    let device = &dev.device;
    let Shape { batch, seq, frozen_prompt } = shape;
    let batches = Batches::new(model, shape)?;
    let methods = methods(model, &batches, frozen_prompt, full_only)?;
    let mut rows: Vec<TrainRow> = Vec::new();
    let mut full_time = None;
    let mut full_fb = None;
    for m in &methods {
        let (b, p) = batches.of(m);
        let mut working = m.model.clone();
        let mut optimizer = AdamW::new(AdamWConfig::default());
        let timed = guarded(|| {
            let mut times = Vec::new();
            let mut fb_times = Vec::new();
            let mut step = || -> Result<(f64, f64), String> {
                let start = Instant::now();
                let pass = forward_backward(&working, &|n| m.trainable.contains(n), b).map_err(|e| e.to_string())?;
                let _ = device.sync();
                let fb = start.elapsed().as_secs_f64();
                optimizer.step(&mut working, &pass.grads, 1e-5, 1.0);
                let _ = device.sync();
                Ok((start.elapsed().as_secs_f64(), fb))
            };
            for i in 0..=steps {
                let (total, fb) = step()?;
                if i > 0 {
                    times.push(total);
                    fb_times.push(fb);
                }
            }
            // Memory in a pass of its own, untimed: on a GPU the probe empties the allocator's
            // pool first, and refilling it would slow the step it measures.
            let probe = PeakProbe::for_backend(dev.backend);
            let before = probe.reset(device);
            let pass = forward_backward(&working, &|n| m.trainable.contains(n), b).map_err(|e| e.to_string())?;
            let _ = device.sync();
            let peak = before.zip(probe.peak(device)).map(|(a, z)| z - a);
            drop(pass);
            Ok::<_, String>((median(times), median(fb_times), peak))
        })??;
        let (step_s, fwd_bwd_s, rss) = timed;
        // A run cut short (a time limit on a lent machine) still leaves the methods it finished.
        eprintln!("{}: {}: {step_s:.3} s/step, forward+backward {fwd_bwd_s:.3} s", dev.name, m.name);
        if m.name == "full" {
            full_time = Some(step_s);
            full_fb = Some(fwd_bwd_s);
        }
        let numel: usize = {
            let mut n = 0;
            working.visit(&mut |name, p| {
                if m.trainable.contains(name) {
                    n += p.numel();
                }
            });
            n
        };
        let flops_ratio = step_macs(p, &m.model, &m.trainable) / p.t_full();
        let modelled_time_ratio = step_time_share(p, &m.model, &m.trainable);
        let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
        rows.push(TrainRow {
            device: dev.name.clone(),
            method: m.name.clone(),
            tensors: m.trainable.len(),
            step_s,
            fwd_bwd_s,
            tokens_per_s: (batch * seq) as f64 / step_s,
            flops_ratio,
            modelled_time_ratio,
            time_ratio: 0.0,
            fwd_bwd_ratio: 0.0,
            weights_mib: mib(model.num_params() * 4),
            grads_mib: mib(numel * 4),
            optimizer_mib: mib(optimizer.state_bytes()),
            step_rss_mib: rss,
            vs_torch_full: None,
        });
    }
    let (full, full_fb) = full_time.zip(full_fb).ok_or("full fine-tuning did not run")?;
    for r in &mut rows {
        r.time_ratio = r.step_s / full;
        r.fwd_bwd_ratio = r.fwd_bwd_s / full_fb;
    }
    Ok(rows)
}

/// Adds PyTorch's full fine-tuning step as a row of `device` and each of that device's rows'
/// speed relative to it.
pub fn add_torch(rows: &mut Vec<TrainRow>, device: &str, torch: &TorchStep, batch: usize, seq: usize) {
    let full = rows.iter().find(|r| r.device == device && r.method == "full").map(|r| (r.step_s, r.fwd_bwd_s));
    for r in rows.iter_mut().filter(|r| r.device == device) {
        r.vs_torch_full = Some(torch.step_s / r.step_s);
    }
    rows.push(TrainRow {
        device: device.to_string(),
        method: format!("PyTorch {} eager full ({}, {} attention)", torch.torch, torch.device, torch.attention),
        tensors: 0,
        step_s: torch.step_s,
        fwd_bwd_s: torch.fwd_bwd_s,
        tokens_per_s: (batch * seq) as f64 / torch.step_s,
        flops_ratio: 1.0,
        modelled_time_ratio: 1.0,
        time_ratio: full.map_or(f64::NAN, |(step, _)| torch.step_s / step),
        fwd_bwd_ratio: full.map_or(f64::NAN, |(_, fb)| torch.fwd_bwd_s / fb),
        weights_mib: f64::NAN,
        grads_mib: f64::NAN,
        optimizer_mib: f64::NAN,
        step_rss_mib: Some(torch.peak_mib),
        vs_torch_full: Some(1.0),
    });
}

/// Full first (the reference), then GreenTrainer at rho 0.4/0.5/0.7 (importance scored once on the
/// batch; with `frozen_prompt` on its prompt-frozen form), FT-top-2 and LoRA.
fn methods(model: &Model, batches: &Batches, prompt_share: f64, full_only: bool) -> Result<Vec<Method>, String> {
    let method = |name: String, trainable: BTreeSet<String>| Method { name, model: model.clone(), trainable, frozen_prompt: false };
    let mut out = vec![method("full".into(), model.param_names().into_iter().collect())];
    if full_only {
        return Ok(out);
    }
    let frozen_prompt = prompt_share > 0.0;
    let (b, p) = if frozen_prompt { &batches.frozen } else { &batches.whole };
    let imp = scoring::score(model, &AdamW::new(AdamWConfig::default()), b, 2e-5, &|_| true).map_err(|e| e.to_string())?;
    let per_node: Vec<f64> = p.nodes.iter().map(|n| imp.scores.get(&n.name).copied().unwrap_or(0.0)).collect();
    let prompt = if frozen_prompt { format!(", {:.0}% prompt frozen", 100.0 * prompt_share) } else { String::new() };
    for rho in [0.4, 0.5, 0.7] {
        let exec = p.select(&per_node, &SelectConfig::new(rho)).map_err(|e| e.to_string())?;
        let trainable = exec.iter().map(|&i| p.nodes[i].name.clone()).collect();
        out.push(Method { frozen_prompt, ..method(format!("GreenTrainer rho={rho}{prompt}"), trainable) });
    }
    out.push(method("FT-top-2".into(), model.top_layers(2)));
    let mut adapted = model.clone();
    let lora = LoraConfig::paper(default_targets(&model.op_graph()));
    let names = adapted.attach_lora(&lora);
    out.push(Method {
        name: format!("LoRA r={} on q,v", lora.rank),
        model: adapted,
        trainable: names.into_iter().collect(),
        frozen_prompt: false,
    });
    Ok(out)
}

/// How a step's peak memory is read, in MiB: `reset` before the step gives the baseline, `peak`
/// after it the high-water mark since; their difference is what the step added.
#[derive(Clone, Copy)]
pub(crate) enum PeakProbe {
    /// The process's resident set: the kernel's peak-RSS mark (Linux `clear_refs` 5, `VmHWM`).
    HostRss,
    /// The device allocator's reserved bytes. It reserves pages as tensors need them and keeps
    /// them until a cleanup, so after a cleanup its growth over a step is the step's peak (to
    /// page granularity); bytes in use alone would miss the temporaries freed before the end.
    DevicePool,
}

impl PeakProbe {
    pub(crate) fn for_backend(backend: BackendKind) -> Self {
        match backend {
            BackendKind::Cpu => Self::HostRss,
            BackendKind::Wgpu => Self::DevicePool,
        }
    }

    pub(crate) fn reset(self, device: &Device) -> Option<f64> {
        match self {
            Self::HostRss => {
                std::fs::write("/proc/self/clear_refs", "5").ok()?;
                status_mib("VmRSS:")
            }
            Self::DevicePool => {
                let _ = device.sync();
                device.memory_cleanup();
                Self::reserved_mib(device)
            }
        }
    }

    pub(crate) fn peak(self, device: &Device) -> Option<f64> {
        match self {
            Self::HostRss => status_mib("VmHWM:"),
            Self::DevicePool => Self::reserved_mib(device),
        }
    }

    fn reserved_mib(device: &Device) -> Option<f64> {
        device.memory_pool_usage().map(|u| u.bytes_reserved as f64 / (1024.0 * 1024.0))
    }
}

fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Memory the reference does not report is NaN: a dash.
fn mib_cell(v: f64) -> String {
    if v.is_finite() { format!("{v:.0}") } else { "-".into() }
}

pub fn table(rows: &[TrainRow], batch: usize, seq: usize) -> String {
    let mut out = String::from(
        "| device | method | tensors | step s | tok/s | x PyTorch full | FLOPs ratio (model) | fwd+bwd time ratio | step time ratio (model) | step time ratio | weights MiB | grads MiB | optimizer MiB | fwd+bwd peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {:.3} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |\n",
            r.device,
            r.method,
            r.tensors,
            r.step_s,
            r.tokens_per_s,
            r.vs_torch_full.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
            r.flops_ratio,
            r.fwd_bwd_ratio,
            r.modelled_time_ratio,
            r.time_ratio,
            mib_cell(r.weights_mib),
            mib_cell(r.grads_mib),
            mib_cell(r.optimizer_mib),
            r.step_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into())
        );
    }
    out + &format!(
        "\nbatch {batch} x {seq} tokens; median step (forward + backward + AdamW) after one warm-up step; FLOPs ratio = (T_fp + bp(m)) / T_full predicted by the profiler, to compare with the fwd+bwd time ratio; step time ratio (model) adds each trained parameter's update work, to compare with the step time ratio; x PyTorch full = PyTorch eager full fine-tuning's step time / this step time (above 1 is faster), PyTorch's ratios are to this engine's full fine-tuning\n"
    )
}

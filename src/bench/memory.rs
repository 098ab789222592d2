//! `greentrainer bench memory`: the memory pre-flight's estimate of a forward+backward pass
//! (`train::memory`) against the peak measured on the device, for GreenTrainer at several rho
//! and batch shapes. The selection is the one the pre-flight plans (parameter counts standing in
//! for importance), so estimate and measurement train the same tensors.

use super::guarded;
use super::train::PeakProbe;
use crate::device::ComputeDevice;
use crate::model::Model;
use crate::profile::profile;
use crate::train::MethodKind;
use crate::train::batch::DeviceBatch;
use crate::train::memory::{self, MemoryEstimate, Target, Training};
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

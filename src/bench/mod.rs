//! Benchmarks behind `greentrainer bench ...`: each prints a markdown table (and may write JSON).
//! Ratios are what to compare; absolute numbers depend on the machine's load.

pub mod accuracy;
pub mod forward;
pub mod generate;
pub mod granularity;
pub mod held_out;
pub mod masked;
pub mod memory;
pub mod select;
pub mod torch_reference;
pub mod train;

use std::time::{Duration, Instant};

/// Runs `f` once to warm up (shader compilation, autotune), then `iters` times; returns the median.
pub fn median_time(iters: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// The middle value (the upper one of an even count); `v` must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs a benchmark body that may fail on a device (e.g. a tensor larger than the adapter can
/// bind), turning a panic inside the backend into a message for the table.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "backend error".into())
    })
}

/// Refuses a run whose logits tensor exceeds what the adapter can bind in one buffer (lavapipe and
/// default wgpu limits: 128 MiB), instead of failing deep inside the backend.
pub fn check_fits(dev: &crate::device::ComputeDevice, batch: usize, seq: usize, vocab: usize) -> Result<(), String> {
    let logits_bytes = (batch * seq * vocab * 4) as u64;
    match dev.max_buffer_binding {
        Some(limit) if logits_bytes > limit => {
            Err(format!("skipped: logits need {} MiB, the adapter binds at most {} MiB", logits_bytes >> 20, limit >> 20))
        }
        _ => Ok(()),
    }
}

/// Token ids drawn at random, each also the label.
pub fn random_batch(model: &crate::model::Model, batch: usize, seq: usize) -> crate::data::Batch {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(1);
    let ids: Vec<u32> = (0..batch * seq).map(|_| rng.random_range(0..model.info().vocab_size as u32)).collect();
    crate::data::Batch {
        labels: ids.iter().map(|&t| t as i64).collect(),
        attention_mask: vec![1; batch * seq],
        input_ids: ids,
        batch,
        seq,
        real_tokens: batch * seq,
        target_tokens: batch * seq,
    }
}

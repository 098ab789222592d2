//! `greentrainer bench forward`: tokens/s of a forward pass (to the logits) and of training's
//! forward+backward (every parameter trained) on each available backend.

use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::torch_reference::TorchStep;
use super::{guarded, median_time};
use crate::device::ComputeDevice;
use crate::model::{BatchInput, Model, attention_mask, params::with_trainable};

pub struct ForwardRow {
    pub device: String,
    pub forward_tokens_per_s: Result<f64, String>,
    pub train_tokens_per_s: Result<f64, String>,
}

/// Benchmarks `model` (already on `dev`) with random tokens `[batch, seq]`.
pub fn run(model: &Model, dev: &ComputeDevice, batch: usize, seq: usize, iters: usize) -> ForwardRow {
    let device = &dev.device;
    let mut rng = StdRng::seed_from_u64(0);
    let vocab = model.info().vocab_size as i64;
    let ids: Vec<i64> = (0..batch * seq).map(|_| rng.random_range(0..vocab)).collect();
    let labels = ids.clone();
    let tokens = (batch * seq) as f64;
    let input = || Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [batch, seq]), device);
    let mask = attention_mask(None, batch, seq, 0);
    if let Err(e) = model.forward(input().narrow(1, 0, 1), None, None) {
        return ForwardRow { device: dev.name.clone(), forward_tokens_per_s: Err(e.to_string()), train_tokens_per_s: Err(e.to_string()) };
    }
    // Decoder-only from here: the forward passes below succeed. Only the inference forward holds
    // the whole logits tensor, so only it can exceed the adapter's binding limit.
    let forward = super::check_fits(dev, batch, seq, model.info().vocab_size).and_then(|()| {
        guarded(|| {
            let t = median_time(iters, || {
                if let Ok(logits) = model.forward(input(), Some(&mask), None) {
                    let _: f32 = logits.sum().into_scalar();
                }
            });
            tokens / t.as_secs_f64()
        })
    });
    // Training's own path: the head and the loss in chunks (no [B, S, V] logits).
    let trainable = with_trainable(model, |_| true);
    let train = guarded(|| {
        let t = median_time(iters, || {
            let batch = BatchInput::Causal { ids: input(), mask: mask.clone() };
            if let Ok((loss, _)) = trainable.train_loss(&batch, &labels) {
                let grads = loss.backward();
                let _ = device.sync();
                drop(grads);
            }
        });
        tokens / t.as_secs_f64()
    });
    ForwardRow { device: dev.name.clone(), forward_tokens_per_s: forward, train_tokens_per_s: train }
}

/// PyTorch eager's forward and forward+backward speed on the device matching `device`.
pub fn torch_row(device: &str, torch: &TorchStep, batch: usize, seq: usize) -> ForwardRow {
    ForwardRow {
        device: format!("{device}: PyTorch {} eager ({}, {} attention)", torch.torch, torch.device, torch.attention),
        forward_tokens_per_s: Ok(torch.forward_tokens_per_s),
        train_tokens_per_s: Ok((batch * seq) as f64 / torch.fwd_bwd_s),
    }
}

pub fn table(rows: &[ForwardRow], batch: usize, seq: usize) -> String {
    let cell = |r: &Result<f64, String>| match r {
        Ok(v) => format!("{v:.0}"),
        Err(e) => e.clone(),
    };
    let mut out = String::from("| device | forward tok/s | forward+backward tok/s |\n|---|---|---|\n");
    for r in rows {
        out += &format!("| {} | {} | {} |\n", r.device, cell(&r.forward_tokens_per_s), cell(&r.train_tokens_per_s));
    }
    out + &format!("\nbatch {batch} x {seq} tokens; median of timed iterations after one warm-up\n")
}

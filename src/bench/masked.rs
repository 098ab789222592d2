//! `greentrainer bench masked-dw`: the masked weight gradient at 12.5/25/50/100% of row blocks
//! against the dense weight gradient (`dY^T X` by burn's matmul), on SmolLM2-135M's linear shapes,
//! by each wgpu path (the tiled WGSL kernel, gather + dense matmul) and the tuned choice between
//! them that training uses. Goal: time proportional to the fraction selected.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};

use super::guarded;
use crate::device::ComputeDevice;
use crate::kernels::{DwPath, masked_dw, runs_wgsl};

/// (name, d_out, d_in) of SmolLM2-135M's linear layers.
const SHAPES: [(&str, usize, usize); 4] =
    [("q_proj/o_proj", 576, 576), ("k_proj/v_proj", 192, 576), ("gate/up_proj", 1536, 576), ("down_proj", 576, 1536)];
const FRACTIONS: [f64; 4] = [0.125, 0.25, 0.5, 1.0];

/// Rows per block: one attention head of SmolLM2 (head_dim 64).
const BLOCK: usize = 64;

pub fn run(dev: &ComputeDevice, tokens: usize, iters: usize) -> String {
    let device = &dev.device;
    let mut out = String::from(
        "| device | layer (out x in) | blocks selected | tiled WGSL ms | gather+matmul ms | tuned ms | dense ms | tuned / dense | ideal |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, d_out, d_in) in SHAPES {
        let dy = Tensor::<2>::random([tokens, d_out], Distribution::Uniform(-1.0, 1.0), device);
        let x = Tensor::<2>::random([tokens, d_in], Distribution::Uniform(-1.0, 1.0), device);
        let time = |f: &dyn Fn() -> Tensor<2>| -> Result<f64, String> {
            guarded(|| {
                let _: f32 = f().sum().into_scalar();
                let start = Instant::now();
                for _ in 0..iters {
                    let _: f32 = f().sum().into_scalar();
                }
                start.elapsed().as_secs_f64() * 1e3 / iters as f64
            })
        };
        let dense = time(&|| dy.clone().transpose().matmul(x.clone()));
        let blocks = d_out / BLOCK;
        let mut counts: Vec<usize> = FRACTIONS.iter().map(|f| ((blocks as f64 * f).round() as usize).max(1)).collect();
        // Small layers round two fractions to the same block count; measure it once.
        counts.dedup();
        for chosen in counts {
            // Every other block first, so selections are scattered like real head choices.
            let mut order: Vec<usize> = (0..blocks).step_by(2).chain((1..blocks).step_by(2)).collect();
            order.truncate(chosen);
            order.sort_unstable();
            let rows: Vec<u32> = order.iter().flat_map(|b| (b * BLOCK..(b + 1) * BLOCK).map(|r| r as u32)).collect();
            let path = |p| time(&|| masked_dw(dy.clone(), x.clone(), &rows, p));
            // The CPU has a single path (gather + matmul).
            let tiled = if runs_wgsl(device) { path(DwPath::Tiled) } else { Err("n/a".into()) };
            let (gathered, tuned) = (path(DwPath::GatherMatmul), path(DwPath::Auto));
            let cell = |r: &Result<f64, String>| r.as_ref().map(|v| format!("{v:.2}")).unwrap_or_else(|e| e.clone());
            let ratio = match (&tuned, &dense) {
                (Ok(m), Ok(d)) => format!("{:.3}", m / d),
                _ => "-".into(),
            };
            out += &format!(
                "| {} | {name} ({d_out} x {d_in}) | {chosen}/{blocks} | {} | {} | {} | {} | {ratio} | {:.3} |\n",
                dev.name,
                cell(&tiled),
                cell(&gathered),
                cell(&tuned),
                cell(&dense),
                chosen as f64 / blocks as f64
            );
        }
    }
    out + &format!("\n{tokens} tokens; blocks of {BLOCK} rows (one head); mean of {iters} runs after a warm-up\n")
}

//! `greentrainer bench masked-dw`: the masked weight gradient at 12.5/25/50/100% of row blocks
//! against the dense weight gradient (`dY^T X` by burn's matmul), on SmolLM2-135M's linear shapes,
//! by each wgpu path (the tiled WGSL kernel, gather + dense matmul in either operand order) and the
//! tuned choice between them that training uses. Goal: time proportional to the fraction selected.
//! The last column, the matmul on already-gathered columns, is the floor of the gather path.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

use super::guarded;
use crate::device::ComputeDevice;
use crate::kernels::{DwPath, interleaved_best, masked_dw, row_index, runs_wgsl};

/// (name, d_out, d_in) of SmolLM2-135M's linear layers.
const SHAPES: [(&str, usize, usize); 4] =
    [("q_proj/o_proj", 576, 576), ("k_proj/v_proj", 192, 576), ("gate/up_proj", 1536, 576), ("down_proj", 576, 1536)];
const FRACTIONS: [f64; 4] = [0.125, 0.25, 0.5, 1.0];

/// Rows per block: one attention head of SmolLM2 (head_dim 64).
const BLOCK: usize = 64;

pub fn run(dev: &ComputeDevice, tokens: usize, iters: usize) -> String {
    let device = &dev.device;
    let mut out = String::from(
        "| device | layer (out x in) | blocks selected | tiled WGSL ms | gather+matmul ms | swapped ms | tuned ms | dense ms | tuned / dense | ideal | matmul alone / dense |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, d_out, d_in) in SHAPES {
        let dy = Tensor::<2>::random([tokens, d_out], Distribution::Uniform(-1.0, 1.0), device);
        let x = Tensor::<2>::random([tokens, d_in], Distribution::Uniform(-1.0, 1.0), device);
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
            let (dy, x, rows) = (&dy, &x, &rows);
            let path = |p| move || masked_dw(dy.clone(), x.clone(), rows, p);
            let dense = || dy.clone().transpose().matmul(x.clone());
            let dy_rows = dy.clone().select(1, row_index(rows, device));
            let compact = || dy_rows.clone().transpose().matmul(x.clone());
            let (tiled, gathered, swapped, tuned) =
                (path(DwPath::Tiled), path(DwPath::GatherMatmul), path(DwPath::SwappedGatherMatmul), path(DwPath::Auto));
            // The CPU has a single path (gather + matmul).
            let mut runs: Vec<&dyn Fn() -> Tensor<2>> = vec![&dense, &compact, &gathered, &tuned];
            if runs_wgsl(device) {
                runs.extend([&tiled as &dyn Fn() -> Tensor<2>, &swapped]);
            }
            let mut times = best_times(&runs, iters, device).into_iter();
            let [dense, compact, gathered, tuned, tiled, swapped] = [(); 6].map(|_| times.next().unwrap_or_else(|| Err("n/a".into())));
            let cell = |r: &Result<f64, String>| r.as_ref().map(|v| format!("{v:.2}")).unwrap_or_else(|e| e.clone());
            let ratio = |m: &Result<f64, String>| match (m, &dense) {
                (Ok(m), Ok(d)) => format!("{:.3}", m / d),
                _ => "-".into(),
            };
            let (compact_ratio, ratio) = (ratio(&compact), ratio(&tuned));
            out += &format!(
                "| {} | {name} ({d_out} x {d_in}) | {chosen}/{blocks} | {} | {} | {} | {} | {} | {ratio} | {:.3} | {compact_ratio} |\n",
                dev.name,
                cell(&tiled),
                cell(&gathered),
                cell(&swapped),
                cell(&tuned),
                cell(&dense),
                chosen as f64 / blocks as f64
            );
        }
    }
    out + &format!(
        "\n{tokens} tokens; blocks of {BLOCK} rows (one head); best of {iters} rounds after a warm-up (load from other work only adds time); each round runs every column once, so load drift hits them alike\n"
    )
}

/// Best milliseconds of each of `runs` over `iters` interleaved rounds after a warm-up (see
/// [`interleaved_best`]), each run timed until the device is idle, with no read-back whose fixed
/// cost would flatter small fractions.
fn best_times(runs: &[&dyn Fn() -> Tensor<2>], iters: usize, device: &Device) -> Vec<Result<f64, String>> {
    let times = interleaved_best(runs.len(), iters, |i| {
        guarded(|| {
            let start = Instant::now();
            let out = runs[i]();
            device.sync().expect("the device failed during the benchmark");
            let took = start.elapsed();
            drop(out);
            took
        })
    });
    times.into_iter().map(|t| t.map(|d| d.as_secs_f64() * 1e3)).collect()
}

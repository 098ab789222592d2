//! Planning a run before it starts: its FLOPs plan (which a budget turns into a rho) and the
//! `--dry-run` report of FLOPs, time, energy, CO2 and memory, from the FLOPs model and the
//! device's assumed figures (`crate::green`).

use crate::error::{Error, Result};
use crate::green::budget::{Budget, RunPlan};
use crate::green::meter::Efficiency;
use crate::green::{carbon, device_memory};
use crate::model::Linears;
use crate::profile::{BatchShape, profile};

use super::{MethodKind, Trainer, memory};

/// The FLOPs model of `trainer`'s run: every batch charged at batch_size x max_len (padding can
/// only shorten real batches, so the plan is an upper bound).
pub fn run_plan(trainer: &Trainer) -> Result<RunPlan> {
    let c = &trainer.config;
    let ops = trainer.loaded.model.op_graph();
    let p = profile(&ops, BatchShape::padded(&ops, c.batch_size, c.max_len), false).map_err(|e| Error::Other(e.to_string()))?;
    let steps = trainer.total_steps();
    let selections = if c.method != MethodKind::Greentrainer || steps == 0 {
        0
    } else {
        let epochs = steps.div_ceil(trainer.steps_per_epoch().max(1));
        let every = |n: usize, of: usize| (of - 1).checked_div(n).unwrap_or(0);
        1 + every(c.reselect_every_steps, steps) + every(c.reselect_every_epochs, epochs)
    };
    Ok(RunPlan { micro_steps: steps * c.grad_accum, selections, full_step_macs: p.t_full(), forward_macs: p.t_fp() })
}

/// The rho `budget` allows for `trainer`'s run on its device.
pub fn rho_for_budget(trainer: &Trainer, budget: Budget) -> Result<f64> {
    let flops = budget.to_flops(Efficiency::for_device(&trainer.device), trainer.config.grid_g_per_kwh);
    run_plan(trainer)?.rho_for(flops).map_err(|e| Error::Other(format!("budget {budget}: {e}")))
}

/// The memory of the configured method's step at batch_size x max_len on the trainer's device
/// (GreenTrainer's selection planned as `train::memory::planned` does, before importance).
fn memory_preflight(trainer: &Trainer) -> Result<memory::Preflight> {
    let c = &trainer.config;
    let ops = trainer.loaded.model.op_graph();
    let shape_of = |batch, max_len| BatchShape::padded(&ops, batch, max_len);
    let p = profile(&ops, shape_of(c.batch_size, c.max_len), false).map_err(|e| Error::Other(e.to_string()))?;
    let training =
        memory::planned(&ops, &p, c.method, c.rho, c.top_k, (c.lora_rank, &c.lora_targets)).map_err(|e| Error::Other(e.to_string()))?;
    let target = memory::Target::of(&trainer.device);
    let source_bytes = crate::io::source_bytes(&c.model, &ops);
    Ok(memory::preflight(
        &ops,
        &training,
        (c.batch_size, c.max_len),
        &shape_of,
        (target, memory::FrozenBytes { precision: c.frozen_precision.on(&trainer.device.device), quantized: Some(&source_bytes) }),
        c.method == MethodKind::Greentrainer,
        device_memory(&trainer.device),
    )?)
}

/// `greentrainer train --dry-run`: planned FLOPs, time, energy and CO2 of GreenTrainer at the
/// configured rho, full fine-tuning and LoRA, all from the FLOPs model and the stated assumptions.
pub fn dry_run_report(trainer: &Trainer) -> Result<String> {
    let c = &trainer.config;
    let eff = Efficiency::for_device(&trainer.device);
    let plan = run_plan(trainer)?;
    // LoRA from the cost model of the model with adapters attached (not the paper's 2/3 of full).
    // The trainer resolves LoRA's default targets for LoRA runs only; this row needs them always.
    let mut lora = c.lora_config();
    if lora.targets.is_empty() {
        lora.targets = crate::model::lora::default_targets(&trainer.loaded.model.op_graph());
    }
    let mut lora_model = trainer.loaded.model.clone();
    let adapters = lora_model.attach_lora(&lora).into_iter().collect();
    let ops = lora_model.op_graph();
    let p = profile(&ops, BatchShape::padded(&ops, c.batch_size, c.max_len), false).map_err(|e| Error::Other(e.to_string()))?;
    let lora_flops = crate::profile::FLOPS_PER_MAC * plan.micro_steps as f64 * super::cost::step_macs(&p, &lora_model, &adapters);
    let rows = [
        (format!("GreenTrainer, rho {:.3} (at most)", c.rho), plan.flops(c.rho)),
        ("full fine-tuning".to_string(), plan.flops(1.0) - plan.flops(0.0)),
        (format!("LoRA r {} on {}", c.lora_rank, lora.targets.join(",")), lora_flops),
    ];
    let mut out = format!(
        "{} optimizer steps x {} micro-batches of {} x {} tokens on {}\n",
        trainer.total_steps(),
        c.grad_accum,
        c.batch_size,
        c.max_len,
        trainer.device.name
    );
    if let Some(b) = c.budget {
        out += &format!("budget {b} -> rho {:.4}\n", c.rho);
    }
    if let Some(depth) = trainer.depth_guidance()? {
        out += &format!("GreenTrainer {depth}\n");
    }
    out += &memory_preflight(trainer)?.describe();
    out += "| run | FLOPs | time | energy | CO2 |\n|---|---|---|---|---|\n";
    for (label, flops) in rows {
        let wh = eff.joules(flops) / 3600.0;
        out += &format!(
            "| {label} | {:.3e} | {:.1} s | {:.4} Wh | {:.3} g |\n",
            flops,
            eff.seconds(flops),
            wh,
            carbon::co2_grams(wh, c.grid_g_per_kwh)
        );
    }
    out += &format!(
        "time and energy are estimates from assumed {} figures ({:.0e} FLOP/s, {:.0e} FLOP/J), CO2 at {} g/kWh; \
         FLOPs are upper bounds (every batch padded to max_len; GreenTrainer includes importance scoring)\n",
        eff.label, eff.flops_per_second, eff.flops_per_joule, c.grid_g_per_kwh
    );
    Ok(out)
}

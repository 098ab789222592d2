//! Green accounting: what a run costs in time, energy and CO2 beside its FLOPs, measured where the
//! platform allows and estimated (and labelled so) elsewhere; budgets in those units; run cards.

pub mod apple;
pub mod budget;
pub mod carbon;
pub mod card;
#[cfg(target_os = "macos")]
mod ioreport;
pub mod meter;
mod nvml;

use serde::{Deserialize, Serialize};

use crate::device::{BackendKind, ComputeDevice};
use budget::{Budget, BudgetReport};
use meter::{Energy, EnergySource};

/// What a run cost (the `energy` event and the run card).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    /// The training loop's own time (this session when resumed), model saving excluded.
    pub wall_time_s: f64,
    pub energy_wh: f64,
    pub energy_source: EnergySource,
    pub co2_g: f64,
    pub grid_g_per_kwh: f64,
    pub budget: Option<BudgetReport>,
}

/// The run a footprint is of: the grid's carbon intensity (g/kWh) and the budget it was given, if
/// any, with the rho chosen for it.
pub struct RunTerms {
    pub grid_g_per_kwh: f64,
    pub budget: Option<(Budget, f64)>,
}

impl Footprint {
    /// `flops_spent`: the run's total, compared with a FLOPs budget.
    pub fn new(terms: RunTerms, energy: Energy, wall_time_s: f64, flops_spent: f64) -> Self {
        let energy_wh = energy.wh();
        let g = terms.grid_g_per_kwh;
        Self {
            wall_time_s,
            energy_wh,
            energy_source: energy.source,
            co2_g: carbon::co2_grams(energy_wh, g),
            grid_g_per_kwh: g,
            budget: terms.budget.map(|(b, rho)| BudgetReport {
                budget: b,
                rho,
                realised: b.realised(flops_spent, energy_wh, g, wall_time_s),
            }),
        }
    }
}

/// Total memory of the device where the platform says: the machine's for the CPU (any OS),
/// NVML's for an NVIDIA GPU it identifies; None for other GPUs (wgpu reports no adapter's
/// memory).
pub fn device_memory(device: &ComputeDevice) -> Option<u64> {
    match device.backend {
        BackendKind::Cpu => system_memory(),
        BackendKind::Wgpu => meter::nvml_gpu_memory(None, device),
    }
}

/// Total memory of this machine, where the OS says.
pub fn system_memory() -> Option<u64> {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    Some(system.total_memory()).filter(|&bytes| bytes > 0)
}

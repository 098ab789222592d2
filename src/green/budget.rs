//! Budget mode: the user names what a run may cost (FLOPs, Wh, g CO2 or seconds) and the engine
//! picks the largest rho whose planned FLOPs fit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::carbon::co2_grams;
use super::meter::Efficiency;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    Flops(f64),
    EnergyWh(f64),
    Co2G(f64),
    TimeS(f64),
}

impl Budget {
    pub fn amount(self) -> f64 {
        match self {
            Self::Flops(v) | Self::EnergyWh(v) | Self::Co2G(v) | Self::TimeS(v) => v,
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Self::Flops(_) => "FLOPs",
            Self::EnergyWh(_) => "Wh",
            Self::Co2G(_) => "g CO2",
            Self::TimeS(_) => "s",
        }
    }

    /// The budget in FLOPs. Energy, CO2 and time go through the assumed efficiency and throughput,
    /// because they must be known before the run.
    pub fn to_flops(self, efficiency: Efficiency, g_per_kwh: f64) -> f64 {
        match self {
            Self::Flops(f) => f,
            Self::EnergyWh(wh) => wh * 3600.0 * efficiency.flops_per_joule,
            Self::Co2G(g) if g_per_kwh > 0.0 => g / g_per_kwh * 1000.0 * 3600.0 * efficiency.flops_per_joule,
            // A carbon-free grid: CO2 does not bound the run.
            Self::Co2G(_) => f64::INFINITY,
            Self::TimeS(s) => s * efficiency.flops_per_second,
        }
    }

    /// The realised figure in this budget's unit.
    pub fn realised(self, flops: f64, wh: f64, g_per_kwh: f64, seconds: f64) -> f64 {
        match self {
            Self::Flops(_) => flops,
            Self::EnergyWh(_) => wh,
            Self::Co2G(_) => co2_grams(wh, g_per_kwh),
            Self::TimeS(_) => seconds,
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount(), self.unit())
    }
}

/// `--budget 2.5wh`, `30g`, `600s` or `1e15flops`.
impl FromStr for Budget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let split = text.find(|c: char| c.is_ascii_alphabetic() && c != 'e').unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number.trim().parse().map_err(|_| format!("`{text}`: expected a number followed by wh, g, s or flops"))?;
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("`{text}`: the budget must be a positive number"));
        }
        match unit.trim() {
            "flops" => Ok(Self::Flops(value)),
            "wh" => Ok(Self::EnergyWh(value)),
            "g" => Ok(Self::Co2G(value)),
            "s" => Ok(Self::TimeS(value)),
            other => Err(format!("`{text}`: unknown unit `{other}` (use wh, g, s or flops)")),
        }
    }
}

/// The FLOPs model of a GreenTrainer run at the configured batch shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunPlan {
    /// Forward+backward passes: optimizer steps x gradient accumulation.
    pub micro_steps: usize,
    /// Importance scorings (each two full forward+backward passes).
    pub selections: usize,
    /// MACs of one full fine-tuning pass (`Profile::t_full`).
    pub full_step_macs: f64,
    /// MACs of its forward pass (`Profile::t_fp`).
    pub forward_macs: f64,
}

impl RunPlan {
    /// An upper bound of the FLOPs (2 x MAC) at `rho`: the selection DP keeps each step within
    /// rho x T_full.
    pub fn flops(&self, rho: f64) -> f64 {
        // Each selection scores importance in two full forward+backward passes.
        crate::profile::FLOPS_PER_MAC * self.full_step_macs * (self.micro_steps as f64 * rho + 2.0 * self.selections as f64)
    }

    /// The smallest rho a step can have: the forward pass alone.
    pub fn min_rho(&self) -> f64 {
        self.forward_macs / self.full_step_macs
    }

    /// The largest rho in (0, 1] whose [`RunPlan::flops`] fit `budget_flops` (closed form: the
    /// bound is linear in rho).
    pub fn rho_for(&self, budget_flops: f64) -> Result<f64, String> {
        let scoring = self.flops(0.0);
        let per_rho = self.flops(1.0) - scoring;
        let rho = if per_rho > 0.0 { ((budget_flops - scoring) / per_rho).min(1.0) } else { 1.0 };
        if rho < self.min_rho() {
            return Err(format!(
                "the budget allows rho {rho:.3}, below the smallest feasible {:.3} (the forward pass alone): it needs at least {:.3e} FLOPs for this run",
                self.min_rho(),
                self.flops(self.min_rho())
            ));
        }
        Ok(rho)
    }
}

/// A budget next to what the run did, in the budget's unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetReport {
    pub budget: Budget,
    /// The rho the budget picked.
    pub rho: f64,
    pub realised: f64,
}

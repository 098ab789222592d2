//! Command-line flags for every `TrainConfig` field; a flag given on the command line wins over
//! the config file.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::config::{Granularity, MethodKind, TrainConfig};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::green::budget::Budget;
use crate::select::CostRule;

#[derive(clap::Args, Serialize, Default, Debug)]
pub struct TrainOverrides {
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub source_field: Option<String>,
    /// Comma-separated target field(s).
    #[arg(long, value_delimiter = ',')]
    pub target_fields: Option<Vec<String>>,
    #[arg(long)]
    pub skip_bad_rows: Option<bool>,
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    #[arg(long, value_enum)]
    pub method: Option<MethodKind>,
    #[arg(long)]
    pub rho: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub lora_rank: Option<usize>,
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Comma-separated, e.g. q_proj,v_proj.
    #[arg(long, value_delimiter = ',')]
    pub lora_targets: Option<Vec<String>>,
    #[arg(long)]
    pub reselect_every_steps: Option<usize>,
    #[arg(long)]
    pub reselect_every_epochs: Option<usize>,
    #[arg(long, value_enum)]
    pub granularity: Option<Granularity>,
    #[arg(long)]
    pub block_rows: Option<usize>,
    #[arg(long)]
    pub dp_capacity: Option<usize>,
    #[arg(long, value_enum)]
    pub cost_rule: Option<CostRule>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub max_len: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub clip_norm: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    #[arg(long)]
    pub group_by_length: Option<bool>,
    #[arg(long)]
    pub save_model: Option<bool>,
    /// g CO2 per kWh, or a preset (approximate): world, eu, us, france, india.
    #[arg(long, value_parser = crate::green::carbon::parse_intensity)]
    pub grid_g_per_kwh: Option<f64>,
    /// Cost limit instead of rho, e.g. 2.5wh, 30g (CO2), 600s or 1e15flops.
    #[arg(long)]
    pub budget: Option<Budget>,
}

impl TrainOverrides {
    /// `base` with every field given here replaced.
    pub fn apply(&self, base: TrainConfig) -> Result<TrainConfig> {
        let mut merged = serde_json::to_value(base).map_err(|e| Error::Other(e.to_string()))?;
        let given = serde_json::to_value(self).map_err(|e| Error::Other(e.to_string()))?;
        if let (Value::Object(m), Value::Object(g)) = (&mut merged, given) {
            m.extend(g.into_iter().filter(|(_, v)| !v.is_null()));
        }
        serde_json::from_value(merged).map_err(|e| Error::Other(format!("invalid setting: {e}")))
    }
}

//! Command-line flags for every `TrainConfig` field; a flag given on the command line wins over
//! the config file.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::choice;
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::green::budget::Budget;
use crate::model::FrozenPrecision;
use crate::select::CostRule;
use crate::train::config::{Granularity, MethodKind, TrainConfig};

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
    #[arg(long, value_parser = choice(&DeviceChoice::ALL))]
    pub device: Option<DeviceChoice>,
    #[arg(long, value_parser = choice(&MethodKind::ALL))]
    pub method: Option<MethodKind>,
    #[arg(long, value_parser = finite)]
    pub rho: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub lora_rank: Option<usize>,
    #[arg(long, value_parser = finite)]
    pub lora_alpha: Option<f64>,
    #[arg(long, value_parser = finite)]
    pub lora_dropout: Option<f64>,
    /// Comma-separated, e.g. q_proj,v_proj.
    #[arg(long, value_delimiter = ',')]
    pub lora_targets: Option<Vec<String>>,
    #[arg(long)]
    pub reselect_every_steps: Option<usize>,
    #[arg(long)]
    pub reselect_every_epochs: Option<usize>,
    #[arg(long)]
    pub importance_batches: Option<usize>,
    #[arg(long, value_parser = choice(&Granularity::ALL))]
    pub granularity: Option<Granularity>,
    #[arg(long)]
    pub block_rows: Option<usize>,
    #[arg(long)]
    pub dp_capacity: Option<usize>,
    #[arg(long, value_parser = choice(&CostRule::ALL))]
    pub cost_rule: Option<CostRule>,
    /// GreenTrainer: run each batch's shared prompt prefix without gradient (`--frozen-prompt true`).
    #[arg(long)]
    pub frozen_prompt: Option<bool>,
    /// How weights that do not train are stored: f32, f16, bf16, or source (a GGUF's quantized
    /// linear layers as the file holds them, the rest f16).
    #[arg(long, value_parser = choice(&FrozenPrecision::ALL))]
    pub frozen_precision: Option<FrozenPrecision>,
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
    #[arg(long, value_parser = finite)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    #[arg(long, value_parser = finite)]
    pub weight_decay: Option<f64>,
    #[arg(long, value_parser = finite)]
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
    /// The run's settings: the config file's (when given), each flag given here replacing its key,
    /// then validated. Errors name the file or the flag a bad value came from. A flag wins over
    /// the file, and `rho` and `budget` exclude each other: a budget picks rho.
    pub fn resolve(&self, file: Option<&Path>) -> Result<TrainConfig> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::invalid(path, e.to_string()))?;
                if table.contains_key("rho") && table.contains_key("budget") {
                    return Err(Error::invalid(path, "sets both rho and budget; a budget picks rho, so set one"));
                }
                table
            }
            None => toml::Table::new(),
        };
        let flags = toml::Table::try_from(self).map_err(|e| Error::Other(e.to_string()))?;
        if flags.contains_key("rho") && flags.contains_key("budget") {
            return Err(Error::Setting {
                key: "budget".into(),
                message: "--rho and --budget exclude each other: a budget picks rho".into(),
            });
        }
        for (flag, overridden) in [("rho", "budget"), ("budget", "rho")] {
            if flags.contains_key(flag) {
                table.remove(overridden);
            }
        }
        // Asking for a number of steps means running that many, not stopping at the default epochs.
        let steps_given = flags.get("max_steps").and_then(toml::Value::as_integer).is_some_and(|n| n > 0);
        if steps_given && !flags.contains_key("epochs") && !table.contains_key("epochs") {
            table.insert("epochs".into(), toml::Value::Integer(0));
        }
        table.extend(flags.clone());
        let origin = |key: &str| match file {
            Some(path) if !flags.contains_key(key) => path.display().to_string(),
            _ => format!("--{}", key.replace('_', "-")),
        };
        let config: TrainConfig = table.try_into().map_err(|e: toml::de::Error| match file {
            Some(path) => Error::invalid(path, format!("with the flags given: {}", e.message())),
            None => Error::Other(format!("invalid setting: {}", e.message())),
        })?;
        config.validate().map_err(|e| match e {
            Error::Setting { key, message } => Error::Setting { message: format!("{}: {message}", origin(&key)), key },
            other => other,
        })?;
        Ok(config)
    }
}

/// A number flag that must be finite: NaN and infinities are refused when the flag is parsed.
fn finite(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("`{text}` is not a finite number")),
        Err(e) => Err(format!("`{text}`: {e}")),
    }
}

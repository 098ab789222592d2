//! The run card saved beside a fine-tuned model: what was trained, and what it cost.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Footprint;
use crate::error::{Error, Result};
use crate::eval::rouge::CorpusRouge;
use crate::io::atomic::write_file;
use crate::profile::FlopsConvention;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCard {
    pub model: String,
    pub data: String,
    pub method: String,
    /// GreenTrainer's FLOPs fraction; None for other methods.
    pub rho: Option<f64>,
    /// Tensors (or row blocks) trained at the end.
    pub selection_size: usize,
    pub steps: usize,
    pub flops_spent: f64,
    pub flops_full: f64,
    pub final_loss: Option<f64>,
    pub footprint: Footprint,
    /// ROUGE of the saved model, one entry per evaluated data file (added by `greentrainer eval`).
    #[serde(default)]
    pub rouge: Vec<RougeRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RougeRecord {
    pub data: String,
    pub rouge: CorpusRouge,
}

impl RunCard {
    /// Writes run_card.json and run_card.md into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Other(e.to_string()))?;
        write_file(&dir.join("run_card.json"), json.as_bytes())?;
        write_file(&dir.join("run_card.md"), self.markdown().as_bytes())
    }

    /// The card in `dir`, if the folder has one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("run_card.json");
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| Error::invalid(&path, format!("not a run card: {e}")))
    }

    /// Adds (or replaces) the ROUGE of `data` on the card in `dir`; false when `dir` has no card.
    pub fn record_rouge(dir: &Path, data: &str, rouge: CorpusRouge) -> Result<bool> {
        let Some(mut card) = Self::read(dir)? else { return Ok(false) };
        card.rouge.retain(|r| r.data != data);
        card.rouge.push(RougeRecord { data: data.to_string(), rouge });
        card.write(dir)?;
        Ok(true)
    }

    pub fn markdown(&self) -> String {
        let f = &self.footprint;
        let flops = |x: f64| FlopsConvention::Flops.format(x / 2.0);
        let saved = if self.flops_full > 0.0 { 100.0 * (1.0 - self.flops_spent / self.flops_full) } else { 0.0 };
        let mut rows = vec![("Model", self.model.clone()), ("Data", self.data.clone()), ("Method", self.method.clone())];
        if let Some(rho) = self.rho {
            rows.push(("rho", format!("{rho:.4}")));
        }
        rows.extend([
            ("Trained tensors", self.selection_size.to_string()),
            ("Steps", self.steps.to_string()),
            ("FLOPs", format!("{} ({saved:.1}% below full fine-tuning's {})", flops(self.flops_spent), flops(self.flops_full))),
            ("Training time", format!("{:.1} s", f.wall_time_s)),
            ("Energy", format!("{:.3} Wh, {}", f.energy_wh, f.energy_source)),
            ("CO2", format!("{:.2} g at {} g/kWh", f.co2_g, f.grid_g_per_kwh)),
            ("Final loss", self.final_loss.map_or("-".into(), |l| format!("{l:.4}"))),
        ]);
        for r in &self.rouge {
            let g = &r.rouge;
            let pct = |x: f64| format!("{:.2}", 100.0 * x);
            rows.push((
                "ROUGE-1/2/L/Lsum",
                format!(
                    "{} / {} / {} / {} on {} ({} rows)",
                    pct(g.rouge1),
                    pct(g.rouge2),
                    pct(g.rouge_l),
                    pct(g.rouge_lsum),
                    r.data,
                    g.count
                ),
            ));
        }
        if let Some(b) = &f.budget {
            rows.push(("Budget", format!("{} -> rho {:.4}; realised {:.4} {}", b.budget, b.rho, b.realised, b.budget.unit())));
        }
        let mut md = String::from("# GreenTrainer run card\n\n| | |\n|---|---|\n");
        for (k, v) in rows {
            md.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
        }
        md
    }
}

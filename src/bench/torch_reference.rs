//! The PyTorch eager step of the same config, measured by `scripts/torch_reference.py` in the
//! same run as the engine's, so `bench train` and `bench forward` print ratios taken side by side.
//! Optional: without python, torch or the script the benches print their own rows only.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::device::BackendKind;
use crate::model::Model;

/// What the script measured (see its docstring for the method).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TorchStep {
    pub torch: String,
    pub device: String,
    pub attention: String,
    pub step_s: f64,
    pub fwd_bwd_s: f64,
    pub tokens_per_s: f64,
    pub forward_tokens_per_s: f64,
    pub peak_mib: f64,
}

/// Where the script is and which interpreter runs it.
#[derive(Debug, Clone)]
pub struct TorchReference<'a> {
    pub script: &'a Path,
    pub python: &'a str,
}

impl TorchReference<'_> {
    /// Full fine-tuning of `model`'s architecture at `batch` x `seq` on the torch device that
    /// matches `backend` (the CPU for the CPU, CUDA for a GPU adapter); an error says why not.
    pub fn measure(&self, model: &Model, backend: BackendKind, batch: usize, seq: usize, steps: usize) -> Result<TorchStep, String> {
        if !self.script.is_file() {
            return Err(format!("{} not found", self.script.display()));
        }
        let dir = tempfile::tempdir().map_err(|e| format!("cannot make a scratch folder: {e}"))?;
        let config = serde_json::to_vec_pretty(model.raw_config()).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("config.json"), config).map_err(|e| format!("cannot write config.json: {e}"))?;
        let device = match backend {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "cuda",
        };
        let output = Command::new(self.python)
            .arg(self.script)
            .args(["--config".as_ref(), dir.path().as_os_str()])
            .args(["--batch", &batch.to_string(), "--seq", &seq.to_string(), "--steps", &steps.to_string(), "--device", device])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.python))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        if let Ok(err) = serde_json::from_str::<serde_json::Value>(last)
            && let Some(message) = err.get("error").and_then(|m| m.as_str())
        {
            return Err(message.to_string());
        }
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("{} failed: {}", self.script.display(), stderr.lines().last().unwrap_or("no message")));
        }
        serde_json::from_str(last).map_err(|e| format!("unreadable output of {}: {e}", self.script.display()))
    }
}

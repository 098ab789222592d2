//! A run's output folder: a new run never replaces a previous one unless the user says so, and a
//! resumed run continues only the run its checkpoint belongs to.

use std::path::{Path, PathBuf};

use super::config::TrainConfig;
use super::events::JsonlLog;
use crate::error::{Error, Result};

/// How a run treats what an earlier run left in its output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// The folder must hold no earlier run.
    New,
    /// Continue the run whose checkpoint the folder holds.
    Resume,
    /// Replace the earlier run's event log, checkpoint and saved model (other files stay).
    Overwrite,
}

/// What a run writes into its output folder, relative to it.
const RUN_FILES: [&str; 4] = ["events.jsonl", "checkpoint", "model", "adapter"];

/// The files of an earlier run that `dir` holds.
pub fn earlier_run(dir: &Path) -> Vec<&'static str> {
    RUN_FILES.into_iter().filter(|f| dir.join(f).exists()).collect()
}

/// `dir` when it holds no earlier run, else the first free `dir-2`, `dir-3`, ...: where a new
/// run goes without replacing one. A `dir` that is itself such a numbered folder of an existing
/// one is numbered from that one (`runs/app-2` is followed by `runs/app-3`, not `runs/app-2-2`).
pub fn next_free(dir: &Path) -> PathBuf {
    if earlier_run(dir).is_empty() {
        return dir.to_path_buf();
    }
    let mut name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    if let Some((base, n)) = name.rsplit_once('-')
        && n.parse::<u32>().is_ok()
        && dir.with_file_name(base).is_dir()
    {
        name = base.to_string();
    }
    (2..).map(|n| dir.with_file_name(format!("{name}-{n}"))).find(|d| earlier_run(d).is_empty()).expect("some numbered folder is free")
}

/// Refuses `mode` for `config.output` before any work: a new run where an earlier one is, a
/// resume without a checkpoint. Changes nothing (but restores a checkpoint folder that a killed
/// save had moved aside).
pub fn check(config: &TrainConfig, mode: OutputMode) -> Result<()> {
    let dir = &config.output;
    crate::io::atomic::recover(&config.checkpoint_dir());
    let earlier = earlier_run(dir);
    match mode {
        OutputMode::New if !earlier.is_empty() => {
            return Err(Error::EarlierRun { path: dir.clone(), files: earlier.join(", ") });
        }
        OutputMode::Resume if !config.checkpoint_dir().join("state.json").exists() => {
            return Err(Error::invalid(config.checkpoint_dir(), "no checkpoint to resume from (state.json is missing)"));
        }
        _ => {}
    }
    Ok(())
}

/// Readies `config.output` for a run in `mode` (see `check`; overwriting removes the earlier
/// run's event log and checkpoint) and opens its event log, appended to on resume.
pub fn open(config: &TrainConfig, mode: OutputMode) -> Result<JsonlLog> {
    check(config, mode)?;
    if mode == OutputMode::Overwrite {
        for stale in [config.events_path(), config.checkpoint_dir()] {
            match crate::io::atomic::remove(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&stale, e)),
                _ => {}
            }
        }
    }
    JsonlLog::append(&config.events_path())
}

/// The settings that decide which rows train which tensors how: a checkpoint continues only a run
/// that shares them. Epochs, steps, device, checkpointing and saving may change.
const RUN_DEFINING: [&str; 30] = [
    "model",
    "data",
    "source_field",
    "target_fields",
    "method",
    "rho",
    "budget",
    "top_k",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "reselect_every_steps",
    "reselect_every_epochs",
    "importance_batches",
    "granularity",
    "block_rows",
    "dp_capacity",
    "cost_rule",
    "frozen_prompt",
    "frozen_precision",
    "batch_size",
    "grad_accum",
    "max_len",
    "lr",
    "warmup_steps",
    "weight_decay",
    "clip_norm",
    "seed",
    "group_by_length",
];

/// Refuses to continue, with `now`'s settings, a checkpoint that a run with settings `then` (as
/// recorded in its state.json) wrote.
pub fn check_resumable(checkpoint: &Path, then: &serde_json::Value, now: &TrainConfig) -> Result<()> {
    let now_v = serde_json::to_value(now).map_err(|e| Error::Other(e.to_string()))?;
    let same_path = |a: &serde_json::Value, b: &Path| a.as_str().is_some_and(|a| crate::io::same_path(Path::new(a), b));
    let differing: Vec<String> = RUN_DEFINING
        .into_iter()
        .filter(|&key| match key {
            "model" => !same_path(&then[key], &now.model),
            "data" => !same_path(&then[key], &now.data),
            // A budget picks rho from timings, which vary: the budget is what must match.
            "rho" => then["budget"].is_null() && then[key] != now_v[key],
            // Checkpoints from before the setting stored every weight in f32.
            "frozen_precision" if then[key].is_null() => now.frozen_precision != crate::model::FrozenPrecision::F32,
            _ => then[key] != now_v[key],
        })
        .map(|key| format!("{key} {} (now {})", then[key], now_v[key]))
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        checkpoint,
        format!(
            "belongs to a run with other settings: {}; resume with that run's settings, or start a new run in another output folder",
            differing.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_run_takes_the_next_free_numbered_folder() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("app");
        assert_eq!(next_free(&run), run, "a missing folder is free");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("notes.txt"), "").unwrap();
        assert_eq!(next_free(&run), run, "a folder without a run is free");
        std::fs::write(run.join("events.jsonl"), "").unwrap();
        let second = root.path().join("app-2");
        assert_eq!(next_free(&run), second);
        std::fs::create_dir_all(second.join("checkpoint")).unwrap();
        assert_eq!(next_free(&run), root.path().join("app-3"));
        assert_eq!(next_free(&second), root.path().join("app-3"), "numbered from the base, not app-2-2");
    }
}

//! Checkpoints: every parameter (but weights still in their file's quantization), the optimizer's
//! moments and steps, the data position and the selection, written atomically so a crash
//! mid-write keeps the previous checkpoint whole.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::optim::{AdamW, Moments, has_state};
use crate::data::DataPosition;
use crate::error::{Error, Result};
use crate::io::{
    atomic,
    safetensors_file::{SafetensorsFiles, write_f32},
};
use crate::model::{Model, ParamMut, Parameters, Weight};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer steps completed.
    pub step: usize,
    /// The next batch to train on.
    pub epoch: u64,
    pub batch: usize,
    /// Trainable tensors at the time of the checkpoint.
    pub selection: Vec<String>,
    /// Step at which the selection was made.
    pub selected_at: Option<usize>,
    pub optimizer_steps: BTreeMap<String, u64>,
    /// Rows of row-partial optimizer state (block granularity).
    #[serde(default)]
    pub optimizer_rows: BTreeMap<String, Vec<u32>>,
    pub flops_spent: f64,
    pub flops_full: f64,
    /// The settings of the run that wrote the checkpoint (absent in checkpoints from before they
    /// were recorded), so a resume can refuse to continue it with other settings. Kept as JSON so
    /// a checkpoint stays readable when a later version adds or drops a setting.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

impl RunState {
    pub fn position(&self) -> DataPosition {
        DataPosition { epoch: self.epoch, batch: self.batch }
    }
}

/// Writes a checkpoint of the run. A weight still in its file's quantization is left out: it never
/// trained, and a resumed run holds the same blocks from the file (see [`load`]).
pub fn save(dir: &Path, model: &Model, optimizer: &AdamW, state: &RunState) -> Result<()> {
    let mut params = Vec::new();
    model.visit(&mut |name, p| {
        if !p.is_quantized() {
            params.push((name.to_string(), p.shape(), p.to_vec()));
        }
    });
    let host = |t: &Tensor<1>| t.try_to_vec_as::<f32>().unwrap_or_default();
    let mut moments = Vec::new();
    for (name, m) in &optimizer.state {
        let n = m.m.dims()[0];
        moments.push((format!("{name}.exp_avg"), vec![n], host(&m.m)));
        moments.push((format!("{name}.exp_avg_sq"), vec![n], host(&m.v)));
    }
    let state_json = serde_json::to_string_pretty(state).map_err(|e| Error::Other(e.to_string()))?;
    atomic::write_dir(dir, atomic::Existing::Replace, |tmp| {
        write_f32(&tmp.join("model.safetensors"), &params, None)?;
        write_f32(&tmp.join("optimizer.safetensors"), &moments, Some(HashMap::from([("format".into(), "pt".into())])))?;
        std::fs::write(tmp.join("state.json"), &state_json).map_err(|e| Error::io(tmp.join("state.json"), e))
    })
}

/// The run state a checkpoint folder holds.
pub fn read_state(dir: &Path) -> Result<RunState> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(&state_path, e.to_string()))
}

/// Restores parameters and optimizer state in place; returns the run state. A weight the model
/// holds in its file's quantization stays so unless the checkpoint's run trained it (it has
/// optimizer state): untrained, its values are the file's, so no f32 copy of it is made.
pub fn load(dir: &Path, model: &mut Model, optimizer: &mut AdamW) -> Result<RunState> {
    let state = read_state(dir)?;
    let params = SafetensorsFiles::open_files(&[dir.join("model.safetensors")])?;
    let device = model.device();
    let mut failure = None;
    model.visit_mut(&mut |name, p| {
        if failure.is_some() || p.as_ref().is_quantized() && !has_state(&state.optimizer_steps, name) {
            return;
        }
        match params.read_f32(name) {
            Ok((shape, values)) => match p {
                ParamMut::Vector(t) if shape == t.dims() => *t = Tensor::from_data(TensorData::new(values, shape), &device),
                ParamMut::Matrix(t) if shape == t.dims() => *t = Tensor::from_data(TensorData::new(values, shape), &device),
                // In f32 whatever it was stored in: resuming stores it again as the selection says.
                ParamMut::Weight(w) if shape == w.dims() => *w = Weight::Float(Tensor::from_data(TensorData::new(values, shape), &device)),
                _ => failure = Some(Error::tensor(dir.join("model.safetensors"), name, format!("shape {shape:?} does not fit this model"))),
            },
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let moments = SafetensorsFiles::open_files(&[dir.join("optimizer.safetensors")])?;
    optimizer.state.clear();
    for (name, &step) in &state.optimizer_steps {
        let read = |suffix: &str| -> Result<Tensor<1>> {
            let (shape, v) = moments.read_f32(&format!("{name}.{suffix}"))?;
            Ok(Tensor::from_data(TensorData::new(v, shape), &device))
        };
        optimizer.state.insert(
            name.clone(),
            Moments { m: read("exp_avg")?, v: read("exp_avg_sq")?, step, rows: state.optimizer_rows.get(name).cloned() },
        );
    }
    Ok(state)
}

//! Saving a model as an HF folder that transformers loads as is.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

use super::LoadedModel;
use super::atomic::{self, Existing};
use super::safetensors_file;
use crate::error::{Error, Result};
use crate::model::lora::LoraConfig;
use crate::model::{Linears, Model, Parameters};

/// Writes model.safetensors (HF names, f32), config.json, tokenizer.json, tokenizer_config.json
/// and generation_config.json into `dir`, atomically; an existing `dir` is replaced only as
/// `existing` says. `metadata` goes into the safetensors header.
pub fn save_hf_folder(loaded: &LoadedModel, dir: &Path, existing: Existing, metadata: Option<HashMap<String, String>>) -> Result<()> {
    refuse_replacing_source(loaded, dir)?;
    if existing == Existing::Replace && !dir.join("config.json").exists() && atomic::occupied(dir) {
        // Replacing means deleting what is there: only ever a model folder, never e.g. Documents.
        return Err(Error::invalid(
            dir,
            "holds files but no config.json: it is not a model folder, so it is not replaced; choose another folder",
        ));
    }
    let mut tensors = Vec::new();
    loaded.model.merged().visit(&mut |name, p| tensors.push((name.to_string(), p.shape(), p.to_vec())));
    let config = hf_config(loaded.model.raw_config());
    let tokenizer_json = loaded.tokenizer.to_string(true).map_err(|e| Error::Other(format!("cannot serialise tokenizer: {e}")))?;
    let generation = loaded.generation_config.clone().unwrap_or_else(|| {
        let c = loaded.model.info();
        json!({ "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_ids, "pad_token_id": c.pad_token_id })
    });
    atomic::write_dir(dir, existing, |tmp| {
        let mut metadata = metadata.unwrap_or_default();
        metadata.insert("format".into(), "pt".into());
        safetensors_file::write_f32(&tmp.join("model.safetensors"), &tensors, Some(metadata))?;
        write_json(&tmp.join("config.json"), &config)?;
        write_text(&tmp.join("tokenizer.json"), &tokenizer_json)?;
        if let Some(tc) = &loaded.tokenizer_config {
            write_json(&tmp.join("tokenizer_config.json"), tc)?;
        }
        write_json(&tmp.join("generation_config.json"), &generation)
    })
}

/// A folder that is, or holds, the model being saved is never replaced: that would delete the
/// source while it is being read from (its tensors may be memory-mapped).
pub(crate) fn refuse_replacing_source(loaded: &LoadedModel, dir: &Path) -> Result<()> {
    let source = loaded.source.path();
    let (Ok(source), Ok(dir_abs)) = (source.canonicalize(), dir.canonicalize()) else { return Ok(()) };
    if source.starts_with(&dir_abs) {
        return Err(Error::invalid(dir, format!("holds the model being saved ({}): choose another folder", source.display())));
    }
    Ok(())
}

/// The user's config with the dtype we write (f32) stated.
fn hf_config(raw: &Value) -> Value {
    let mut config = raw.clone();
    if let Some(obj) = config.as_object_mut() {
        obj.insert("torch_dtype".into(), json!("float32"));
        if obj.contains_key("dtype") {
            obj.insert("dtype".into(), json!("float32"));
        }
    }
    config
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::invalid(path, e.to_string()))?;
    write_text(path, &text)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Saves only the LoRA adapters as a PEFT folder (adapter_model.safetensors + adapter_config.json)
/// that `peft.PeftModel.from_pretrained(base, dir)` loads.
pub fn save_peft_adapter(model: &Model, config: &LoraConfig, base_model: &str, dir: &Path, existing: Existing) -> Result<()> {
    let mut tensors = Vec::new();
    model.visit(&mut |name, p| {
        if name.contains(".lora_") {
            tensors.push((format!("base_model.model.{name}"), p.shape(), p.to_vec()));
        }
    });
    let adapter_config = json!({
        "peft_type": "LORA",
        "task_type": if model.is_encoder_decoder() { "SEQ_2_SEQ_LM" } else { "CAUSAL_LM" },
        "base_model_name_or_path": base_model,
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": config.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
    });
    atomic::write_dir(dir, existing, |tmp| {
        safetensors_file::write_f32(
            &tmp.join("adapter_model.safetensors"),
            &tensors,
            Some(HashMap::from([("format".into(), "pt".into())])),
        )?;
        write_json(&tmp.join("adapter_config.json"), &adapter_config)
    })
}

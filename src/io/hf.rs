//! Hugging Face model folders: config.json, (sharded) safetensors, tokenizer.json,
//! tokenizer_config.json and generation_config.json.

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::safetensors_file::SafetensorsFiles;
use super::{LoadedModel, ModelSource, check_finite};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::config::check_token_ids;

/// transformers' `base_model_prefix`es: checkpoints saved from the bare base model (bigscience's
/// BLOOM, early OPT files) name their tensors without them.
const BASE_MODEL_PREFIXES: [&str; 2] = ["model.", "transformer."];

/// Tensors a checkpoint may keep under another name: T5's `shared` table is also each stack's
/// `embed_tokens`, and some files store only those.
const ALIASES: [(&str, [&str; 2]); 1] = [("shared.weight", ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"])];

pub fn load_folder(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    let origin = config_path.display().to_string();
    let config = read_json(&config_path)?;
    let files = SafetensorsFiles::open_dir(dir)?;
    let model = Model::load(config, &origin, device, &mut |name, shape| {
        let aliases = ALIASES.iter().filter(|(n, _)| *n == name).flat_map(|(_, a)| a.iter().copied());
        let stored = std::iter::once(name)
            .chain(BASE_MODEL_PREFIXES.iter().filter_map(|p| name.strip_prefix(p)))
            .chain(aliases)
            .find(|n| files.contains(n))
            .ok_or_else(|| Error::MissingTensor { path: dir.to_path_buf(), tensor: name.into() })?;
        let path = files.path_of(stored).unwrap_or(dir).to_path_buf();
        let name = stored;
        let (found, values) = files.read_f32(name)?;
        if found != shape {
            return Err(Error::tensor(path, name, format!("shape {found:?} disagrees with config.json, which implies {shape:?}")));
        }
        check_finite(&path, name, &values)?;
        Ok(values)
    })?;
    let vocab_size = model.info().vocab_size;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer =
        Tokenizer::from_file(&tokenizer_path).map_err(|e| Error::invalid(&tokenizer_path, format!("cannot load tokenizer: {e}")))?;
    check_tokenizer_fits(&tokenizer_path, &tokenizer, vocab_size)?;
    let generation_path = dir.join("generation_config.json");
    let generation_config = read_optional_json(&generation_path)?;
    if let Some(generation) = &generation_config {
        check_token_ids(generation, vocab_size, &generation_path.display().to_string())?;
    }
    Ok(LoadedModel {
        model,
        tokenizer,
        tokenizer_config: read_optional_json(&dir.join("tokenizer_config.json"))?,
        generation_config,
        source: ModelSource::HfFolder(dir.to_path_buf()),
    })
}

/// Every id the tokenizer can produce must have an embedding row: a tokenizer from another model
/// (a larger vocabulary of the same family) encodes text into ids the model cannot look up, which
/// panics in the embedding's gather at the first such token instead of failing here.
fn check_tokenizer_fits(path: &Path, tokenizer: &Tokenizer, rows: usize) -> Result<()> {
    let tokens = tokenizer.get_vocab(true).into_values().max().map_or(0, |id| id as usize + 1);
    if tokens > rows {
        return Err(Error::invalid(path, format!("the tokenizer has {tokens} tokens but the model's embedding has {rows} rows")));
    }
    Ok(())
}

fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    read_json(path).map(Some)
}

/// A JSON file, with errors naming it.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(path, format!("not valid JSON: {e}")))
}

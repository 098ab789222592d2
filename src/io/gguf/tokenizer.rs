//! Rebuilds a Hugging Face `tokenizer.json` from GGUF tokenizer metadata (`tokenizer.ggml.*`).
//!
//! The JSON mirrors what HF ships for the same models, so `tokenizers::Tokenizer` parses it
//! like any downloaded tokenizer and its canonical re-serialization can be saved next to a model.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::GgufError;
use super::file::{GgufFile, MetaValue};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

const SUPPORTED_MODELS: &str = "gpt2 (byte-level BPE), llama (SentencePiece BPE)";
const SUPPORTED_PRE: &str = "default, gpt2, smollm, qwen2, llama-bpe";

/// Llama 3's split pattern (numbers in groups of up to three).
const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern (single digits).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer.json document for this file's vocabulary.
pub(crate) fn tokenizer_json(f: &GgufFile) -> Result<Value, GgufError> {
    let err = |what: String| GgufError::Tokenizer { path: f.path.clone(), what };
    let spm = is_sentencepiece(f)?;
    let tokens = f
        .opt_array("tokenizer.ggml.tokens", "array of strings", MetaValue::as_str)?
        .ok_or_else(|| GgufError::MissingMetadata { path: f.path.clone(), key: "tokenizer.ggml.tokens".into() })?;
    let types = f
        .opt_array("tokenizer.ggml.token_type", "array of integers", MetaValue::as_i64)?
        .unwrap_or_else(|| vec![TYPE_NORMAL; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(err(format!("{} token types for {} tokens", types.len(), tokens.len())));
    }
    let token_at = |key: &str| -> Result<Option<(usize, &str)>, GgufError> {
        match f.opt_usize(key)? {
            None => Ok(None),
            Some(id) => match tokens.get(id) {
                Some(t) => Ok(Some((id, *t))),
                None => Err(err(format!("{key} = {id} is outside the {} tokens", tokens.len()))),
            },
        }
    };
    let bos = token_at("tokenizer.ggml.bos_token_id")?;
    let eos = token_at("tokenizer.ggml.eos_token_id")?;
    // llama.cpp's defaults: SentencePiece vocabularies add BOS, byte-level BPE ones do not.
    let add_bos = f.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(spm);
    let add_eos = f.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);

    // First occurrence wins should a converter have written a piece twice.
    let mut vocab = Map::new();
    for (id, t) in tokens.iter().enumerate() {
        vocab.entry(t.to_string()).or_insert(id.into());
    }

    let special_ids: HashSet<usize> = bos.iter().chain(eos.iter()).map(|&(id, _)| id).collect();
    let added: Vec<Value> = (0..tokens.len())
        .filter_map(|id| {
            let special = matches!(types[id], TYPE_UNKNOWN | TYPE_CONTROL) || special_ids.contains(&id);
            (special || types[id] == TYPE_USER_DEFINED).then(|| {
                json!({
                    "id": id, "content": tokens[id], "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": !special, "special": special,
                })
            })
        })
        .collect();

    for (add, token, what) in [(add_bos, bos, "bos"), (add_eos, eos, "eos")] {
        if add && token.is_none() {
            return Err(err(format!("tokenizer.ggml.add_{what}_token is set but there is no {what}_token_id")));
        }
    }
    let template = bos_eos_template(bos.filter(|_| add_bos), eos.filter(|_| add_eos));

    let mut doc = if spm { sentencepiece(f, &tokens, &types, vocab)? } else { byte_level_bpe(f, vocab)? };
    doc["version"] = json!("1.0");
    doc["truncation"] = Value::Null;
    doc["padding"] = Value::Null;
    doc["added_tokens"] = Value::Array(added);
    doc["post_processor"] = match (template, doc["post_processor"].take()) {
        (None, base) => base,
        (Some(t), Value::Null) => t,
        (Some(t), base) => json!({"type": "Sequence", "processors": [base, t]}),
    };
    Ok(doc)
}

/// What HF puts before a byte-level BPE model for one llama.cpp `tokenizer.ggml.pre` family.
pub(super) struct BytePre {
    pub normalizer: Value,
    pub pre_tokenizer: Value,
    /// Llama 3 looks whole words up in the vocabulary before merging (HF's ignore_merges).
    pub ignore_merges: bool,
}

/// The `tokenizer.ggml.pre` names [`byte_pre`] knows, the most common spelling of each first.
pub(super) const BYTE_PRE_NAMES: [&str; 7] = ["gpt2", "default", "gpt-2", "smollm", "qwen2", "llama-bpe", "llama3"];

/// The pre-tokenizer HF uses for each llama.cpp `tokenizer.ggml.pre` family.
pub(super) fn byte_pre(pre: &str) -> Option<BytePre> {
    let byte_level = |use_regex: bool| {
        json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex,
        })
    };
    let split = |pattern: &str| {
        json!({
            "type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false,
        })
    };
    let plain = |pre_tokenizer| BytePre { normalizer: Value::Null, pre_tokenizer, ignore_merges: false };
    Some(match pre {
        "default" | "gpt2" | "gpt-2" => plain(byte_level(true)),
        "smollm" => plain(json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]})),
        "qwen2" => BytePre {
            normalizer: json!({"type": "NFC"}),
            pre_tokenizer: json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]}),
            ignore_merges: false,
        },
        "llama-bpe" | "llama3" => BytePre {
            normalizer: Value::Null,
            pre_tokenizer: json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]}),
            ignore_merges: true,
        },
        _ => return None,
    })
}

/// Whether the vocabulary is one this module rebuilds, judged from its kind alone (the vocabulary
/// itself is not read): to list a file as loadable without building its tokenizer.
pub(crate) fn check_supported(f: &GgufFile) -> Result<(), GgufError> {
    if !is_sentencepiece(f)? {
        byte_level_pre_tokenizer(f)?;
    }
    Ok(())
}

/// SentencePiece BPE (`llama`) or byte-level BPE (`gpt2`); an error for other vocabularies.
fn is_sentencepiece(f: &GgufFile) -> Result<bool, GgufError> {
    match f.str("tokenizer.ggml.model")? {
        "gpt2" => Ok(false),
        "llama" => Ok(true),
        other => Err(GgufError::UnsupportedTokenizer { path: f.path.clone(), model: other.to_string(), supported: SUPPORTED_MODELS }),
    }
}

/// GPT-2 style byte-level BPE (SmolLM, Llama 3, Qwen2, ...).
fn byte_level_bpe(f: &GgufFile, vocab: Map<String, Value>) -> Result<Value, GgufError> {
    let merges = f
        .opt_array("tokenizer.ggml.merges", "array of strings", MetaValue::as_str)?
        .ok_or_else(|| GgufError::MissingMetadata { path: f.path.clone(), key: "tokenizer.ggml.merges".into() })?;
    // Byte-level pieces never hold a real space (it is mapped to 'Ġ'): one space splits the pair.
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ').map(|(a, b)| json!([a, b])).ok_or_else(|| GgufError::Tokenizer {
                path: f.path.clone(),
                what: format!("merge #{i} '{m}' is not two space-separated pieces"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let BytePre { normalizer, pre_tokenizer, ignore_merges } = byte_level_pre_tokenizer(f)?;
    Ok(json!({
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true,
        },
        "decoder": {
            "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true,
        },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges,
        },
    }))
}

/// What HF puts before the file's byte-level vocabulary, from its `tokenizer.ggml.pre` family.
fn byte_level_pre_tokenizer(f: &GgufFile) -> Result<BytePre, GgufError> {
    let pre = f.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    byte_pre(pre).ok_or_else(|| GgufError::UnsupportedTokenizer {
        path: f.path.clone(),
        model: format!("gpt2 with pre-tokenizer '{pre}'"),
        supported: SUPPORTED_PRE,
    })
}

/// SentencePiece BPE (Llama 1/2, Mistral, TinyLlama) as HF's BPE with byte fallback.
///
/// GGUF keeps SentencePiece scores instead of merges. SentencePiece always merges the adjacent
/// pair whose union has the highest score, so ranking every split of every normal piece by the
/// piece's score gives a merge list that HF's BPE applies in the same order.
fn sentencepiece(f: &GgufFile, tokens: &[&str], types: &[i64], vocab: Map<String, Value>) -> Result<Value, GgufError> {
    let scores = f
        .opt_array("tokenizer.ggml.scores", "array of numbers", MetaValue::as_f64)?
        // Without scores, earlier pieces are the more frequent ones.
        .unwrap_or_else(|| (0..tokens.len()).map(|i| -(i as f64)).collect());
    if scores.len() != tokens.len() {
        return Err(GgufError::Tokenizer { path: f.path.clone(), what: format!("{} scores for {} tokens", scores.len(), tokens.len()) });
    }
    let id_of = |piece: &str| vocab.get(piece).and_then(Value::as_u64).map(|id| id as usize);

    // (score of the union, union id, left id, right id)
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate().filter(|&(id, _)| types[id] == TYPE_NORMAL) {
        for (at, _) in piece.char_indices().skip(1) {
            if let (Some(l), Some(r)) = (id_of(&piece[..at]), id_of(&piece[at..])) {
                merges.push((scores[id], id, l, r));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(scores[b.2].total_cmp(&scores[a.2])).then(scores[b.3].total_cmp(&scores[a.3]))
    });
    let merges: Vec<Value> = merges.iter().map(|&(_, _, l, r)| json!([tokens[l], tokens[r]])).collect();

    let unk = match f.opt_usize("tokenizer.ggml.unknown_token_id")? {
        Some(id) => tokens.get(id).copied(),
        None => types.iter().position(|&t| t == TYPE_UNKNOWN).map(|id| tokens[id]),
    };
    let add_space_prefix = f.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let replace = |from: &str, to: &str| {
        json!({
            "type": "Replace", "pattern": {"String": from}, "content": to,
        })
    };
    let mut decoders = vec![replace("▁", " "), json!({"type": "ByteFallback"}), json!({"type": "Fuse"})];
    let normalizer = if add_space_prefix {
        // Drop the space the normalizer prepended.
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, replace(" ", "▁"),
        ]})
    } else {
        replace(" ", "▁")
    };
    Ok(json!({
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

/// A TemplateProcessing post-processor adding BOS and/or EOS around each sequence, or None.
fn bos_eos_template(bos: Option<(usize, &str)>, eos: Option<(usize, &str)>) -> Option<Value> {
    if bos.is_none() && eos.is_none() {
        return None;
    }
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let sequence = |seq: &str, type_id: u32| {
        let mut pieces = Vec::new();
        pieces.extend(bos.map(|(_, t)| special(t, type_id)));
        pieces.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
        pieces.extend(eos.map(|(_, t)| special(t, type_id)));
        pieces
    };
    let single = sequence("A", 0);
    let pair: Vec<Value> = single.iter().cloned().chain(sequence("B", 1)).collect();
    let mut specials = Map::new();
    for (id, t) in bos.iter().chain(eos.iter()) {
        specials.insert(t.to_string(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    Some(json!({
        "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials,
    }))
}

//! `config.json` of the Llama family (Llama 2/3, SmolLM2, TinyLlama, Qwen2), as HF transformers writes it.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// Architectures this build can run, by `model_type`.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "qwen2"];

/// The fields of a Llama-family `config.json` the engine needs; `raw` keeps the whole file so a
/// saved model carries every field the user's file had.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope: RopeConfig,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2 always; Llama when `attention_bias`).
    pub qkv_bias: bool,
    /// o_proj carries a bias (Llama `attention_bias` only).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub raw: Value,
}

/// Rotary embedding parameters, including Llama 3's frequency-dependent scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (rope_type "linear").
    Linear {
        factor: f64,
    },
    /// rope_type "llama3".
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: usize,
    },
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    pad_token_id: Option<Value>,
}

impl LlamaConfig {
    /// Parses a config.json text; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        Self::from_value(parse_json(text, origin)?, origin)
    }

    pub fn from_value(raw: Value, origin: &str) -> Result<Self> {
        let c: RawConfig = deserialize(&raw, origin, "a Llama-family config.json")?;
        let model_type = c
            .model_type
            .clone()
            .or_else(|| c.architectures.as_ref().and_then(|a| a.first()).map(|a| arch_to_model_type(a)))
            .unwrap_or_default();
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::Unsupported {
                path: origin.into(),
                what: format!("model_type {model_type:?}"),
                supported: SUPPORTED_MODEL_TYPES.join(", "),
            });
        }
        if let Some(act) = c.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(Error::Unsupported { path: origin.into(), what: format!("hidden_act {act:?}"), supported: "silu".into() });
        }
        let max_position_embeddings = c.max_position_embeddings.unwrap_or(2048);
        check_sizes(
            origin,
            &[
                ("hidden_size", c.hidden_size),
                ("intermediate_size", c.intermediate_size),
                ("num_hidden_layers", c.num_hidden_layers),
                ("num_attention_heads", c.num_attention_heads),
                ("vocab_size", c.vocab_size),
                ("max_position_embeddings", max_position_embeddings),
            ],
        )?;
        let kv_heads = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
        if kv_heads == 0 || !c.num_attention_heads.is_multiple_of(kv_heads) {
            return Err(Error::invalid(
                origin,
                format!("num_attention_heads {} is not a multiple of num_key_value_heads {kv_heads}", c.num_attention_heads),
            ));
        }
        // Without head_dim the heads split hidden_size; a remainder would silently drop columns.
        if c.head_dim.is_none() && !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(Error::invalid(
                origin,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {} (and there is no head_dim)",
                    c.hidden_size, c.num_attention_heads
                ),
            ));
        }
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::invalid(origin, format!("head_dim {head_dim} must be even and > 0 for rotary embeddings")));
        }
        let rms_norm_eps = c.rms_norm_eps.unwrap_or(1e-6);
        check_positive(origin, "rms_norm_eps", rms_norm_eps)?;
        check_token_ids(&raw, c.vocab_size, origin)?;
        let is_qwen2 = model_type == "qwen2";
        let attention_bias = c.attention_bias.unwrap_or(false);
        let rope = parse_rope(&c, origin)?;
        Ok(Self {
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: c.vocab_size,
            max_position_embeddings,
            rms_norm_eps,
            rope,
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias: is_qwen2 || attention_bias,
            o_bias: !is_qwen2 && attention_bias,
            mlp_bias: c.mlp_bias.unwrap_or(false),
            bos_token_id: c.bos_token_id.as_ref().and_then(first_id),
            eos_token_ids: c.eos_token_id.as_ref().map(all_ids).unwrap_or_default(),
            pad_token_id: c.pad_token_id.as_ref().and_then(first_id),
            model_type,
            raw,
        })
    }

    pub fn n_rep(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

fn arch_to_model_type(arch: &str) -> String {
    match arch {
        "LlamaForCausalLM" => "llama".into(),
        "Qwen2ForCausalLM" => "qwen2".into(),
        other => other.to_string(),
    }
}

/// A config.json text as JSON; `origin` names the file in errors.
pub(crate) fn parse_json(text: &str, origin: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::invalid(origin, format!("not valid JSON: {e}")))
}

/// `raw` as an architecture's config fields. serde's message for a mistyped value ("invalid type:
/// string \"wide\", expected usize") does not say which key holds it, so the key is found by
/// leaving each out in turn: only leaving out the culprit changes the error (fields are read in
/// key order and the first bad one ends the read; missing fields are reported after all of them).
pub(crate) fn deserialize<T: DeserializeOwned>(raw: &Value, origin: &str, what: &str) -> Result<T> {
    let message = match T::deserialize(raw) {
        Ok(config) => return Ok(config),
        Err(e) => e.to_string(),
    };
    let changes_the_error = |key: &String| {
        let mut without = raw.as_object().cloned().unwrap_or_default();
        without.remove(key);
        T::deserialize(&Value::Object(without)).map_err(|e| e.to_string()).err().as_ref() != Some(&message)
    };
    let key = match raw.as_object() {
        Some(fields) if !message.starts_with("missing field") => fields.keys().find(|k| changes_the_error(k)),
        _ => None,
    };
    Err(Error::invalid(
        origin,
        match key {
            Some(key) => format!("not {what}: {key}: {message}"),
            None => format!("not {what}: {message}"),
        },
    ))
}

/// Sizes that must be at least 1: a zero makes empty tensors, or a division by zero when heads
/// split a width.
pub(crate) fn check_sizes(origin: &str, sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(Error::invalid(origin, format!("{key} must be > 0"))),
        None => Ok(()),
    }
}

/// A value that must be a positive finite number (a norm's epsilon, RoPE's base and factors):
/// zero or less takes the root of zero or of a negative number, or divides by zero, and turns
/// every activation into NaN.
pub(crate) fn check_positive(origin: &str, key: &str, value: f64) -> Result<()> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(origin, format!("{key} {value} must be a positive finite number")))
    }
}

/// Keys of config.json and generation_config.json that hold token ids (a number or a list).
const TOKEN_ID_KEYS: [&str; 4] = ["bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"];

/// Checks the token ids a config.json or generation_config.json names against the vocabulary:
/// generation and training look each one up in the embedding, where an id at or past its last
/// row panics in the gather, far from the file that caused it. Negative ids are "none" to
/// transformers and are ignored here, as everywhere else.
pub(crate) fn check_token_ids(raw: &Value, vocab_size: usize, origin: &str) -> Result<()> {
    for key in TOKEN_ID_KEYS {
        let ids = match raw.get(key) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(v) => vec![v],
            None => vec![],
        };
        if let Some(id) = ids.into_iter().filter_map(Value::as_u64).find(|&id| id >= vocab_size as u64) {
            return Err(Error::invalid(origin, format!("{key} {id} is outside the vocabulary ({vocab_size} tokens)")));
        }
    }
    Ok(())
}

pub(crate) fn first_id(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        Value::Array(a) => a.first().and_then(first_id),
        _ => None,
    }
}

pub(crate) fn all_ids(v: &Value) -> Vec<u32> {
    match v {
        Value::Array(a) => a.iter().filter_map(first_id).collect(),
        other => first_id(other).into_iter().collect(),
    }
}

/// transformers 5 writes `rope_parameters`; older files use `rope_theta` + `rope_scaling`.
fn parse_rope(c: &RawConfig, origin: &str) -> Result<RopeConfig> {
    let (section, params) = match (&c.rope_parameters, &c.rope_scaling) {
        (Some(p), _) if !p.is_null() => ("rope_parameters", Some(p)),
        (_, Some(p)) if !p.is_null() => ("rope_scaling", Some(p)),
        _ => ("rope_scaling", None),
    };
    // Every RoPE number divides or is a base of a power: it must be positive.
    let get = |k: &str, default: f64| -> Result<f64> {
        let value = params.and_then(|p| p.get(k)).and_then(Value::as_f64).unwrap_or(default);
        check_positive(origin, &format!("{section}.{k}"), value).map(|()| value)
    };
    let (theta, theta_key) = match params.and_then(|p| p.get("rope_theta")).and_then(Value::as_f64) {
        Some(theta) => (theta, format!("{section}.rope_theta")),
        None => (c.rope_theta.unwrap_or(10_000.0), "rope_theta".to_string()),
    };
    check_positive(origin, &theta_key, theta)?;
    let rope_type = params.and_then(|p| p.get("rope_type").or_else(|| p.get("type"))).and_then(Value::as_str).unwrap_or("default");
    let scaling = match rope_type {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: get("factor", 1.0)? },
        "llama3" => RopeScaling::Llama3 {
            factor: get("factor", 8.0)?,
            low_freq_factor: get("low_freq_factor", 1.0)?,
            high_freq_factor: get("high_freq_factor", 4.0)?,
            original_max_position: get("original_max_position_embeddings", 8192.0)? as usize,
        },
        other => {
            return Err(Error::Unsupported {
                path: origin.into(),
                what: format!("rope_type {other:?}"),
                supported: "default, linear, llama3".into(),
            });
        }
    };
    Ok(RopeConfig { theta, scaling })
}

impl RopeConfig {
    /// Inverse frequencies per rotary pair, as transformers' `_compute_*_parameters`.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f64> {
        let base: Vec<f64> = (0..head_dim / 2).map(|i| 1.0 / self.theta.powf((2 * i) as f64 / head_dim as f64)).collect();
        match self.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                let old = original_max_position as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_rope_scaling_follows_the_three_frequency_bands() {
        // Llama 3.1: theta 500000, factor 8, low/high frequency factors 1 and 4, original 8192.
        let rope = RopeConfig {
            theta: 500_000.0,
            scaling: RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8192 },
        };
        let f = rope.inv_freq(128);
        let base = |i: usize| 1.0 / 500_000f64.powf(2.0 * i as f64 / 128.0);
        // Short wavelengths (< 8192/4) are kept, long ones (> 8192) divided by the factor.
        assert_eq!(f[0], 1.0);
        assert!((f[63] - base(63) / 8.0).abs() < 1e-15);
        // In between, a linear blend by smooth = (8192/wavelen - 1) / (4 - 1).
        let i = (0..64).find(|&i| {
            let w = 2.0 * std::f64::consts::PI / base(i);
            w > 2048.0 && w < 8192.0
        });
        let i = i.expect("a band-pass frequency exists");
        let w = 2.0 * std::f64::consts::PI / base(i);
        let smooth = (8192.0 / w - 1.0) / 3.0;
        assert!((f[i] - ((1.0 - smooth) * base(i) / 8.0 + smooth * base(i))).abs() < 1e-12);
    }

    #[test]
    fn transformers_4_and_5_rope_fields_parse_alike() {
        let old = serde_json::json!({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
            "num_attention_heads": 4, "vocab_size": 10, "rope_theta": 1000.0, "rope_scaling": {"rope_type": "linear", "factor": 2.0}});
        let new = serde_json::json!({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
            "num_attention_heads": 4, "vocab_size": 10, "rope_parameters": {"rope_theta": 1000.0, "rope_type": "linear", "factor": 2.0}});
        let a = LlamaConfig::from_value(old, "old").unwrap();
        let b = LlamaConfig::from_value(new, "new").unwrap();
        assert_eq!(a.rope, b.rope);
        assert_eq!(a.rope, RopeConfig { theta: 1000.0, scaling: RopeScaling::Linear { factor: 2.0 } });
    }
}

//! Models with random weights from a config.json alone: speed and memory do not depend on trained
//! weights, so benchmarks can run the architectures a user would fine-tune (Qwen2.5, Llama 3.2)
//! without multi-gigabyte downloads.

use std::path::Path;

use burn::tensor::Device;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::Result;
use crate::model::Model;

/// HF's `initializer_range` default: the standard deviation of every weight matrix at init.
const INIT_STD: f32 = 0.02;

/// Builds the architecture `config` (a config.json, or a folder holding one) names, with weights
/// drawn as HF initializes them: norms' scales 1, biases 0, everything else of standard deviation
/// `initializer_range` (uniform rather than normal, which needs no extra crate and has the same
/// variance). `seed` makes two builds identical.
pub fn random_model(config: &Path, device: &Device, seed: u64) -> Result<Model> {
    let path = if config.is_dir() { config.join("config.json") } else { config.to_path_buf() };
    let raw = super::hf::read_json(&path)?;
    let std = raw.get("initializer_range").and_then(|v| v.as_f64()).map_or(INIT_STD, |v| v as f32);
    // Uniform on [-a, a] has variance a^2 / 3.
    let half_width = std * 3f32.sqrt();
    let mut rng = StdRng::seed_from_u64(seed);
    Model::load(raw, &path.display().to_string(), device, &mut |name, shape| {
        let numel = shape.iter().product();
        Ok(match init_of(name, shape) {
            Init::One => vec![1.0; numel],
            Init::Zero => vec![0.0; numel],
            Init::Random => (0..numel).map(|_| rng.random_range(-half_width..=half_width)).collect(),
        })
    })
}

enum Init {
    One,
    Zero,
    Random,
}

/// 1-D parameters are norm scales (named `*norm*`, BLOOM/OPT `*ln*`) or biases; the rest are
/// matrices and embeddings.
fn init_of(name: &str, shape: &[usize]) -> Init {
    if shape.len() > 1 {
        return Init::Random;
    }
    if name.ends_with(".bias") {
        return Init::Zero;
    }
    let last_module = name.rsplit('.').nth(1).unwrap_or("");
    if last_module.contains("norm") || last_module.contains("ln") { Init::One } else { Init::Random }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_start_at_one_biases_at_zero() {
        assert!(matches!(init_of("model.layers.0.input_layernorm.weight", &[64]), Init::One));
        assert!(matches!(init_of("model.norm.weight", &[64]), Init::One));
        assert!(matches!(init_of("transformer.h.0.ln_f.weight", &[64]), Init::One));
        assert!(matches!(init_of("model.layers.0.self_attn.q_proj.bias", &[64]), Init::Zero));
        assert!(matches!(init_of("model.layers.0.self_attn.q_proj.weight", &[64, 64]), Init::Random));
        assert!(matches!(init_of("model.embed_tokens.weight", &[10, 64]), Init::Random));
    }
}

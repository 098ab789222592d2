//! `greentrainer bench generate`: decoding speed with and without the KV cache.

use std::time::Instant;

use super::guarded;
use crate::eval::generate::{GenerateOptions, generate};
use crate::model::Model;

/// New tokens per second of greedy decoding of `new_tokens` after `prompt`, with and without the cache.
pub fn run(model: &Model, prompt: &[u32], new_tokens: usize) -> Vec<(bool, Result<f64, String>)> {
    [true, false]
        .into_iter()
        .map(|use_cache| {
            let opts = GenerateOptions { use_cache, ..GenerateOptions::greedy(new_tokens) };
            let rate = guarded(|| {
                generate(model, prompt, &GenerateOptions { max_new_tokens: 2, ..opts.clone() });
                let start = Instant::now();
                let out = generate(model, prompt, &opts);
                out.len() as f64 / start.elapsed().as_secs_f64()
            });
            (use_cache, rate)
        })
        .collect()
}

pub fn table(device: &str, prompt_len: usize, rows: &[(bool, Result<f64, String>)]) -> String {
    let mut out = String::from("| device | KV cache | new tokens/s |\n|---|---|---|\n");
    for (cache, rate) in rows {
        let cell = match rate {
            Ok(r) => format!("{r:.1}"),
            Err(e) => e.clone(),
        };
        out += &format!("| {device} | {} | {cell} |\n", if *cache { "on" } else { "off" });
    }
    out + &format!("\ngreedy decoding after a {prompt_len}-token prompt\n")
}

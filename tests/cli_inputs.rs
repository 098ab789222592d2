//! Corrupted model folders as a user hands them to the binary: each is refused when it loads, with
//! a non-zero exit and a message naming the file and the field, instead of a panic (exit 101) in
//! the embedding's gather or NaN losses later on.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use greentrainer::io::safetensors_file::{SafetensorsFiles, write_f32};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A writable copy of a fixture model folder.
fn model_copy(fixture: &str) -> TempDir {
    let dir = TempDir::new().unwrap();
    for entry in std::fs::read_dir(common::fixture(fixture)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// Rewrites one JSON file of a model folder.
fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

/// Runs `greentrainer <command> --device cpu --model <dir> [extra]` and asserts that it fails
/// (exit 1, not a panic's 101) with `message` on stderr.
fn assert_refused(command: &str, model: &Path, extra: &[&str], message: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_greentrainer"))
        .args([command, "--device", "cpu", "--model", model.to_str().unwrap()])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{command} {}: expected a refusal, got {:?}:\n{stderr}", model.display(), out.status);
    assert!(stderr.contains(message), "{command} {}: expected\n  {message}\nin:\n{stderr}", model.display());
}

fn inspect_refuses(model: &Path, message: &str) {
    assert_refused("inspect", model, &[], message);
}

fn config(dir: &TempDir) -> PathBuf {
    dir.path().join("config.json")
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused_at_load() {
    // config.json's pad id one past the last row: training pads its batches with it and used to
    // panic in the gather (exit 101) at the first step.
    let llama = model_copy("tiny-llama");
    edit_json(&config(&llama), |c| c["pad_token_id"] = json!(512));
    let message = format!("{}: pad_token_id 512 is outside the vocabulary (512 tokens)", config(&llama).display());
    let output = llama.path().join("run");
    assert_refused("train", llama.path(), &["--max-steps", "1", "--output", output.to_str().unwrap()], &message);
    inspect_refuses(llama.path(), &message);

    // BOS in OPT's config.json, and an id too large for u32 that used to wrap to a small one.
    let opt = model_copy("tiny-opt");
    edit_json(&config(&opt), |c| c["bos_token_id"] = json!(4_294_967_296u64));
    inspect_refuses(opt.path(), &format!("{}: bos_token_id 4294967296 is outside the vocabulary (512 tokens)", config(&opt).display()));

    // One id of BLOOM's eos list.
    let bloom = model_copy("tiny-bloom");
    edit_json(&config(&bloom), |c| c["eos_token_id"] = json!([0, 700]));
    inspect_refuses(bloom.path(), &format!("{}: eos_token_id 700 is outside the vocabulary (512 tokens)", config(&bloom).display()));

    // T5's decoder start token, which every decoded sequence begins with (generate panicked).
    let t5 = model_copy("tiny-t5");
    edit_json(&config(&t5), |c| c["decoder_start_token_id"] = json!(600));
    let message = format!("{}: decoder_start_token_id 600 is outside the vocabulary (512 tokens)", config(&t5).display());
    assert_refused("generate", t5.path(), &["--prompt", "Hello", "--max-new-tokens", "2"], &message);

    // generation_config.json overrides config.json's EOS ids, so its own are checked too.
    let generation = model_copy("tiny-llama");
    let path = generation.path().join("generation_config.json");
    edit_json(&path, |g| g["eos_token_id"] = json!([0, 9999]));
    inspect_refuses(generation.path(), &format!("{}: eos_token_id 9999 is outside the vocabulary (512 tokens)", path.display()));
}

#[test]
fn a_tokenizer_larger_than_the_embedding_is_refused() {
    // A tokenizer.json of a larger vocabulary (here 100 more tokens) next to a 512-row embedding:
    // `inspect` used to show "vocabulary 512" next to "612 tokens", and the first new token
    // panicked in generate or train.
    let dir = model_copy("tiny-llama");
    let path = dir.path().join("tokenizer.json");
    edit_json(&path, |t| {
        let vocab = t["model"]["vocab"].as_object_mut().unwrap();
        for id in 512..612 {
            vocab.insert(format!("extra{id}"), json!(id));
        }
    });
    inspect_refuses(dir.path(), &format!("{}: the tokenizer has 612 tokens but the model's embedding has 512 rows", path.display()));
}

#[test]
fn nonsense_config_values_are_refused_naming_the_key() {
    // (fixture, the edit of its config.json, the message after "<config.json>: ")
    type Case = (&'static str, fn(&mut Value), &'static str);
    let cases: [Case; 9] = [
        ("tiny-llama", |c| c["rms_norm_eps"] = json!(-1), "rms_norm_eps -1 must be a positive finite number"),
        ("tiny-llama", |c| c["num_attention_heads"] = json!(0), "num_attention_heads must be > 0"),
        ("tiny-llama", |c| c["num_key_value_heads"] = json!(3), "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
        (
            "tiny-llama",
            |c| {
                c.as_object_mut().unwrap().remove("head_dim");
                c["num_attention_heads"] = json!(6);
                c["num_key_value_heads"] = json!(6);
            },
            "hidden_size 64 is not a multiple of num_attention_heads 6 (and there is no head_dim)",
        ),
        (
            "tiny-llama",
            |c| c["rope_parameters"]["rope_theta"] = json!(0.0),
            "rope_parameters.rope_theta 0 must be a positive finite number",
        ),
        ("tiny-llama", |c| c["vocab_size"] = json!(-5), "not a Llama-family config.json: vocab_size: invalid value: integer `-5`"),
        ("tiny-bloom", |c| c["layer_norm_epsilon"] = json!(0.0), "layer_norm_epsilon 0 must be a positive finite number"),
        ("tiny-t5", |c| c["pad_token_id"] = json!(-1), "not a T5 config.json: pad_token_id: invalid value: integer `-1`"),
        ("tiny-opt", |c| c["ffn_dim"] = json!(0), "ffn_dim must be > 0"),
    ];
    for (fixture, edit, message) in cases {
        let dir = model_copy(fixture);
        edit_json(&config(&dir), edit);
        inspect_refuses(dir.path(), &format!("{}: {message}", config(&dir).display()));
    }
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    for (bad, shown) in [(f32::NAN, "NaN"), (f32::NEG_INFINITY, "-inf")] {
        let dir = model_copy("tiny-llama");
        let path = dir.path().join("model.safetensors");
        let files = SafetensorsFiles::open_files(std::slice::from_ref(&path)).unwrap();
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = files
            .names()
            .map(|name| {
                let (shape, values) = files.read_f32(name).unwrap();
                (name.to_string(), shape, values)
            })
            .collect();
        drop(files);
        let up = tensors.iter_mut().find(|(name, _, _)| name == "model.layers.1.mlp.up_proj.weight").unwrap();
        up.2[37] = bad;
        write_f32(&path, &tensors, None).unwrap();
        let message = format!("{}: tensor model.layers.1.mlp.up_proj.weight: value #37 is {shown}", path.display());
        inspect_refuses(dir.path(), &message);
    }
}

//! Seeded mutation fuzzing of every file a user hands the engine: a model's safetensors, a GGUF
//! file, config.json and generation_config.json, and dataset files (JSON Lines, JSON, CSV). Each
//! mutated file goes through the real loader, and a model that loads generates two tokens from its
//! special ids, where an id the loader let through would index past the embedding. The result
//! must be Ok or Err, never a panic; a panic is reported with the seed and the mutations that
//! reproduce it.
//!
//! Mutations favour the parsed regions (the safetensors JSON header, the GGUF header and
//! directory) over tensor payloads, whose bytes any value decodes from.

mod common;

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use greentrainer::data::{LoadOptions, load_dataset};
use greentrainer::device::ComputeDevice;
use greentrainer::eval::generate::{GenerateOptions, generate};
use greentrainer::io::{LoadedModel, load_model};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokenizers::Tokenizer;

const SEED: u64 = 0x6772_6565_6e74_7261;

// ---------------------------------------------------------------- harness

thread_local! {
    /// Whether this thread is inside a fuzz case, whose panics are caught and reported.
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    /// The message and location of the last panic in a fuzz case on this thread.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Keeps the message of a panic inside a fuzz case for the report instead of printing it (the
/// default hook stays for every other panic, such as the test's own assertion).
fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CASE.get() {
                return default(info);
            }
            let message = info.payload().downcast_ref::<&str>().map(|s| s.to_string());
            let message = message.or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_default();
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = format!("{message}{at}"));
        }));
    });
}

/// Runs `cases` mutations of `target`: `case(rng, what)` writes one mutated input, describes the
/// mutations in `what` (before loading, so a panic's report has them), loads it and appends the
/// outcome. Fails listing every panicking case with its seed.
fn fuzz(target: &str, id: u64, cases: u64, mut case: impl FnMut(&mut StdRng, &mut String)) {
    quiet_panics();
    let start = std::time::Instant::now();
    let mut panics = Vec::new();
    for i in 0..cases {
        let seed = SEED ^ (id << 32) ^ i;
        let mut what = String::new();
        IN_CASE.set(true);
        let result = catch_unwind(AssertUnwindSafe(|| case(&mut StdRng::seed_from_u64(seed), &mut what)));
        IN_CASE.set(false);
        if result.is_err() {
            let message = LAST_PANIC.with(|p| p.borrow().clone());
            panics.push(format!("{target} case {i} (seed {seed:#x}): {message}\n    mutations: {what}"));
        }
    }
    eprintln!("{target}: {cases} mutations in {:.1?}", start.elapsed());
    assert!(panics.is_empty(), "{} of {cases} {target} mutations panicked:\n{}", panics.len(), panics.join("\n"));
}

/// Loads a model and, when it loads, generates from every special id and the tokenizer's last
/// one: the ids an unchecked file would carry past the embedding's rows.
fn load_and_generate(path: &Path) -> String {
    let device = ComputeDevice::cpu();
    match load_model(path, &device.device) {
        Err(e) => format!("refused: {e}"),
        Ok(loaded) => {
            generate_from_special_ids(&loaded);
            "loaded and generated".into()
        }
    }
}

fn generate_from_special_ids(loaded: &LoadedModel) {
    let info = loaded.model.info();
    let last = loaded.tokenizer.get_vocab(true).into_values().max();
    let mut prompt: Vec<u32> = [info.bos_token_id, info.pad_token_id, last].into_iter().flatten().collect();
    prompt.extend(loaded.eos_token_ids());
    prompt.extend(loaded.prompt_ids("Hello world").unwrap_or_default());
    let opts = GenerateOptions { eos_token_ids: loaded.eos_token_ids(), ..GenerateOptions::greedy(2) };
    generate(&loaded.model, &prompt, &opts);
    let _ = loaded.load_options(32);
}

// ---------------------------------------------------------------- mutations

/// Integers at the edges of the widths that headers store sizes and offsets in.
const EDGES: [u64; 10] = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, 1 << 32, u64::MAX];

/// Bytes that change the structure of text formats.
const SPECIAL_BYTES: [u8; 10] = [b'0', b'9', b'-', b'"', b'{', b'[', b',', b'\n', 0, 0xff];

/// Applies one to three byte-level mutations, 90% of them at positions in `hot`; returns their
/// description.
fn mutate_bytes(rng: &mut StdRng, bytes: &mut Vec<u8>, hot: Range<usize>) -> String {
    let mut done = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        if bytes.is_empty() {
            break;
        }
        let region =
            if rng.random_bool(0.9) && hot.end.min(bytes.len()) > hot.start { hot.start..hot.end.min(bytes.len()) } else { 0..bytes.len() };
        let at = rng.random_range(region);
        match rng.random_range(0..6) {
            0 => {
                let bit = rng.random_range(0..8);
                bytes[at] ^= 1 << bit;
                done.push(format!("flip bit {bit} of byte {at}"));
            }
            1 => {
                let b = SPECIAL_BYTES[rng.random_range(0..SPECIAL_BYTES.len())];
                bytes[at] = b;
                done.push(format!("byte {at} = {b:#x}"));
            }
            2 => {
                bytes.truncate(at);
                done.push(format!("truncate at {at}"));
            }
            3 => {
                let width = [1, 2, 4, 8][rng.random_range(0..4)];
                let value = EDGES[rng.random_range(0..EDGES.len())];
                let end = (at + width).min(bytes.len());
                bytes[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
                done.push(format!("{width} bytes at {at} = {value:#x}"));
            }
            4 => {
                // Splice: a run from elsewhere in the file over this position.
                let from = rng.random_range(0..bytes.len());
                let len = rng.random_range(1..=64).min(bytes.len() - from).min(bytes.len() - at);
                let run = bytes[from..from + len].to_vec();
                bytes[at..at + len].copy_from_slice(&run);
                done.push(format!("copy {len} bytes from {from} to {at}"));
            }
            _ => {
                let len = rng.random_range(1..=16).min(bytes.len() - at);
                if rng.random_bool(0.5) {
                    bytes.drain(at..at + len);
                    done.push(format!("delete {len} bytes at {at}"));
                } else {
                    let run = bytes[at..at + len].to_vec();
                    bytes.splice(at..at, run);
                    done.push(format!("duplicate {len} bytes at {at}"));
                }
            }
        }
    }
    done.join(", ")
}

/// Values a config key may be set to: type confusions, signs, the vocabulary's edge, huge ids.
fn edge_value(rng: &mut StdRng) -> Value {
    let values = [
        json!(0),
        json!(-1),
        json!(1),
        json!(2),
        json!(3),
        json!(511),
        json!(512),
        json!(513),
        json!(4_294_967_296u64),
        json!(u64::MAX),
        json!(-1e-9),
        json!(0.5),
        json!(1e308),
        json!("x"),
        json!(null),
        json!(true),
        json!([]),
        json!([0, 600]),
        json!({}),
        json!({"rope_type": "llama3", "factor": 0.0}),
    ];
    values[rng.random_range(0..values.len())].clone()
}

/// Sets, removes or nests an edge value under a random key of `value` (any depth).
fn mutate_json(rng: &mut StdRng, value: &mut Value) -> String {
    let mut path = String::new();
    let mut at = value;
    loop {
        let keys: Vec<String> = match at.as_object() {
            Some(o) if !o.is_empty() => o.keys().cloned().collect(),
            _ => break,
        };
        let key = keys[rng.random_range(0..keys.len())].clone();
        path = format!("{path}.{key}");
        let object = at.as_object_mut().unwrap();
        let child = object.get(&key).unwrap();
        if child.is_object() && rng.random_bool(0.5) {
            at = object.get_mut(&key).unwrap();
            continue;
        }
        if rng.random_bool(0.15) {
            object.remove(&key);
            return format!("remove {path}");
        }
        let new = edge_value(rng);
        let described = format!("{path} = {new}");
        object.insert(key, new);
        return described;
    }
    String::new()
}

// ---------------------------------------------------------------- targets

/// A writable copy of a fixture model folder.
fn model_copy(fixture: &str) -> TempDir {
    let dir = TempDir::new().unwrap();
    for entry in std::fs::read_dir(common::fixture(fixture)).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "expected.safetensors" && n != "README.md") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Changes one entry of a safetensors header (a tensor's offsets, shape or dtype, or its name):
/// the JSON stays valid, so the mutation reaches the checks of the layout itself.
fn mutate_safetensors_header(rng: &mut StdRng, header: &mut Value) -> String {
    let names: Vec<String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
    let name = names[rng.random_range(0..names.len())].clone();
    let other = header[&names[rng.random_range(0..names.len())]]["data_offsets"][0].clone();
    let entry = &mut header[&name];
    match rng.random_range(0..4) {
        0 => {
            let end = rng.random_range(0..2);
            let near = entry["data_offsets"][end].as_u64().unwrap_or(0) as i64 + rng.random_range(-8..=8);
            let value = [json!(0), json!(near), other, json!(u64::MAX), json!(-1)][rng.random_range(0..5)].clone();
            entry["data_offsets"][end] = value.clone();
            format!("{name}.data_offsets[{end}] = {value}")
        }
        1 => {
            let shape = entry["shape"].as_array_mut().unwrap();
            let dim = rng.random_range(0..=shape.len());
            let value = [json!(0), json!(1), json!(2), json!(64), json!(1u64 << 32), json!(u64::MAX)][rng.random_range(0..6)].clone();
            if dim == shape.len() {
                shape.push(value.clone());
            } else if rng.random_bool(0.2) {
                shape.remove(dim);
                return format!("{name}.shape: remove dim {dim}");
            } else {
                shape[dim] = value.clone();
            }
            format!("{name}.shape[{dim}] = {value}")
        }
        2 => {
            let dtype = ["F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F4", "Q4"][rng.random_range(0..10)];
            entry["dtype"] = json!(dtype);
            format!("{name}.dtype = {dtype}")
        }
        _ => {
            let object = header.as_object_mut().unwrap();
            let entry = object.remove(&name).unwrap();
            if rng.random_bool(0.5) {
                return format!("remove {name}");
            }
            object.insert(format!("{name}x"), entry);
            format!("rename {name}")
        }
    }
}

#[test]
fn mutated_safetensors_never_panic() {
    let dir = model_copy("tiny-llama");
    let path = dir.path().join("model.safetensors");
    let original = std::fs::read(&path).unwrap();
    assert_eq!(load_and_generate(dir.path()), "loaded and generated");
    let header_end = 8 + u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&original[8..header_end]).unwrap();
    fuzz("safetensors", 1, 1500, |rng, what| {
        let bytes = if rng.random_bool(0.5) {
            let mut header = header.clone();
            *what = mutate_safetensors_header(rng, &mut header);
            let text = header.to_string();
            [&(text.len() as u64).to_le_bytes()[..], text.as_bytes(), &original[header_end..]].concat()
        } else {
            // Bytes of the JSON text (the length prefix and the payload are hit now and then).
            let mut bytes = original.clone();
            *what = mutate_bytes(rng, &mut bytes, 8..header_end);
            bytes
        };
        std::fs::write(&path, &bytes).unwrap();
        *what += &format!(" -> {}", load_and_generate(dir.path()));
    });
}

#[test]
fn mutated_configs_never_panic() {
    let fixtures = ["tiny-llama", "tiny-opt", "tiny-bloom", "tiny-t5"];
    let dirs: Vec<TempDir> = fixtures.iter().map(|f| model_copy(f)).collect();
    let read = |dir: &TempDir, file: &str| std::fs::read(dir.path().join(file)).unwrap();
    let originals: Vec<(Vec<u8>, Vec<u8>)> = dirs.iter().map(|d| (read(d, "config.json"), read(d, "generation_config.json"))).collect();
    fuzz("config", 2, 1500, |rng, what| {
        let m = rng.random_range(0..dirs.len());
        let (dir, (config, generation)) = (&dirs[m], &originals[m]);
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        std::fs::write(dir.path().join("generation_config.json"), generation).unwrap();
        let (file, original) = if rng.random_bool(0.8) { ("config.json", config) } else { ("generation_config.json", generation) };
        let mutated = if rng.random_bool(0.75) {
            // Value-level: the text stays JSON, so the mutation reaches the config's own checks.
            let mut value: Value = serde_json::from_slice(original).unwrap();
            *what = (0..rng.random_range(1..=2)).map(|_| mutate_json(rng, &mut value)).collect::<Vec<_>>().join(", ");
            value.to_string().into_bytes()
        } else {
            let mut bytes = original.clone();
            let len = bytes.len();
            *what = mutate_bytes(rng, &mut bytes, 0..len);
            bytes
        };
        *what = format!("{} {file}: {what}", fixtures[m]);
        std::fs::write(dir.path().join(file), mutated).unwrap();
        *what += &format!(" -> {}", load_and_generate(dir.path()));
    });
}

/// A small but complete Llama GGUF (version 3, llama.cpp's layout): tiny-llama's tokenizer as
/// `tokenizer.ggml.*` metadata and one 32-wide block stored as F32, F16, Q8_0 and Q4_0, so a
/// mutated type or dimension reaches the block decoders. Returns the bytes and where the
/// hyper-parameters and the tensor directory lie: the tokenizer's tokens and merges are most of
/// the header, but these hold the sizes and offsets.
fn tiny_gguf(rng: &mut StdRng) -> (Vec<u8>, Range<usize>, Range<usize>) {
    fn str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let tokenizer: Value = serde_json::from_slice(&std::fs::read(common::fixture("tiny-llama").join("tokenizer.json")).unwrap()).unwrap();
    let vocab = tokenizer["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = token.clone();
    }
    let merges: Vec<String> = (tokenizer["model"]["merges"].as_array().unwrap().iter())
        .map(|m| match m {
            Value::Array(pair) => format!("{} {}", pair[0].as_str().unwrap(), pair[1].as_str().unwrap()),
            other => other.as_str().unwrap().to_string(),
        })
        .collect();

    let mut kv: Vec<u8> = Vec::new();
    let mut n_kv = 0u64;
    let mut key = |out: &mut Vec<u8>, k: &str, ty: u32| {
        str(out, k);
        out.extend(ty.to_le_bytes());
        n_kv += 1;
    };
    key(&mut kv, "general.architecture", 8);
    str(&mut kv, "llama");
    for (k, v) in [
        ("llama.embedding_length", 32u32),
        ("llama.attention.head_count", 2),
        ("llama.attention.head_count_kv", 1),
        ("llama.block_count", 1),
        ("llama.feed_forward_length", 32),
        ("llama.context_length", 64),
        ("tokenizer.ggml.bos_token_id", 0),
        ("tokenizer.ggml.eos_token_id", 0),
        ("tokenizer.ggml.padding_token_id", 1),
    ] {
        key(&mut kv, k, 4);
        kv.extend(v.to_le_bytes());
    }
    for (k, v) in [("llama.attention.layer_norm_rms_epsilon", 1e-5f32), ("llama.rope.freq_base", 10_000.0)] {
        key(&mut kv, k, 6);
        kv.extend(v.to_le_bytes());
    }
    let hyper_parameters_end = 24 + kv.len();
    key(&mut kv, "tokenizer.ggml.model", 8);
    str(&mut kv, "gpt2");
    for (k, items) in [("tokenizer.ggml.tokens", &tokens), ("tokenizer.ggml.merges", &merges)] {
        key(&mut kv, k, 9);
        kv.extend(8u32.to_le_bytes());
        kv.extend((items.len() as u64).to_le_bytes());
        items.iter().for_each(|t| str(&mut kv, t));
    }
    key(&mut kv, "tokenizer.ggml.token_type", 9);
    kv.extend(5u32.to_le_bytes());
    kv.extend((tokens.len() as u64).to_le_bytes());
    (0..tokens.len()).for_each(|id| kv.extend(if id < 2 { 3i32 } else { 1 }.to_le_bytes()));

    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let floats = |rng: &mut StdRng, n: usize| (0..n).flat_map(|_| rng.random_range(-0.1f32..0.1).to_le_bytes()).collect::<Vec<u8>>();
    let halves = |rng: &mut StdRng, n: usize| (0..n).flat_map(|_| f16(rng.random_range(-0.1f32..0.1))).collect::<Vec<u8>>();
    // Q8_0: a scale, then 32 signed values; Q4_0: a scale, then 16 bytes of nibbles.
    let blocks = |rng: &mut StdRng, n: usize, values: usize| -> Vec<u8> {
        (0..n).flat_map(|_| [f16(0.01).to_vec(), (0..values).map(|_| rng.random::<u8>()).collect()].concat()).collect()
    };
    let ones = |n: usize| (0..n).flat_map(|_| 1f32.to_le_bytes()).collect::<Vec<u8>>();
    // (name, ggml dims, type, bytes)
    let tensors: Vec<(&str, Vec<u64>, u32, Vec<u8>)> = vec![
        ("token_embd.weight", vec![32, tokens.len() as u64], 1, halves(rng, 32 * tokens.len())),
        ("blk.0.attn_norm.weight", vec![32], 0, ones(32)),
        ("blk.0.attn_q.weight", vec![32, 32], 8, blocks(rng, 32, 32)),
        ("blk.0.attn_k.weight", vec![32, 16], 0, floats(rng, 512)),
        ("blk.0.attn_v.weight", vec![32, 16], 0, floats(rng, 512)),
        ("blk.0.attn_output.weight", vec![32, 32], 0, floats(rng, 1024)),
        ("blk.0.ffn_norm.weight", vec![32], 0, ones(32)),
        ("blk.0.ffn_gate.weight", vec![32, 32], 2, blocks(rng, 32, 16)),
        ("blk.0.ffn_up.weight", vec![32, 32], 0, floats(rng, 1024)),
        ("blk.0.ffn_down.weight", vec![32, 32], 1, halves(rng, 1024)),
        ("output_norm.weight", vec![32], 0, ones(32)),
    ];

    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(n_kv.to_le_bytes());
    out.extend(kv);
    let directory_start = out.len();
    let mut offset = 0u64;
    for (name, dims, ty, data) in &tensors {
        str(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset = (offset + data.len() as u64).next_multiple_of(32);
    }
    let data_start = out.len().next_multiple_of(32);
    for (_, _, _, data) in &tensors {
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend(data);
    }
    (out, 0..hyper_parameters_end, directory_start..data_start)
}

#[test]
fn mutated_gguf_files_never_panic() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tiny.gguf");
    let (original, hyper_parameters, directory) = tiny_gguf(&mut StdRng::seed_from_u64(SEED));
    std::fs::write(&path, &original).unwrap();
    assert_eq!(load_and_generate(&path), "loaded and generated");
    fuzz("gguf", 3, 1500, |rng, what| {
        let mut bytes = original.clone();
        let hot = match rng.random_range(0..5) {
            0 | 1 => hyper_parameters.clone(),
            2 | 3 => directory.clone(),
            _ => 0..directory.end,
        };
        *what = mutate_bytes(rng, &mut bytes, hot);
        std::fs::write(&path, &bytes).unwrap();
        *what += &format!(" -> {}", load_and_generate(&path));
    });
}

/// Dataset files of every text format and layout the loader detects.
fn dataset_seeds() -> Vec<(&'static str, String)> {
    let rows = [
        ("train_0", "#Person1#: Hi, Mr. Smith.\n#Person2#: Hello, doctor.", "Mr. Smith sees the doctor."),
        ("train_1", "#Person1#: Where is the \"station\"?\n#Person2#: Over there, 2 km.", "#Person2# shows the way."),
        ("train_2", "#Person1#: Ça va?\n#Person2#: Oui, merci 😊", "They greet each other."),
    ];
    let dialogsum: Vec<Value> = rows.iter().map(|(f, d, s)| json!({"fname": f, "dialogue": d, "summary": s})).collect();
    let alpaca: Vec<Value> = rows.iter().map(|(_, d, s)| json!({"instruction": "Summarize.", "input": d, "output": s})).collect();
    let chat: Vec<Value> = rows
        .iter()
        .map(|(_, d, s)| json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": d}, {"role": "assistant", "content": s}]}))
        .collect();
    let lines = |v: &[Value]| v.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    let mut csv = String::from("fname,dialogue,summary\n");
    for (f, d, s) in rows {
        csv.push_str(&format!("{f},\"{}\",\"{}\"\n", d.replace('"', "\"\""), s.replace('"', "\"\"")));
    }
    vec![
        ("dialogsum.jsonl", lines(&dialogsum)),
        ("chat.jsonl", lines(&chat)),
        ("alpaca.json", serde_json::to_string_pretty(&alpaca).unwrap()),
        ("dialogsum.json", serde_json::to_string(&dialogsum).unwrap()),
        ("dialogsum.csv", csv),
    ]
}

#[test]
fn mutated_dataset_files_never_panic() {
    let tokenizer = Tokenizer::from_file(common::fixture("tiny-llama").join("tokenizer.json")).unwrap();
    let dir = TempDir::new().unwrap();
    let seeds = dataset_seeds();
    for (name, text) in &seeds {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let loaded = load_dataset(&path, &tokenizer, &LoadOptions::new(48, 0)).unwrap();
        assert_eq!(loaded.examples.len(), 3, "{name}");
    }
    fuzz("dataset", 4, 2500, |rng, what| {
        let (name, text) = &seeds[rng.random_range(0..seeds.len())];
        let mut bytes = text.clone().into_bytes();
        let len = bytes.len();
        *what = format!("{name}: {}", mutate_bytes(rng, &mut bytes, 0..len));
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let opts = LoadOptions { skip_bad_rows: rng.random_bool(0.5), ..LoadOptions::new(rng.random_range(1..64), 0) };
        *what += &match load_dataset(&path, &tokenizer, &opts) {
            Ok(data) => format!(" -> {} examples", data.examples.len()),
            Err(e) => format!(" -> refused: {e}"),
        };
    });
}

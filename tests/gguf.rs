//! GGUF loading: container parsing, block decoders, HF naming and q/k un-permutation, config,
//! tokenizer, error reporting, and (when present) the real SmolLM2 Q4_1 file.
//!
//! Files are built by the GGUF writer in tests/common/gguf_writer.rs; block encoders follow
//! ggml's reference dequantization loops, so they check the decoders' index arithmetic
//! independently.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::gguf_writer::*;
use greentrainer::io::gguf::*;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokenizers::Tokenizer;

// ---------------------------------------------------------------- block encoders

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n as u64) as u32
    }
}

fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

/// A tensor's bytes and the values its blocks stand for. `d`/`dmin` are powers of two, so every
/// expected value is exact in f32 whatever the order of operations.
struct Encoded {
    bytes: Vec<u8>,
    values: Vec<f32>,
}

fn encode(ty: GgmlType, n_blocks: usize, rng: &mut Rng) -> Encoded {
    let mut e = Encoded { bytes: vec![], values: vec![] };
    for _ in 0..n_blocks {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
                let q: Vec<u32> = (0..32).map(|_| rng.below(if five { 32 } else { 16 })).collect();
                let (d, m) = (0.25f32, -2.0f32);
                e.bytes.extend(f16_bytes(d));
                if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    e.bytes.extend(f16_bytes(m));
                }
                if five {
                    let mut qh = 0u32;
                    for j in 0..16 {
                        qh |= ((q[j] & 0x10) >> 4) << j;
                        qh |= ((q[j + 16] & 0x10) >> 4) << (j + 16);
                    }
                    e.bytes.extend(qh.to_le_bytes());
                }
                e.bytes.extend((0..16).map(|j| ((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4)) as u8));
                e.values.extend(q.iter().map(|&q| match ty {
                    GgmlType::Q4_0 => (q as f32 - 8.0) * d,
                    GgmlType::Q5_0 => (q as f32 - 16.0) * d,
                    _ => q as f32 * d + m,
                }));
            }
            GgmlType::Q8_0 => {
                let d = 0.5f32;
                e.bytes.extend(f16_bytes(d));
                for _ in 0..32 {
                    let q = rng.below(256) as u8 as i8;
                    e.bytes.push(q as u8);
                    e.values.push(q as f32 * d);
                }
            }
            GgmlType::Q8_K => {
                let d = 0.125f32;
                e.bytes.extend(d.to_le_bytes());
                let q: Vec<i8> = (0..256).map(|_| rng.below(256) as u8 as i8).collect();
                e.bytes.extend(q.iter().map(|&q| q as u8));
                for group in q.chunks(16) {
                    let sum: i16 = group.iter().map(|&q| q as i16).sum();
                    e.bytes.extend(sum.to_le_bytes());
                }
                e.values.extend(q.iter().map(|&q| q as f32 * d));
            }
            GgmlType::Q2_K => encode_q2_k(&mut e, rng),
            GgmlType::Q3_K => encode_q3_k(&mut e, rng),
            GgmlType::Q4_K | GgmlType::Q5_K => encode_q45_k(&mut e, rng, ty == GgmlType::Q5_K),
            GgmlType::Q6_K => encode_q6_k(&mut e, rng),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                unreachable!("tested with explicit bits")
            }
        }
    }
    e
}

/// block_q2_K { scales[16], qs[64], d, dmin }, following dequantize_row_q2_K's loops.
fn encode_q2_k(e: &mut Encoded, rng: &mut Rng) {
    let (d, dmin) = (0.5f32, 0.25f32);
    let scales: Vec<u8> = (0..16).map(|_| rng.below(256) as u8).collect();
    let mut qs = [0u8; 64];
    let mut is = 0;
    for n in 0..2 {
        let q = &mut qs[n * 32..n * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for offset in [0, 16] {
                let sc = scales[is];
                is += 1;
                for l in 0..16 {
                    let v = rng.below(4) as u8;
                    q[l + offset] |= v << shift;
                    e.values.push(d * (sc & 0xF) as f32 * v as f32 - dmin * (sc >> 4) as f32);
                }
            }
        }
    }
    e.bytes.extend(&scales);
    e.bytes.extend(qs);
    e.bytes.extend(f16_bytes(d));
    e.bytes.extend(f16_bytes(dmin));
}

/// block_q3_K { hmask[32], qs[64], scales[12], d }, following dequantize_row_q3_K's loops and
/// its kmask unpacking of the 6-bit scales.
fn encode_q3_k(e: &mut Encoded, rng: &mut Rng) {
    let d = 0.5f32;
    let s: Vec<u8> = (0..16).map(|_| rng.below(64) as u8).collect(); // stored scale = scale + 32
    let mut sc = [0u8; 12];
    for b in 0..4 {
        sc[b] = (s[b] & 0xF) | ((s[8 + b] & 0xF) << 4);
        sc[4 + b] = (s[4 + b] & 0xF) | ((s[12 + b] & 0xF) << 4);
        sc[8 + b] = (s[b] >> 4) | ((s[4 + b] >> 4) << 2) | ((s[8 + b] >> 4) << 4) | ((s[12 + b] >> 4) << 6);
    }
    let (mut hmask, mut qs) = ([0u8; 32], [0u8; 64]);
    let (mut is, mut m) = (0, 1u8);
    for n in 0..2 {
        for shift in [0, 2, 4, 6] {
            for offset in [0, 16] {
                let scale = s[is] as i32 - 32;
                is += 1;
                for l in 0..16 {
                    let q = rng.below(8) as i32 - 4; // -4..=3
                    let u = (q + 4) as u8;
                    qs[n * 32 + l + offset] |= (u & 3) << shift;
                    if u & 4 != 0 {
                        hmask[l + offset] |= m;
                    }
                    e.values.push(d * scale as f32 * q as f32);
                }
            }
            m <<= 1;
        }
    }
    e.bytes.extend(hmask);
    e.bytes.extend(qs);
    e.bytes.extend(sc);
    e.bytes.extend(f16_bytes(d));
}

/// block_q4_K { d, dmin, scales[12], qs[128] } and block_q5_K (with qh[32] before qs), following
/// dequantize_row_q4_K / q5_K and get_scale_min_k4.
fn encode_q45_k(e: &mut Encoded, rng: &mut Rng, five: bool) {
    let (d, dmin) = (0.25f32, 0.5f32);
    let sc: Vec<u8> = (0..8).map(|_| rng.below(64) as u8).collect();
    let mn: Vec<u8> = (0..8).map(|_| rng.below(64) as u8).collect();
    let mut scales = [0u8; 12];
    for j in 0..4 {
        scales[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        scales[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        scales[j + 8] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4);
    }
    let (mut qh, mut qs) = ([0u8; 32], [0u8; 128]);
    for j in 0..4 {
        for (half, is) in [(0, 2 * j), (1, 2 * j + 1)] {
            for l in 0..32 {
                let q = rng.below(if five { 32 } else { 16 }) as u8;
                qs[32 * j + l] |= (q & 0xF) << (4 * half);
                if q & 0x10 != 0 {
                    qh[l] |= 1 << (2 * j + half);
                }
                e.values.push(d * sc[is] as f32 * q as f32 - dmin * mn[is] as f32);
            }
        }
    }
    e.bytes.extend(f16_bytes(d));
    e.bytes.extend(f16_bytes(dmin));
    e.bytes.extend(scales);
    if five {
        e.bytes.extend(qh);
    }
    e.bytes.extend(qs);
}

/// block_q6_K { ql[128], qh[64], scales[16] (i8), d }, following dequantize_row_q6_K.
fn encode_q6_k(e: &mut Encoded, rng: &mut Rng) {
    let d = 0.125f32;
    let scales: Vec<i8> = (0..16).map(|_| rng.below(256) as u8 as i8).collect();
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    let mut values = vec![0f32; 256];
    for n in 0..2 {
        let (ql, qh, sc, y) = (&mut ql[64 * n..], &mut qh[32 * n..], &scales[8 * n..], &mut values[128 * n..]);
        for l in 0..32 {
            let is = l / 16;
            let q: Vec<u8> = (0..4).map(|_| rng.below(64) as u8).collect();
            ql[l] |= (q[0] & 0xF) | ((q[2] & 0xF) << 4);
            ql[l + 32] |= (q[1] & 0xF) | ((q[3] & 0xF) << 4);
            qh[l] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
            for (k, &q) in q.iter().enumerate() {
                y[l + 32 * k] = d * sc[is + 2 * k] as f32 * (q as i32 - 32) as f32;
            }
        }
    }
    e.bytes.extend(ql);
    e.bytes.extend(qh);
    e.bytes.extend(scales.iter().map(|&s| s as u8));
    e.bytes.extend(f16_bytes(d));
    e.values.extend(values);
}

// ---------------------------------------------------------------- helpers

/// tests/fixtures (see its README).
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Fixture-dependent tests skip loudly when the data is absent, except on CI where they fail.
fn require(what: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_none() {
        let msg = format!("{what} is missing");
        if std::env::var_os("CI").is_some() {
            panic!("{msg} (CI is set, so this is an error)");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    }
    found
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The tensors of a safetensors file (F32 and I64 only), by name: (shape, values as f32).
fn read_safetensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = std::collections::HashMap::new();
    for (name, info) in header.into_iter().filter(|(k, _)| k != "__metadata__") {
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).unwrap();
        let [start, end]: [usize; 2] = serde_json::from_value(info["data_offsets"].clone()).unwrap();
        let raw = &data[start..end];
        let values = match info["dtype"].as_str().unwrap() {
            "F32" => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            "I64" => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            other => panic!("dtype {other} not needed here"),
        };
        out.insert(name, (shape, values));
    }
    out
}

/// HF name -> llama.cpp name (the inverse of what the loader does, written out independently).
fn gguf_name(hf: &str) -> String {
    let table = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.").unwrap();
            let (layer, rest) = rest.split_once('.').unwrap();
            let (part, kind) = rest.rsplit_once('.').unwrap();
            let part = table.iter().find(|(h, _)| *h == part).unwrap().1;
            format!("blk.{layer}.{part}.{kind}")
        }
    }
}

/// convert_hf_to_gguf.py's permutation, index by index:
/// `w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
fn llama_cpp_permute(w: &[f32], rows: usize, n_head: usize) -> Vec<f32> {
    let cols = w.len() / rows;
    let half = rows / n_head / 2;
    let mut out = Vec::with_capacity(w.len());
    // Output axes after swapaxes: (head, i in half, j in 2, col); source index (head, j, i, col).
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src_row = (h * 2 + j) * half + i;
                out.extend_from_slice(&w[src_row * cols..(src_row + 1) * cols]);
            }
        }
    }
    out
}

/// GGUF tokenizer metadata for an HF byte-level BPE tokenizer.json, as llama.cpp's converter
/// writes it.
fn gpt2_tokenizer_kv(mut g: Gguf, tokenizer_json: &Value, pre: Option<&str>) -> Gguf {
    let vocab = tokenizer_json["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let special: Vec<u64> = tokenizer_json["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["special"] == json!(true))
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let types = (0..tokens.len() as u64).map(|id| if special.contains(&id) { 3 } else { 1 });
    let merges = tokenizer_json["model"]["merges"].as_array().unwrap().iter().map(|m| match m {
        Value::Array(pair) => format!("{} {}", pair[0].as_str().unwrap(), pair[1].as_str().unwrap()),
        other => other.as_str().unwrap().to_string(),
    });
    g = g
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv("tokenizer.ggml.tokens", strs(&tokens))
        .kv("tokenizer.ggml.token_type", i32s(types))
        .kv("tokenizer.ggml.merges", strs(merges.collect::<Vec<_>>()))
        .kv("tokenizer.ggml.bos_token_id", V::U32(0))
        .kv("tokenizer.ggml.eos_token_id", V::U32(0))
        .kv("tokenizer.ggml.padding_token_id", V::U32(1))
        .kv("tokenizer.ggml.add_bos_token", V::Bool(false));
    if let Some(pre) = pre {
        g = g.kv("tokenizer.ggml.pre", s(pre));
    }
    g
}

// ---------------------------------------------------------------- reference Llama forward pass

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * r * w).collect()
}

/// y = W x for a row-major [out, in] matrix.
fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len()).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

/// HF's rotate-half RoPE on each head of `v`.
fn rope(v: &mut [f32], head_dim: usize, pos: usize, theta: f32) {
    let half = head_dim / 2;
    for head in v.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
            let (sin, cos) = (pos as f32 * inv_freq).sin_cos();
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }
}

/// Logits at every position of a LlamaForCausalLM, straight from the loader's HF tensors and
/// config; independent of the project's burn model, to check that those tensors are HF's.
fn llama_logits(m: &GgufModel, ids: &[usize]) -> Vec<Vec<f32>> {
    let c = m.config_json();
    let n = |k: &str| c[k].as_u64().unwrap() as usize;
    let (hidden, heads, kv_heads, head_dim) = (n("hidden_size"), n("num_attention_heads"), n("num_key_value_heads"), n("head_dim"));
    let eps = c["rms_norm_eps"].as_f64().unwrap() as f32;
    let theta = c["rope_theta"].as_f64().unwrap() as f32;
    let get = |name: &str| m.load_tensor(name).unwrap().1;
    let emb = get("model.embed_tokens.weight");
    let mut x: Vec<Vec<f32>> = ids.iter().map(|&id| emb[id * hidden..(id + 1) * hidden].to_vec()).collect();
    for layer in 0..n("num_hidden_layers") {
        let p = |s: &str| get(&format!("model.layers.{layer}.{s}.weight"));
        let (wq, wk, wv, wo) = (p("self_attn.q_proj"), p("self_attn.k_proj"), p("self_attn.v_proj"), p("self_attn.o_proj"));
        let (q, k, v): (Vec<_>, Vec<_>, Vec<_>) = {
            let norm = p("input_layernorm");
            let mut q = vec![];
            let mut k = vec![];
            let mut v = vec![];
            for (pos, x) in x.iter().enumerate() {
                let h = rms_norm(x, &norm, eps);
                let (mut qp, mut kp) = (matvec(&wq, &h), matvec(&wk, &h));
                rope(&mut qp, head_dim, pos, theta);
                rope(&mut kp, head_dim, pos, theta);
                q.push(qp);
                k.push(kp);
                v.push(matvec(&wv, &h));
            }
            (q, k, v)
        };
        let (norm2, wg, wu, wd) = (p("post_attention_layernorm"), p("mlp.gate_proj"), p("mlp.up_proj"), p("mlp.down_proj"));
        for pos in 0..x.len() {
            let mut attn = vec![0f32; heads * head_dim];
            for h in 0..heads {
                let kh = h / (heads / kv_heads);
                let qh = &q[pos][h * head_dim..(h + 1) * head_dim];
                let scores: Vec<f32> = (0..=pos)
                    .map(|s| {
                        let kh = &k[s][kh * head_dim..(kh + 1) * head_dim];
                        qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f32>() / (head_dim as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = exps.iter().sum();
                for (s, e) in exps.iter().enumerate() {
                    let vh = &v[s][kh * head_dim..(kh + 1) * head_dim];
                    for (o, v) in attn[h * head_dim..(h + 1) * head_dim].iter_mut().zip(vh) {
                        *o += e / total * v;
                    }
                }
            }
            for (x, o) in x[pos].iter_mut().zip(matvec(&wo, &attn)) {
                *x += o;
            }
            let h = rms_norm(&x[pos], &norm2, eps);
            let act: Vec<f32> = matvec(&wg, &h).iter().zip(matvec(&wu, &h)).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            for (x, o) in x[pos].iter_mut().zip(matvec(&wd, &act)) {
                *x += o;
            }
        }
    }
    let norm = get("model.norm.weight");
    let head = if c["tie_word_embeddings"] == json!(true) { emb } else { get("lm_head.weight") };
    x.iter().map(|x| matvec(&head, &rms_norm(x, &norm, eps))).collect()
}

// ---------------------------------------------------------------- tests

#[test]
fn reads_every_metadata_value_type() {
    let dir = TempDir::new().unwrap();
    let nested = V::Arr(9, vec![i32s([1, -2]), i32s([])]);
    let g = Gguf::llama(8, 2, 2, 1, 16)
        .kv("general.alignment", V::U32(64))
        .kv("t.u8", V::U8(200))
        .kv("t.i8", V::I8(-100))
        .kv("t.u16", V::U16(60000))
        .kv("t.i16", V::I16(-30000))
        .kv("t.u32", V::U32(4_000_000_000))
        .kv("t.i32", V::I32(-2_000_000_000))
        .kv("t.u64", V::U64(u64::MAX))
        .kv("t.i64", V::I64(i64::MIN))
        .kv("t.f32", V::F32(1.5))
        .kv("t.f64", V::F64(-0.1))
        .kv("t.bool", V::Bool(true))
        .kv("t.str", s("héllo"))
        .kv("t.arr", V::Arr(0, vec![V::U8(1), V::U8(2)]))
        .kv("t.nested", nested)
        .f32_tensor("output_norm.weight", &[8], &[1.0; 8])
        .f32_tensor("blk.0.attn_norm.weight", &[8], &[2.0; 8]);
    let model = GgufModel::open(&g.write(&dir, "m.gguf")).unwrap();
    let md = model.metadata();
    assert_eq!(md["t.u8"], MetaValue::U8(200));
    assert_eq!(md["t.i8"], MetaValue::I8(-100));
    assert_eq!(md["t.u16"], MetaValue::U16(60000));
    assert_eq!(md["t.i16"], MetaValue::I16(-30000));
    assert_eq!(md["t.u32"], MetaValue::U32(4_000_000_000));
    assert_eq!(md["t.i32"], MetaValue::I32(-2_000_000_000));
    assert_eq!(md["t.u64"], MetaValue::U64(u64::MAX));
    assert_eq!(md["t.i64"], MetaValue::I64(i64::MIN));
    assert_eq!(md["t.f32"], MetaValue::F32(1.5));
    assert_eq!(md["t.f64"], MetaValue::F64(-0.1));
    assert_eq!(md["t.bool"], MetaValue::Bool(true));
    assert_eq!(md["t.str"].as_str(), Some("héllo"));
    assert_eq!(md["t.arr"], MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)]));
    assert_eq!(
        md["t.nested"],
        MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-2)]), MetaValue::Array(vec![])])
    );
    // Tensor data found through the 64-byte alignment.
    assert_eq!(model.load_tensor("model.layers.0.input_layernorm.weight").unwrap(), (vec![8], vec![2.0; 8]));
    assert_eq!(model.load_tensor("model.norm.weight").unwrap(), (vec![8], vec![1.0; 8]));
}

#[test]
fn decodes_float_types_bit_exactly() {
    let f16_cases: [(u16, f32); 7] = [
        (0x3C00, 1.0),
        (0xC000, -2.0),
        (0x3555, 0.333_251_95),
        (0x7BFF, 65504.0),
        (0x0001, 5.960_464_5e-8), // smallest subnormal, 2^-24
        (0x8000, -0.0),
        (0x7C00, f32::INFINITY),
    ];
    let bf16_cases: [(u16, f32); 4] = [(0x3F80, 1.0), (0xC040, -3.0), (0x3E20, 0.15625), (0x4049, 3.140625)];
    let f32_values = [0.1f32, -7.25, f32::MIN_POSITIVE, 3.0e38];
    let bits = |cases: &[(u16, f32)]| cases.iter().flat_map(|(b, _)| b.to_le_bytes()).collect::<Vec<u8>>();
    let dir = TempDir::new().unwrap();
    let g = Gguf::llama(8, 2, 2, 3, 16)
        .tensor("blk.0.attn_norm.weight", &[7], 1, bits(&f16_cases))
        .tensor("blk.1.attn_norm.weight", &[4], 30, bits(&bf16_cases))
        .f32_tensor("blk.2.attn_norm.weight", &[2, 2], &f32_values);
    let model = GgufModel::open(&g.write(&dir, "f.gguf")).unwrap();
    let load = |l: usize| model.load_tensor(&format!("model.layers.{l}.input_layernorm.weight")).unwrap();
    let to_bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(to_bits(&load(0).1), to_bits(&f16_cases.map(|c| c.1)));
    assert_eq!(to_bits(&load(1).1), to_bits(&bf16_cases.map(|c| c.1)));
    assert_eq!(load(2), (vec![2, 2], f32_values.to_vec()));
}

#[test]
fn decodes_every_quantized_type_exactly() {
    let quantized: Vec<GgmlType> = GgmlType::SUPPORTED.into_iter().filter(|t| t.block_size() > 1).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut g = Gguf::llama(8, 2, 2, quantized.len() as u32, 16);
    let mut expected = vec![];
    for (layer, &ty) in quantized.iter().enumerate() {
        // 3 rows of 512 values: several blocks per row, and rows that span blocks of both halves.
        let rows = 3;
        let n_blocks = rows * 512 / ty.block_size();
        let e = encode(ty, n_blocks, &mut rng);
        assert_eq!(e.bytes.len(), n_blocks * ty.type_size(), "{ty:?} encoder size");
        g = g.tensor(&format!("blk.{layer}.ffn_up.weight"), &[512, rows as u64], ty.id(), e.bytes);
        expected.push((layer, ty, e.values));
    }
    let dir = TempDir::new().unwrap();
    let model = GgufModel::open(&g.write(&dir, "q.gguf")).unwrap();
    for (layer, ty, values) in expected {
        let (shape, data) = model.load_tensor(&format!("model.layers.{layer}.mlp.up_proj.weight")).unwrap();
        assert_eq!(shape, vec![3, 512], "{ty:?}");
        let first_diff = data.iter().zip(&values).position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first_diff, None, "{ty:?}: first mismatch at {first_diff:?}");
    }
    let summary = model.summary();
    assert_eq!(summary.tensor_types.len(), quantized.len());
    assert_eq!(summary.parameter_count, quantized.len() as u64 * 3 * 512);
}

#[test]
fn undoes_the_q_k_row_permutation_by_hand() {
    // One head of 4 rows (HF rows a b c d): llama.cpp stores them as a c b d.
    let (a, b, c, d) = ([1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]);
    let stored_q: Vec<f32> = [a, c, b, d].concat();
    let stored_k: Vec<f32> = [a, b, c, d].concat();
    let dir = TempDir::new().unwrap();
    let g = Gguf::llama(2, 1, 1, 1, 4)
        .kv("llama.attention.key_length", V::U32(4))
        .f32_tensor("blk.0.attn_q.weight", &[2, 4], &stored_q)
        .f32_tensor("blk.0.attn_q.bias", &[4], &[10.0, 30.0, 20.0, 40.0])
        .f32_tensor("blk.0.attn_k.weight", &[2, 4], &stored_k);
    let model = GgufModel::open(&g.write(&dir, "p.gguf")).unwrap();
    let (shape, q) = model.load_tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(shape, vec![4, 2]);
    assert_eq!(q, [a, b, c, d].concat());
    assert_eq!(model.load_tensor("model.layers.0.self_attn.q_proj.bias").unwrap().1, [10.0, 20.0, 30.0, 40.0]);
    // The swap of the middle rows is its own inverse.
    assert_eq!(model.load_tensor("model.layers.0.self_attn.k_proj.weight").unwrap().1, [a, c, b, d].concat());
}

#[test]
fn tiny_llama_round_trips_through_gguf() {
    let fx = fixtures();
    let fx = fx.join("tiny-llama");
    let hf = read_safetensors(&fx.join("model.safetensors"));
    let config = read_json(&fx.join("config.json"));
    let tokenizer_json = read_json(&fx.join("tokenizer.json"));
    let cfg = |k: &str| config[k].as_u64().unwrap() as u32;
    let (heads, kv_heads) = (cfg("num_attention_heads") as usize, cfg("num_key_value_heads") as usize);

    let mut g = Gguf::llama(
        cfg("hidden_size"),
        cfg("num_attention_heads"),
        cfg("num_key_value_heads"),
        cfg("num_hidden_layers"),
        cfg("intermediate_size"),
    )
    .kv("llama.context_length", V::U32(cfg("max_position_embeddings")))
    .kv("llama.rope.freq_base", V::F32(10000.0));
    g = gpt2_tokenizer_kv(g, &tokenizer_json, None);
    let mut names: Vec<&String> = hf.keys().collect();
    names.sort();
    for name in names {
        let (shape, w) = &hf[name];
        let w = if name.contains("q_proj") {
            llama_cpp_permute(w, shape[0], heads)
        } else if name.contains("k_proj") {
            llama_cpp_permute(w, shape[0], kv_heads)
        } else {
            w.clone()
        };
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        g = g.f32_tensor(&gguf_name(name), &ne, &w);
    }
    let dir = TempDir::new().unwrap();
    let model = GgufModel::open(&g.write(&dir, "tiny.gguf")).unwrap();

    // Same tensors, names, shapes and values as the HF checkpoint.
    let mut loaded = 0;
    for t in model.tensors() {
        let (name, shape, data) = t.unwrap();
        let (hf_shape, hf_data) = &hf[&name];
        assert_eq!(&shape, hf_shape, "{name}");
        assert!(data == *hf_data, "{name} differs from the HF weights");
        loaded += 1;
    }
    assert_eq!(loaded, hf.len());

    // The config agrees with the one transformers wrote.
    let ours = model.config_json();
    for key in [
        "architectures",
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_act",
        "rms_norm_eps",
        "max_position_embeddings",
        "vocab_size",
        "tie_word_embeddings",
        "attention_bias",
        "mlp_bias",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "rope_parameters",
    ] {
        assert_eq!(ours[key], config[key], "config key {key}");
    }
    assert_eq!(ours["rope_theta"], json!(10000.0));

    // And the model computes what transformers computed.
    let expected = read_safetensors(&fx.join("expected.safetensors"));
    let (ids_shape, ids) = &expected["input_ids"];
    let t = ids_shape[1];
    let ids: Vec<usize> = ids[..t].iter().map(|&v| v as usize).collect();
    let logits = llama_logits(&model, &ids);
    let want = &expected["logits"].1[..t * 512];
    let max_err = logits.concat().iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_err < 1e-4, "tiny-llama logits differ from transformers by {max_err}");
}

#[test]
fn tokenizer_fixture_loads_and_round_trips() {
    let fx = fixtures();
    let tok = Tokenizer::from_file(fx.join("tokenizer/tokenizer.json")).unwrap();
    let cases = read_json(&fx.join("tokenizer/expected.json"));
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text, false).unwrap().get_ids(), ids, "{text:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), case["decoded"].as_str().unwrap());
    }
}

#[test]
fn rebuilt_gpt2_tokenizer_matches_the_hf_one() {
    let fx = fixtures();
    let tokenizer_json = read_json(&fx.join("tokenizer/tokenizer.json"));
    let g = gpt2_tokenizer_kv(Gguf::llama(8, 2, 2, 1, 16), &tokenizer_json, Some("gpt2"));
    let dir = TempDir::new().unwrap();
    let model = GgufModel::open(&g.write(&dir, "tok.gguf")).unwrap();
    let tok = model.tokenizer().unwrap();
    let cases = read_json(&fx.join("tokenizer/expected.json"));
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text, true).unwrap().get_ids(), ids, "{text:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), case["decoded"].as_str().unwrap());
    }
    // The saved tokenizer.json text loads back to the same tokenizer.
    let text = model.tokenizer_json().unwrap();
    let again: Tokenizer = text.parse().unwrap();
    assert_eq!(again.encode("Hello world!", false).unwrap().get_ids(), tok.encode("Hello world!", false).unwrap().get_ids());
    assert_eq!(again.token_to_id("<|endoftext|>"), Some(0));
}

#[test]
fn sentencepiece_vocabulary_tokenizes_like_sentencepiece() {
    // <unk>, <s>, </s>, 256 byte pieces, then scored pieces. SentencePiece merges the adjacent
    // pair whose union scores highest: "▁hello▁world" -> ▁hello ▁wor l d.
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0f32, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let pieces = [
        ("▁", -10.0),
        ("h", -11.0),
        ("e", -12.0),
        ("l", -13.0),
        ("o", -14.0),
        ("w", -15.0),
        ("r", -16.0),
        ("d", -17.0),
        ("ll", -1.0),
        ("he", -2.0),
        ("llo", -3.0),
        ("▁he", -4.0),
        ("hello", -5.0),
        ("▁hello", -6.0),
        ("▁w", -7.0),
        ("or", -8.0),
        ("▁wor", -9.0),
    ];
    for (p, score) in pieces {
        tokens.push(p.into());
        types.push(1);
        scores.push(score);
    }
    let id = |p: &str| tokens.iter().position(|t| t == p).unwrap() as u32;
    let g = Gguf::llama(8, 2, 2, 1, 16)
        .kv("tokenizer.ggml.model", s("llama"))
        .kv("tokenizer.ggml.tokens", strs(&tokens))
        .kv("tokenizer.ggml.token_type", i32s(types))
        .kv("tokenizer.ggml.scores", f32s(scores.clone()))
        .kv("tokenizer.ggml.bos_token_id", V::U32(1))
        .kv("tokenizer.ggml.eos_token_id", V::U32(2))
        .kv("tokenizer.ggml.unknown_token_id", V::U32(0));
    let dir = TempDir::new().unwrap();
    let model = GgufModel::open(&g.write(&dir, "spm.gguf")).unwrap();
    let tok = model.tokenizer().unwrap();

    let enc = tok.encode("hello world", true).unwrap();
    assert_eq!(enc.get_ids(), [1, id("▁hello"), id("▁wor"), id("l"), id("d")]);
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hello world");
    // 'y' and '!' are not pieces: byte fallback.
    let enc = tok.encode("hey!", false).unwrap();
    assert_eq!(enc.get_ids(), [id("▁he"), id("<0x79>"), id("<0x21>")]);
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "hey!");
    assert_eq!(model.bos_token_id(), Some(1));
    assert_eq!(model.eos_token_id(), Some(2));
}

#[test]
fn qwen2_keeps_rows_and_reports_attention_bias() {
    let dir = TempDir::new().unwrap();
    let q: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let g = Gguf::new("qwen2")
        .kv("qwen2.embedding_length", V::U32(4))
        .kv("qwen2.attention.head_count", V::U32(2))
        .kv("qwen2.attention.head_count_kv", V::U32(1))
        .kv("qwen2.block_count", V::U32(1))
        .kv("qwen2.feed_forward_length", V::U32(8))
        .kv("qwen2.context_length", V::U32(32768))
        .kv("qwen2.attention.layer_norm_rms_epsilon", V::F32(1e-6))
        .kv("qwen2.rope.freq_base", V::F32(1_000_000.0))
        .f32_tensor("token_embd.weight", &[4, 3], &[0.5; 12])
        .f32_tensor("blk.0.attn_q.weight", &[4, 4], &q)
        .f32_tensor("blk.0.attn_q.bias", &[4], &[1.0, 2.0, 3.0, 4.0])
        .f32_tensor("output.weight", &[4, 3], &[0.25; 12]);
    let model = GgufModel::open(&g.write(&dir, "qwen.gguf")).unwrap();
    assert_eq!(model.load_tensor("model.layers.0.self_attn.q_proj.weight").unwrap().1, q);
    assert_eq!(model.load_tensor("model.layers.0.self_attn.q_proj.bias").unwrap().1, [1.0, 2.0, 3.0, 4.0]);
    let c = model.config_json();
    assert_eq!(c["architectures"], json!(["Qwen2ForCausalLM"]));
    assert_eq!(c["attention_bias"], json!(true));
    assert_eq!(c["tie_word_embeddings"], json!(false));
    assert_eq!(c["vocab_size"], json!(3));
    assert_eq!(c["head_dim"], json!(2));
    assert_eq!(c["rms_norm_eps"], json!(1e-6));
    assert_eq!(c["rope_theta"], json!(1_000_000.0));
    assert_eq!(model.load_tensor("lm_head.weight").unwrap(), (vec![3, 4], vec![0.25; 12]));
}

/// `rope_freqs.weight` as llama.cpp's converter computes it (in f32, like torch) for Llama 3.x.
fn llama3_rope_freqs(theta: f32, head_dim: usize, factor: f32, original: f32) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (original / 1.0, original / 4.0);
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / theta.powf(i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - 1.0) / (4.0 - 1.0);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

#[test]
fn llama3_rope_freqs_become_hf_rope_scaling() {
    let dir = TempDir::new().unwrap();
    let file = |freqs: &[f32]| {
        Gguf::llama(128, 2, 1, 1, 16)
            .kv("llama.rope.freq_base", V::F32(500_000.0))
            .f32_tensor("rope_freqs.weight", &[32], freqs)
            .f32_tensor("output_norm.weight", &[128], &[1.0; 128])
    };
    let freqs = llama3_rope_freqs(500_000.0, 64, 32.0, 8192.0);
    assert!(freqs.iter().any(|&f| f > 1.0 && f < 32.0), "no blended frequencies tested");
    let model = GgufModel::open(&file(&freqs).write(&dir, "l3.gguf")).unwrap();
    let c = model.config_json();
    let scaling = json!({
        "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    });
    assert_eq!(c["rope_scaling"], scaling);
    let mut params = scaling;
    params["rope_theta"] = json!(500_000.0);
    assert_eq!(c["rope_parameters"], params);
    assert_eq!(model.summary().unmapped_tensors, ["rope_freqs.weight"]);

    // Divisors from another original context are not guessed at.
    let other = llama3_rope_freqs(500_000.0, 64, 32.0, 4096.0);
    let err = GgufModel::open(&file(&other).write(&dir, "odd.gguf")).err().unwrap();
    assert!(matches!(err, GgufError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("rope_freqs.weight"), "{err}");
}

/// A small but complete model file used by the error tests.
fn sample_file() -> Gguf {
    let tokens = ["<s>", "a", "b", "ab", "Ġ"];
    Gguf::llama(4, 2, 1, 1, 8)
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv("tokenizer.ggml.tokens", strs(tokens))
        .kv("tokenizer.ggml.token_type", i32s([3, 1, 1, 1, 1]))
        .kv("tokenizer.ggml.merges", strs(["a b"]))
        .kv("tokenizer.ggml.bos_token_id", V::U32(0))
        .f32_tensor("token_embd.weight", &[4, 5], &[0.5; 20])
        .f32_tensor("blk.0.attn_q.weight", &[4, 4], &[1.0; 16])
        .f32_tensor("blk.0.attn_k.weight", &[4, 2], &[1.0; 8])
        .tensor("blk.0.ffn_up.weight", &[32, 1], GgmlType::Q8_0.id(), [f16_bytes(1.0).to_vec(), vec![3; 32]].concat())
        .f32_tensor("output_norm.weight", &[4], &[1.0; 4])
}

#[test]
fn sample_file_loads() {
    let dir = TempDir::new().unwrap();
    let model = GgufModel::open(&sample_file().write(&dir, "ok.gguf")).unwrap();
    assert_eq!(model.tensors().count(), 5);
    assert!(model.tensors().all(|t| t.is_ok()));
    let tok = model.tokenizer().unwrap();
    assert_eq!(tok.encode("ab", false).unwrap().get_ids(), [3]);
    assert_eq!(model.load_tensor("model.layers.0.mlp.up_proj.weight").unwrap().1, vec![3.0; 32]);
}

#[test]
fn every_truncation_is_a_truncated_error() {
    let bytes = sample_file().bytes();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("cut.gguf");
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        match GgufModel::open(&path) {
            Err(GgufError::Truncated { .. }) => {}
            Err(other) => panic!("cut at {len}: expected Truncated, got {other}"),
            Ok(_) => panic!("cut at {len} of {} opened", bytes.len()),
        }
    }
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let msg = GgufModel::open(&path).err().unwrap().to_string();
    assert!(msg.contains("cut.gguf") && msg.contains("output_norm.weight") && msg.contains("truncated"), "{msg}");
}

#[test]
fn corrupted_bytes_never_panic() {
    let bytes = sample_file().bytes();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("bad.gguf");
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(b.len() as u32) as usize;
            b[at] = rng.below(256) as u8;
        }
        std::fs::write(&path, &b).unwrap();
        if let Ok(model) = GgufModel::open(&path) {
            let _ = model.tensors().count();
            let _ = model.tokenizer();
            let _ = model.config_json();
            let _ = model.summary();
        }
    }
}

/// Points `tensor`'s directory entry at `offset` (relative to the data section) in a written file.
fn set_offset(bytes: &mut [u8], tensor: &str, n_dims: usize, offset: u64) {
    let mut name = (tensor.len() as u64).to_le_bytes().to_vec();
    name.extend(tensor.as_bytes());
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 8 * n_dims + 4;
    bytes[at..at + 8].copy_from_slice(&offset.to_le_bytes());
}

#[test]
fn overlapping_tensors_are_refused_naming_both() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("overlap.gguf");
    // blk.0.attn_q.weight (64 bytes at 96) moved onto token_embd.weight's bytes 0..80, as a bad
    // converter or a flipped bit would; the offset is still aligned and inside the file.
    let mut bytes = sample_file().bytes();
    set_offset(&mut bytes, "blk.0.attn_q.weight", 2, 32);
    std::fs::write(&path, &bytes).unwrap();
    let err = GgufModel::open(&path).err().expect("overlapping tensors open");
    assert!(matches!(err, GgufError::Corrupt { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: corrupt GGUF file: tensors 'token_embd.weight' (data bytes 0..80) and 'blk.0.attn_q.weight' (data bytes 32..96) overlap",
            path.display()
        )
    );

    // A name longer than ggml's 63 bytes is a corrupt length that swallowed file content.
    let g = sample_file().f32_tensor(&"x".repeat(64), &[4], &[1.0; 4]);
    let err = GgufModel::open(&g.write(&dir, "overlap.gguf")).err().expect("a 64-byte name opens");
    assert_eq!(err.to_string(), format!("{}: corrupt GGUF file: the name of tensor #5 is 64 bytes long (at most 63)", path.display()));

    // Past the end of the file: a truncation error naming the tensor.
    let mut bytes = sample_file().bytes();
    set_offset(&mut bytes, "output_norm.weight", 1, 1 << 20);
    std::fs::write(&path, &bytes).unwrap();
    let err = GgufModel::open(&path).err().expect("a tensor past the end opens");
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("overlap.gguf") && err.to_string().contains("output_norm.weight"), "{err}");
}

#[test]
fn out_of_range_token_ids_and_nonsense_hyper_parameters_are_refused() {
    let dir = TempDir::new().unwrap();
    let cases = [
        (
            sample_file().kv("tokenizer.ggml.padding_token_id", V::U32(5)),
            "metadata key 'tokenizer.ggml.padding_token_id': token id 5 is outside the vocabulary (5 tokens)",
        ),
        (
            sample_file().kv("tokenizer.ggml.eos_token_id", V::U32(70)),
            "metadata key 'tokenizer.ggml.eos_token_id': token id 70 is outside the vocabulary (5 tokens)",
        ),
        (
            sample_file().kv("llama.attention.layer_norm_rms_epsilon", V::F32(-1.0)),
            "metadata key 'llama.attention.layer_norm_rms_epsilon': -1 must be a positive finite number",
        ),
        (
            sample_file().kv("llama.rope.freq_base", V::F32(f32::NAN)),
            "metadata key 'llama.rope.freq_base': NaN must be a positive finite number",
        ),
    ];
    for (g, message) in cases {
        let path = g.write(&dir, "bad.gguf");
        let err = GgufModel::open(&path).err().expect(message);
        assert!(matches!(err, GgufError::InvalidMetadata { .. }), "{err}");
        assert_eq!(err.to_string(), format!("{}: {message}", path.display()));
    }
}

#[test]
fn bad_magic_and_version_are_reported() {
    let dir = TempDir::new().unwrap();
    let mut g = sample_file();
    g.magic = *b"GGML";
    let err = GgufModel::open(&g.write(&dir, "magic.gguf")).err().unwrap();
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
    assert!(err.to_string().contains("magic.gguf") && err.to_string().contains("GGML"), "{err}");

    let mut g = sample_file();
    g.version = 1;
    let err = GgufModel::open(&g.write(&dir, "v1.gguf")).err().unwrap();
    assert!(matches!(err, GgufError::UnsupportedVersion { version: 1, .. }), "{err}");

    let err = GgufModel::open(&dir.path().join("absent.gguf")).err().unwrap();
    assert!(matches!(err, GgufError::Io { .. }), "{err}");
}

#[test]
fn unsupported_tensor_type_names_the_tensor_and_the_alternatives() {
    let dir = TempDir::new().unwrap();
    // IQ2_XXS (type 16): the file opens, that tensor does not decode.
    let g = sample_file().tensor("blk.0.ffn_down.weight", &[256, 1], 16, vec![0; 66]);
    let model = GgufModel::open(&g.write(&dir, "iq.gguf")).unwrap();
    let err = model.load_tensor("model.layers.0.mlp.down_proj.weight").err().unwrap();
    assert!(matches!(err, GgufError::UnsupportedTensorType { .. }), "{err}");
    let msg = err.to_string();
    for part in ["iq.gguf", "blk.0.ffn_down.weight", "IQ2_XXS", "Q4_K", "Q8_0", "F16"] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    assert!(model.summary().tensor_types.iter().any(|(t, n)| t.starts_with("IQ2_XXS") && *n == 1));
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let dir = TempDir::new().unwrap();
    let g = sample_file().kv("general.architecture", s("gemma"));
    let err = GgufModel::open(&g.write(&dir, "gemma.gguf")).err().unwrap();
    assert!(matches!(err, GgufError::UnsupportedArchitecture { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("gemma") && msg.contains("llama") && msg.contains("qwen2"), "{msg}");
}

#[test]
fn missing_tensor_and_metadata_are_reported() {
    let dir = TempDir::new().unwrap();
    let model = GgufModel::open(&sample_file().write(&dir, "m.gguf")).unwrap();
    let err = model.load_tensor("model.layers.7.mlp.up_proj.weight").err().unwrap();
    assert!(matches!(err, GgufError::TensorNotFound { .. }), "{err}");
    assert!(err.to_string().contains("model.layers.7.mlp.up_proj.weight"), "{err}");
    let err = model.load_tensor("blk.0.ffn_up.weight").err().unwrap();
    assert!(err.to_string().contains("model.layers.0.mlp.up_proj.weight"), "hint missing: {err}");
    let err = model.load_tensor("lm_head.weight").err().unwrap();
    assert!(err.to_string().contains("tied"), "{err}");

    let mut g = sample_file();
    g.kv.retain(|(k, _)| k != "llama.block_count");
    let err = GgufModel::open(&g.write(&dir, "nokey.gguf")).err().unwrap();
    assert!(matches!(&err, GgufError::MissingMetadata { key, .. } if key == "llama.block_count"), "{err}");

    let g = sample_file().kv("llama.block_count", s("thirty"));
    let err = GgufModel::open(&g.write(&dir, "badkey.gguf")).err().unwrap();
    assert!(matches!(err, GgufError::MetadataType { .. }), "{err}");
}

#[test]
fn unsupported_tokenizer_is_reported() {
    let dir = TempDir::new().unwrap();
    let model = GgufModel::open(&sample_file().kv("tokenizer.ggml.model", s("bert")).write(&dir, "b.gguf")).unwrap();
    let err = model.tokenizer().err().unwrap();
    assert!(matches!(err, GgufError::UnsupportedTokenizer { .. }), "{err}");
    assert!(err.to_string().contains("gpt2"), "{err}");

    let g = sample_file().kv("tokenizer.ggml.pre", s("deepseek-coder"));
    let err = GgufModel::open(&g.write(&dir, "p.gguf")).unwrap().tokenizer().err().unwrap();
    assert!(err.to_string().contains("deepseek-coder") && err.to_string().contains("smollm"), "{err}");
}

#[test]
fn smollm2_q4_1_from_ollama_style_gguf() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let Some(path) = require(&format!("{} (run scripts/fetch-model.sh)", path.display()), Some(path.clone()).filter(|p| p.is_file()))
    else {
        return;
    };
    let start = Instant::now();
    let model = GgufModel::open(&path).unwrap();
    let opened = start.elapsed();
    let summary = model.summary();
    println!("{summary:#?}");
    assert_eq!(summary.architecture, Architecture::Llama);
    assert!(summary.unmapped_tensors.is_empty(), "{:?}", summary.unmapped_tensors);

    let c = model.config_json();
    assert_eq!(c["architectures"], json!(["LlamaForCausalLM"]));
    assert_eq!(c["num_hidden_layers"], json!(30));
    assert_eq!(c["hidden_size"], json!(576));
    assert_eq!(c["intermediate_size"], json!(1536));
    assert_eq!(c["num_attention_heads"], json!(9));
    assert_eq!(c["num_key_value_heads"], json!(3));
    assert_eq!(c["head_dim"], json!(64));
    assert_eq!(c["vocab_size"], json!(49152));
    assert_eq!(c["tie_word_embeddings"], json!(true));
    assert_eq!(c["rms_norm_eps"], json!(1e-5));
    assert_eq!(c["rope_theta"], json!(100000.0));
    assert_eq!(c["max_position_embeddings"], json!(8192));
    assert_eq!((c["bos_token_id"].clone(), c["eos_token_id"].clone()), (json!(1), json!(2)));
    assert!(model.chat_template().unwrap().contains("<|im_start|>"));

    let start = Instant::now();
    let mut params = 0;
    for t in model.tensors() {
        let (name, shape, data) = t.unwrap();
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        assert!(data.iter().all(|v| v.is_finite()), "{name} has non-finite values");
        params += data.len();
    }
    println!("opened in {opened:?}, decoded {params} parameters in {:?}", start.elapsed());
    assert_eq!(params as u64, summary.parameter_count);
    assert_eq!(model.tensor_shape("model.embed_tokens.weight"), Some(vec![49152, 576]));
    assert_eq!(model.tensor_shape("model.layers.0.self_attn.k_proj.weight"), Some(vec![192, 576]));

    let start = Instant::now();
    let tok = model.tokenizer().unwrap();
    println!("tokenizer rebuilt in {:?}", start.elapsed());
    let prompt = [504, 3575, 282, 4649, 314];
    assert_eq!(tok.encode("The capital of France is", true).unwrap().get_ids(), prompt);
    let greedy = [504, 3575, 282, 4649, 314, 7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33, 40, 29, 32, 33];
    assert_eq!(tok.decode(&greedy[5..], false).unwrap(), " Paris.\n\nThe answer is: 2018-01");
    assert_eq!(tok.decode(&greedy, false).unwrap(), "The capital of France is Paris.\n\nThe answer is: 2018-01");
    let text = " Paris.\n\nThe answer is: 2018-01";
    assert_eq!(tok.encode(text, false).unwrap().get_ids(), &greedy[5..]);
    assert_eq!(tok.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap().get_ids()[0], 1);
    assert_eq!(tok.decode(&[1, 7042, 2], true).unwrap(), " Paris");

    // Logits of the dequantized weights agree with transformers' own GGUF loading.
    let fx = fixtures();
    let expected = read_json(&fx.join("smollm2/expected.json"));
    let logits = llama_logits(&model, &prompt.map(|i| i as usize));
    let last = logits.last().unwrap();
    for entry in expected["last_logits_top10"].as_array().unwrap() {
        let (id, want) = (entry["id"].as_u64().unwrap() as usize, entry["logit"].as_f64().unwrap() as f32);
        assert!((last[id] - want).abs() < 2e-3, "logit of {id}: {} vs {want}", last[id]);
    }
    let max = last.iter().cloned().fold(f32::MIN, f32::max);
    let lse = max + last.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
    let want = expected["last_logsumexp"].as_f64().unwrap() as f32;
    assert!((lse - want).abs() < 2e-3, "logsumexp {lse} vs {want}");
}

//! Fake model stores laid out as Ollama, LM Studio and the Hugging Face hub lay out theirs, for
//! tests/discover.rs, the `models` command and the app's list.

use std::path::{Path, PathBuf};

use greentrainer::io::gguf::GgmlType;

use super::gguf_writer::{Gguf, V, i32s, s, strs};

/// A tiny but loadable-looking Llama GGUF (byte-level BPE vocabulary, F32 and Q8_0 tensors, most
/// values in Q8_0), with `general.file_type` when given.
pub fn tiny_llama_gguf(file_type: Option<u32>) -> Gguf {
    let q8_block = |scale_bits: u16| [scale_bits.to_le_bytes().to_vec(), vec![3u8; 32]].concat();
    let g = Gguf::llama(4, 2, 1, 1, 8)
        .kv("general.name", s("Tiny"))
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv("tokenizer.ggml.tokens", strs(["<s>", "a", "b", "ab", "Ġ"]))
        .kv("tokenizer.ggml.token_type", i32s([3, 1, 1, 1, 1]))
        .kv("tokenizer.ggml.merges", strs(["a b"]))
        .f32_tensor("token_embd.weight", &[4, 5], &[0.5; 20])
        // 0x3c00 is 1.0 as f16.
        .tensor("blk.0.ffn_up.weight", &[32, 2], GgmlType::Q8_0.id(), [q8_block(0x3c00), q8_block(0x3c00)].concat())
        .f32_tensor("output_norm.weight", &[4], &[1.0; 4]);
    match file_type {
        Some(t) => g.kv("general.file_type", V::U32(t)),
        None => g,
    }
}

/// Writes `bytes` at `path`, creating its folders.
pub fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

/// A 64-hex-digit digest, distinct per `n` (discovery reads digests, it does not verify them).
pub fn digest(n: u32) -> String {
    format!("{n:064x}")
}

/// An Ollama manifest as `ollama pull` writes it: a config blob and the model, template and
/// params layers; the model layer names `sha256:<model_digest>`.
pub fn ollama_manifest(model_digest: &str, model_size: usize) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": format!("sha256:{}", digest(900)), "size": 485},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": format!("sha256:{model_digest}"), "size": model_size},
            {"mediaType": "application/vnd.ollama.image.template", "digest": format!("sha256:{}", digest(901)), "size": 358},
            {"mediaType": "application/vnd.ollama.image.params", "digest": format!("sha256:{}", digest(902)), "size": 59},
        ],
    })
    .to_string()
}

/// An Ollama model `<registry>/<namespace>/<model>:<tag>` in the store at `root` whose model blob
/// holds `blob`; returns the blob's path.
pub fn ollama_model(root: &Path, id: &str, tag: &str, n: u32, blob: &[u8]) -> PathBuf {
    let hex = digest(n);
    write(&root.join("manifests").join(id).join(tag), ollama_manifest(&hex, blob.len()).as_bytes());
    write(&root.join("blobs").join(format!("sha256-{hex}")), blob)
}

/// A Hugging Face cache snapshot of `repo_id` (`org/name`) at revision `rev` holding `files`
/// (name, contents). As huggingface_hub does on Unix, the contents live in `blobs/` and the
/// snapshot links to them. Returns the snapshot folder.
pub fn hf_snapshot(hub: &Path, repo_id: &str, rev: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let repo = hub.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snapshot).unwrap();
    write(&repo.join("refs/main"), rev.as_bytes());
    for (i, (name, bytes)) in files.iter().enumerate() {
        let blob = write(&repo.join("blobs").join(format!("{}-{i}", digest(i as u32))), bytes);
        link_or_copy(&blob, &snapshot.join(name));
    }
    snapshot
}

#[cfg(unix)]
fn link_or_copy(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[cfg(not(unix))]
fn link_or_copy(target: &Path, link: &Path) {
    std::fs::copy(target, link).unwrap();
}

/// The tiny Llama fixture's files as an HF snapshot holds them (config, weights, tokenizer).
pub fn tiny_llama_files() -> Vec<(&'static str, Vec<u8>)> {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .into_iter()
        .map(|name| (name, std::fs::read(super::fixture("tiny-llama").join(name)).unwrap()))
        .collect()
}

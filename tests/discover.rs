//! Finding the models already on the computer: fake Ollama, LM Studio and Hugging Face stores in
//! temporary folders, laid out as those programs lay them out, listed with their names, paths,
//! architectures, quantizations, sizes and whether this build can train them.

mod common;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::gguf_writer::{Gguf, V};
use common::stores::{digest, hf_snapshot, ollama_manifest, ollama_model, tiny_llama_files, tiny_llama_gguf, write};
use greentrainer::device::ComputeDevice;
use greentrainer::io::discover::{Format, FoundModel, Source, Stores, Trainable, discover};
use greentrainer::io::load_model;
use tempfile::TempDir;

/// llama.cpp's `general.file_type` numbers used below.
const Q4_K_M: u32 = 15;
const F16: u32 = 1;

fn only(stores_ollama: &Path) -> Stores {
    Stores { ollama: vec![stores_ollama.to_path_buf()], ..Stores::default() }
}

fn by_name<'a>(found: &'a [FoundModel], name: &str) -> &'a FoundModel {
    found.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} not listed in {found:#?}"))
}

fn why_not(m: &FoundModel) -> &str {
    match &m.trainable {
        Trainable::No(why) => why,
        Trainable::Yes => panic!("{} should not be trainable", m.name),
    }
}

/// A Mamba GGUF: an architecture this build does not run.
fn mamba_gguf() -> Gguf {
    Gguf::new("mamba").kv("general.file_type", V::U32(F16)).tensor("token_embd.weight", &[4], 1, vec![0; 8])
}

#[test]
fn ollama_models_are_named_as_ollama_lists_them_and_judged_from_their_blobs() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("ollama");
    let smollm = tiny_llama_gguf(Some(Q4_K_M)).bytes();
    let smollm_blob = ollama_model(&root, "registry.ollama.ai/library/smollm2", "135m", 1, &smollm);
    let mamba = mamba_gguf().bytes();
    let mamba_blob = ollama_model(&root, "registry.ollama.ai/alice/mamba", "latest", 2, &mamba);
    let hf_blob = ollama_model(&root, "hf.co/bartowski/SmolLM2-GGUF", "Q4_K_M", 3, &smollm);

    let found = discover(&only(&root));
    assert_eq!(found.len(), 3, "{found:#?}");
    let m = by_name(&found, "smollm2:135m");
    assert_eq!(
        *m,
        FoundModel {
            name: "smollm2:135m".into(),
            source: Source::Ollama,
            format: Format::Gguf,
            path: smollm_blob,
            architecture: Some("llama".into()),
            size: smollm.len() as u64,
            quantization: Some("Q4_K_M".into()),
            trainable: Trainable::Yes,
        }
    );
    assert_eq!(by_name(&found, "hf.co/bartowski/SmolLM2-GGUF:Q4_K_M").path, hf_blob);

    let m = by_name(&found, "alice/mamba:latest");
    assert_eq!((m.path.as_path(), m.size), (mamba_blob.as_path(), mamba.len() as u64));
    assert_eq!((m.architecture.as_deref(), m.quantization.as_deref()), (Some("mamba"), Some("F16")));
    let why = why_not(m);
    assert!(why.contains("architecture 'mamba' is not supported") && why.contains("llama"), "{why}");
    assert!(!why.contains(&*mamba_blob.display().to_string()), "the reason leaves the path to the path column: {why}");
}

#[test]
fn a_broken_manifest_or_missing_blob_is_listed_with_its_reason_and_hides_nothing() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("ollama");
    ollama_model(&root, "registry.ollama.ai/library/smollm2", "135m", 1, &tiny_llama_gguf(Some(Q4_K_M)).bytes());
    let library = root.join("manifests/registry.ollama.ai/library");
    let broken = write(&library.join("broken/latest"), b"{\"schemaVersion\": 2, \"layers\": [");
    let gone = write(&library.join("gone/7b"), ollama_manifest(&digest(77), 1000).as_bytes());
    // A digest that would lead out of blobs/ if it became a path unchecked.
    write(&library.join("escape/latest"), ollama_manifest("../../../../etc/passwd", 10).as_bytes());
    let no_model = serde_json::json!({"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.ollama.image.license", "digest": format!("sha256:{}", digest(5)), "size": 3}]});
    write(&library.join("licence-only/latest"), no_model.to_string().as_bytes());
    // An LM Studio file that is not GGUF at all, beside the Ollama store.
    let lm = dir.path().join("lmstudio");
    write(&lm.join("someone/repo/notes.gguf"), b"these are not weights");

    let stores = Stores { lm_studio: vec![lm.clone()], ..only(&root) };
    let found = discover(&stores);
    let names: Vec<&str> = found.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["broken:latest", "escape:latest", "gone:7b", "licence-only:latest", "smollm2:135m", "someone/repo/notes.gguf"]);
    assert!(by_name(&found, "smollm2:135m").trainable.is_yes());

    let m = by_name(&found, "broken:latest");
    assert_eq!((m.path.as_path(), m.architecture.as_ref(), m.size), (broken.as_path(), None, 0));
    assert!(why_not(m).starts_with("the manifest is not an Ollama manifest"), "{}", why_not(m));
    let m = by_name(&found, "gone:7b");
    assert_eq!(m.path, gone);
    assert!(why_not(m).contains("missing") && why_not(m).contains(&format!("sha256-{}", digest(77))), "{}", why_not(m));
    assert!(why_not(by_name(&found, "escape:latest")).contains("is not sha256:<64 hex digits>"));
    assert!(why_not(by_name(&found, "licence-only:latest")).contains("no model layer"));
    let m = by_name(&found, "someone/repo/notes.gguf");
    assert_eq!((m.source, m.size), (Source::LmStudio, 21));
    assert!(why_not(m).starts_with("not a GGUF file"), "{}", why_not(m));
}

#[test]
fn lm_studio_files_are_listed_by_publisher_repo_and_file() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("models");
    let bytes = tiny_llama_gguf(None).bytes();
    let path = write(&root.join("lmstudio-community/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q8_0.gguf"), &bytes);
    write(&root.join("lmstudio-community/SmolLM2-135M-Instruct-GGUF/README.md"), b"# not a model");
    // Every tensor in a type this build cannot decode (IQ2_XXS, ggml type 16).
    let iq2 = Gguf::llama(4, 2, 1, 1, 8).kv("tokenizer.ggml.model", common::gguf_writer::s("gpt2")).tensor(
        "token_embd.weight",
        &[256, 5],
        16,
        vec![0; 66 * 5],
    );
    write(&root.join("someone/odd/odd-IQ2_XXS.gguf"), &iq2.bytes());
    let split = tiny_llama_gguf(Some(Q4_K_M)).kv("split.count", V::U16(3)).kv("split.no", V::U16(0));
    write(&root.join("someone/big/big-00001-of-00003.gguf"), &split.bytes());
    let bad_tokenizer = tiny_llama_gguf(None).kv("tokenizer.ggml.model", common::gguf_writer::s("bert"));
    write(&root.join("someone/bert/bert.gguf"), &bad_tokenizer.bytes());

    let found = discover(&Stores { lm_studio: vec![root.clone()], ..Stores::default() });
    assert_eq!(found.len(), 4, "{found:#?}");
    let m = by_name(&found, "lmstudio-community/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q8_0.gguf");
    assert_eq!((m.source, m.format, &m.path, m.size), (Source::LmStudio, Format::Gguf, &path, bytes.len() as u64));
    // No general.file_type: the type holding most values (64 in Q8_0 against 24 in F32).
    assert_eq!((m.architecture.as_deref(), m.quantization.as_deref(), &m.trainable), (Some("llama"), Some("Q8_0"), &Trainable::Yes));

    let m = by_name(&found, "someone/odd/odd-IQ2_XXS.gguf");
    assert_eq!(m.quantization.as_deref(), Some("IQ2_XXS"));
    assert!(why_not(m).contains("has type IQ2_XXS") && why_not(m).contains("Q4_K"), "{}", why_not(m));
    assert!(why_not(by_name(&found, "someone/big/big-00001-of-00003.gguf")).contains("split across 3 files"));
    assert!(why_not(by_name(&found, "someone/bert/bert.gguf")).contains("tokenizer model 'bert'"));
}

#[test]
fn hf_cache_snapshots_are_listed_as_org_and_name_with_their_config() {
    let dir = TempDir::new().unwrap();
    let hub = dir.path().join("hub");
    let files = tiny_llama_files();
    let tiny = hf_snapshot(&hub, "test-org/tiny-llama", "0123456789abcdef0123456789abcdef01234567", &files);
    let mamba_config = serde_json::json!({"model_type": "mamba", "architectures": ["MambaForCausalLM"], "torch_dtype": "float16"});
    let mamba = hf_snapshot(&hub, "state-spaces/mamba-130m-hf", "aaaa", &[("config.json", mamba_config.to_string().into_bytes())]);
    let no_weights = hf_snapshot(&hub, "test-org/bin-only", "bbbb", &files[..1]);
    let gptq_config =
        serde_json::json!({"model_type": "llama", "torch_dtype": "float16", "quantization_config": {"quant_method": "gptq", "bits": 4}});
    hf_snapshot(&hub, "test-org/llama-gptq", "cccc", &[("config.json", gptq_config.to_string().into_bytes())]);
    // A GGUF repository downloaded through the hub: no config.json, a .gguf file.
    let gguf = tiny_llama_gguf(Some(Q4_K_M)).bytes();
    let gguf_snapshot = hf_snapshot(&hub, "bartowski/SmolLM2-GGUF", "dddd", &[("SmolLM2-Q4_K_M.gguf", gguf.clone())]);
    // Datasets share the cache and are not models.
    write(&hub.join("datasets--org--data/snapshots/eeee/config.json"), b"{}");

    let found = discover(&Stores { hf_cache: vec![hub.clone()], ..Stores::default() });
    let names: Vec<&str> = found.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bartowski/SmolLM2-GGUF/SmolLM2-Q4_K_M.gguf",
            "state-spaces/mamba-130m-hf",
            "test-org/bin-only",
            "test-org/llama-gptq",
            "test-org/tiny-llama"
        ]
    );

    let m = by_name(&found, "test-org/tiny-llama");
    let size: usize = files.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(
        *m,
        FoundModel {
            name: "test-org/tiny-llama".into(),
            source: Source::HfCache,
            format: Format::HfFolder,
            path: tiny,
            architecture: Some("llama".into()),
            size: size as u64,
            quantization: Some("float32".into()),
            trainable: Trainable::Yes,
        }
    );
    // "Yes" is what loading says: the listed folder loads as it is.
    load_model(&m.path, &ComputeDevice::cpu().device).unwrap();
    let m = by_name(&found, "state-spaces/mamba-130m-hf");
    assert_eq!((&m.path, m.architecture.as_deref(), m.quantization.as_deref()), (&mamba, Some("mamba"), Some("float16")));
    assert!(why_not(m).contains("unsupported model_type \"mamba\""), "{}", why_not(m));
    let m = by_name(&found, "test-org/bin-only");
    assert_eq!(m.path, no_weights);
    assert!(why_not(m).contains("no model.safetensors"), "{}", why_not(m));
    assert!(why_not(by_name(&found, "test-org/llama-gptq")).starts_with("quantized with gptq"));
    let m = by_name(&found, "bartowski/SmolLM2-GGUF/SmolLM2-Q4_K_M.gguf");
    assert_eq!(
        (m.format, m.path.clone(), m.size, &m.trainable),
        (Format::Gguf, gguf_snapshot.join("SmolLM2-Q4_K_M.gguf"), gguf.len() as u64, &Trainable::Yes)
    );
}

/// The real SmolLM2 file as `ollama pull` would keep it: listed as trainable Q4_1 Llama, and it
/// loads from the listed path.
#[test]
fn the_real_smollm2_gguf_is_listed_as_trainable_and_loads() {
    let Some(real) = common::smollm2_gguf() else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("ollama");
    let blob = ollama_model(&root, "registry.ollama.ai/library/smollm2", "135m", 1, b"");
    std::fs::copy(&real, &blob).unwrap();
    let started = std::time::Instant::now();
    let found = discover(&only(&root));
    let listed_in = started.elapsed();
    let m = by_name(&found, "smollm2:135m");
    assert_eq!((m.architecture.as_deref(), m.quantization.as_deref(), &m.trainable), (Some("llama"), Some("Q4_1"), &Trainable::Yes));
    assert_eq!(m.size, std::fs::metadata(&real).unwrap().len());
    // Headers only: listing a 100 MB model takes a fraction of loading it.
    assert!(listed_in.as_secs_f64() < 2.0, "listing took {listed_in:?}");
    load_model(&m.path, &ComputeDevice::cpu().device).unwrap();
}

#[test]
fn two_snapshots_of_one_repository_are_told_apart_by_revision() {
    let dir = TempDir::new().unwrap();
    let hub = dir.path().join("hub");
    let files = tiny_llama_files();
    hf_snapshot(&hub, "test-org/tiny-llama", "1111111111aaaa", &files);
    hf_snapshot(&hub, "test-org/tiny-llama", "2222222222bbbb", &files);
    let found = discover(&Stores { hf_cache: vec![hub], ..Stores::default() });
    let names: Vec<&str> = found.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["test-org/tiny-llama@11111111", "test-org/tiny-llama@22222222"]);
}

#[test]
fn missing_stores_list_nothing() {
    let dir = TempDir::new().unwrap();
    let nowhere = dir.path().join("nowhere");
    let stores = Stores { ollama: vec![nowhere.clone()], lm_studio: vec![nowhere.clone()], hf_cache: vec![nowhere] };
    assert!(discover(&stores).is_empty());
    // A store folder that is a file is not a store either.
    let file = write(&dir.path().join("file"), b"x");
    assert!(discover(&Stores { ollama: vec![file.clone()], lm_studio: vec![file.clone()], hf_cache: vec![file] }).is_empty());
}

#[test]
fn stores_come_from_the_environment_as_each_program_resolves_them() {
    let vars = |pairs: &[(&str, &str)]| {
        let map: HashMap<String, OsString> = pairs.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        Stores::from_vars(move |k| map.get(k).cloned())
    };
    let ollama_service: Vec<PathBuf> = if cfg!(target_os = "linux") { vec!["/usr/share/ollama/.ollama/models".into()] } else { vec![] };
    let home = vars(&[("HOME", "/home/u")]);
    assert_eq!(home.ollama, [vec![PathBuf::from("/home/u/.ollama/models")], ollama_service.clone()].concat());
    assert_eq!(home.lm_studio, [PathBuf::from("/home/u/.lmstudio/models"), PathBuf::from("/home/u/.cache/lm-studio/models")]);
    assert_eq!(home.hf_cache, [PathBuf::from("/home/u/.cache/huggingface/hub")]);

    let moved = vars(&[("HOME", "/home/u"), ("OLLAMA_MODELS", "/data/ollama"), ("HF_HOME", "/data/hf"), ("XDG_CACHE_HOME", "/cache")]);
    assert_eq!(moved.ollama, [vec![PathBuf::from("/data/ollama")], ollama_service].concat());
    assert_eq!(moved.hf_cache, [PathBuf::from("/data/hf/hub")]);
    assert_eq!(vars(&[("XDG_CACHE_HOME", "/cache")]).hf_cache, [PathBuf::from("/cache/huggingface/hub")]);
    assert_eq!(vars(&[("HF_HUB_CACHE", "/hub"), ("HF_HOME", "/data/hf")]).hf_cache, [PathBuf::from("/hub")]);
    // An empty variable counts as unset, as the programs treat it.
    assert_eq!(vars(&[("HOME", "/home/u"), ("OLLAMA_MODELS", "")]).ollama[0], PathBuf::from("/home/u/.ollama/models"));
}

//! The models already on this computer: Ollama's and LM Studio's GGUF files and the Hugging Face
//! cache's snapshot folders, each judged for whether this build can train it.
//!
//! Only manifests, config files, GGUF headers and safetensors headers are read (no weights, no
//! tokenizer is built), so listing many gigabytes of models takes moments. One unreadable entry
//! never hides the others: it is listed with the reason it cannot be trained.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::gguf::GgufListing;
use super::hf::read_json;
use super::safetensors_file::SafetensorsFiles;
use crate::model::arch::{check_config, model_type};

/// Ollama's manifest layer that holds the weights (a GGUF file).
const OLLAMA_MODEL_LAYER: &str = "application/vnd.ollama.image.model";
/// Ollama's default registry and namespace, which `ollama list` leaves out of names.
const OLLAMA_REGISTRY: &str = "registry.ollama.ai";
const OLLAMA_LIBRARY: &str = "library";
/// Where Ollama's Linux installer keeps the models of its system service (user `ollama`).
const OLLAMA_LINUX_SERVICE: &str = "/usr/share/ollama/.ollama/models";
/// Manifests are a few hundred bytes; a larger file in their folder is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Folder depth summed for a snapshot's size (HF repos nest a few levels at most).
const MAX_SIZE_DEPTH: usize = 8;

/// The folders each store keeps its models in; missing folders are skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stores {
    /// Ollama model folders, each holding `manifests/` and `blobs/`.
    pub ollama: Vec<PathBuf>,
    /// LM Studio model folders: `<publisher>/<repo>/<file>.gguf`.
    pub lm_studio: Vec<PathBuf>,
    /// Hugging Face hub caches: `models--<org>--<name>/snapshots/<revision>/`.
    pub hf_cache: Vec<PathBuf>,
}

impl Stores {
    /// Where Ollama, LM Studio and the Hugging Face hub keep models for this user.
    pub fn from_env() -> Self {
        Self::from_vars(|key| std::env::var_os(key))
    }

    /// [`Stores::from_env`] with each environment variable looked up by `var`: `OLLAMA_MODELS`,
    /// else `~/.ollama/models` (and the Linux service's folder); `~/.lmstudio/models` and
    /// `~/.cache/lm-studio/models`; `HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`, as huggingface_hub
    /// resolves it. `~` is `HOME`, or `USERPROFILE` on Windows.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let set = |key: &str| var(key).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = set("HOME").or_else(|| set("USERPROFILE"));
        let in_home = |rel: &str| home.as_ref().map(|h| h.join(rel));
        let mut ollama: Vec<PathBuf> = set("OLLAMA_MODELS").or_else(|| in_home(".ollama/models")).into_iter().collect();
        if cfg!(target_os = "linux") && !ollama.iter().any(|p| p == Path::new(OLLAMA_LINUX_SERVICE)) {
            ollama.push(OLLAMA_LINUX_SERVICE.into());
        }
        let hf_cache = set("HF_HUB_CACHE")
            .or_else(|| set("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| set("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
            .or_else(|| in_home(".cache/huggingface/hub"));
        Self {
            ollama,
            lm_studio: [".lmstudio/models", ".cache/lm-studio/models"].into_iter().filter_map(in_home).collect(),
            hf_cache: hf_cache.into_iter().collect(),
        }
    }
}

/// Which store a model was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Ollama,
    LmStudio,
    HfCache,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ollama => "Ollama",
            Self::LmStudio => "LM Studio",
            Self::HfCache => "HF cache",
        })
    }
}

/// How the model is loaded: a GGUF file or an HF folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gguf,
    HfFolder,
}

/// Whether this build can load and train a model, judged as loading it would judge it.
#[derive(Debug, Clone, PartialEq)]
pub enum Trainable {
    Yes,
    /// Why not: the architecture, a tensor type, the tokenizer, or a file that cannot be read.
    No(String),
}

impl Trainable {
    pub fn is_yes(&self) -> bool {
        *self == Self::Yes
    }
}

impl fmt::Display for Trainable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Yes => f.write_str("yes"),
            Self::No(reason) => write!(f, "no: {reason}"),
        }
    }
}

/// One model found in a store.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundModel {
    /// As the store names it: `smollm2:135m` (Ollama), `<publisher>/<repo>/<file>` (LM Studio),
    /// `<org>/<name>` (HF cache).
    pub name: String,
    pub source: Source,
    pub format: Format,
    /// What to load: the GGUF file (for Ollama, its blob) or the snapshot folder; for an entry
    /// that could not be read, the file at fault (an Ollama manifest).
    pub path: PathBuf,
    /// GGUF `general.architecture`, or config.json's `model_type` (else `architectures[0]`).
    pub architecture: Option<String>,
    /// Bytes on disk: the GGUF file, or every file of the snapshot (its links followed).
    pub size: u64,
    /// The GGUF file type (Q4_K_M, Q8_0, F16, ...), or config.json's dtype or quantization method.
    pub quantization: Option<String>,
    pub trainable: Trainable,
}

/// Every model in `stores`, by source then name.
pub fn discover(stores: &Stores) -> Vec<FoundModel> {
    let mut found = Vec::new();
    for root in &stores.ollama {
        scan_ollama(root, &mut found);
    }
    for root in &stores.lm_studio {
        scan_lm_studio(root, &mut found);
    }
    for root in &stores.hf_cache {
        scan_hf_cache(root, &mut found);
    }
    found.sort_by(|a, b| (a.source, &a.name, &a.path).cmp(&(b.source, &b.name, &b.path)));
    found
}

/// Why an Ollama manifest does not lead to a model file.
#[derive(Debug, thiserror::Error)]
enum ManifestError {
    #[error("cannot read the manifest: {0}")]
    Io(#[from] std::io::Error),
    #[error("the manifest is {0} bytes, too large to be one")]
    TooLarge(u64),
    #[error("the manifest is not an Ollama manifest: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the manifest has no model layer ({OLLAMA_MODEL_LAYER})")]
    NoModelLayer,
    #[error("the model layer's digest {0:?} is not sha256:<64 hex digits>")]
    BadDigest(String),
    #[error("the model blob {} is missing", .0.display())]
    MissingBlob(PathBuf),
}

/// The parts of an Ollama manifest (a Docker image manifest, schema 2) that locate the weights.
#[derive(Deserialize)]
struct Manifest {
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
}

/// `manifests/<registry>/<namespace>/<model>/<tag>`, each naming its layers' blobs.
fn scan_ollama(root: &Path, found: &mut Vec<FoundModel>) {
    let blobs = root.join("blobs");
    for (registry, registry_dir) in entries(&root.join("manifests"), Kind::Dir) {
        for (namespace, namespace_dir) in entries(&registry_dir, Kind::Dir) {
            for (model, model_dir) in entries(&namespace_dir, Kind::Dir) {
                for (tag, manifest) in entries(&model_dir, Kind::File) {
                    let name = ollama_name(&registry, &namespace, &model, &tag);
                    found.push(match model_blob(&blobs, &manifest) {
                        Ok(blob) => gguf_model(name, Source::Ollama, &blob),
                        Err(e) => unreadable(name, Source::Ollama, Format::Gguf, manifest, e.to_string()),
                    });
                }
            }
        }
    }
}

/// The name `ollama list` shows: `smollm2:135m` for the library, `user/model:tag` for a user's
/// model, the whole `hf.co/org/repo:tag` for other registries.
fn ollama_name(registry: &str, namespace: &str, model: &str, tag: &str) -> String {
    match (registry, namespace) {
        (OLLAMA_REGISTRY, OLLAMA_LIBRARY) => format!("{model}:{tag}"),
        (OLLAMA_REGISTRY, _) => format!("{namespace}/{model}:{tag}"),
        _ => format!("{registry}/{namespace}/{model}:{tag}"),
    }
}

/// The blob a manifest's model layer names: `blobs/sha256-<hex>` for digest `sha256:<hex>`.
fn model_blob(blobs: &Path, manifest: &Path) -> Result<PathBuf, ManifestError> {
    let len = std::fs::metadata(manifest)?.len();
    if len > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(len));
    }
    let parsed: Manifest = serde_json::from_slice(&std::fs::read(manifest)?)?;
    let layer = parsed.layers.into_iter().find(|l| l.media_type == OLLAMA_MODEL_LAYER).ok_or(ManifestError::NoModelLayer)?;
    // Checked before it becomes a path: a digest like "sha256:../../x" must not leave blobs/.
    let hex = match layer.digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => hex,
        _ => return Err(ManifestError::BadDigest(layer.digest)),
    };
    let blob = blobs.join(format!("sha256-{hex}"));
    if blob.is_file() { Ok(blob) } else { Err(ManifestError::MissingBlob(blob)) }
}

/// `<publisher>/<repo>/<file>.gguf`.
fn scan_lm_studio(root: &Path, found: &mut Vec<FoundModel>) {
    for (publisher, publisher_dir) in entries(root, Kind::Dir) {
        for (repo, repo_dir) in entries(&publisher_dir, Kind::Dir) {
            for (file, path) in gguf_files(&repo_dir) {
                found.push(gguf_model(format!("{publisher}/{repo}/{file}"), Source::LmStudio, &path));
            }
        }
    }
}

/// `models--<org>--<name>/snapshots/<revision>/`: a folder with config.json is an HF model; one
/// without (a GGUF repository) lists its .gguf files.
fn scan_hf_cache(root: &Path, found: &mut Vec<FoundModel>) {
    for (folder, repo_dir) in entries(root, Kind::Dir) {
        // The cache writes repo ids with '/' as "--" (which repo names may not contain).
        let Some(repo) = folder.strip_prefix("models--").map(|id| id.replace("--", "/")) else {
            continue;
        };
        let snapshots = entries(&repo_dir.join("snapshots"), Kind::Dir);
        let several = snapshots.len() > 1;
        for (revision, dir) in snapshots {
            let name = match several {
                true => format!("{repo}@{}", revision.chars().take(8).collect::<String>()),
                false => repo.clone(),
            };
            if dir.join("config.json").is_file() {
                found.push(hf_model(name, &dir));
            } else {
                found.extend(gguf_files(&dir).into_iter().map(|(file, path)| gguf_model(format!("{name}/{file}"), Source::HfCache, &path)));
            }
        }
    }
}

/// A GGUF file judged from its header: what loading it would check before reading weights, and
/// whether the config.json it implies names an architecture this build runs.
fn gguf_model(name: String, source: Source, path: &Path) -> FoundModel {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let listing = match GgufListing::read(path) {
        Ok(listing) => listing,
        Err(e) => return FoundModel { size, ..unreadable(name, source, Format::Gguf, path.to_path_buf(), reason(e, path)) },
    };
    let trainable = match listing.model {
        Ok(model) => judged(check_config(model.config_json(), &path.display().to_string()), path),
        Err(e) => Trainable::No(reason(e, path)),
    };
    let (architecture, quantization) = (listing.architecture, listing.quantization);
    FoundModel { name, source, format: Format::Gguf, path: path.to_path_buf(), architecture, size, quantization, trainable }
}

/// An HF snapshot folder judged as `io::hf::load_folder` would: the config's architecture and
/// hyper-parameters, safetensors weights (headers only), and tokenizer.json.
fn hf_model(name: String, dir: &Path) -> FoundModel {
    let size = folder_size(dir, MAX_SIZE_DEPTH);
    let config_path = dir.join("config.json");
    let config = match read_json(&config_path) {
        Ok(config) => config,
        Err(e) => return FoundModel { size, ..unreadable(name, Source::HfCache, Format::HfFolder, dir.to_path_buf(), e.to_string()) },
    };
    let architecture = Some(model_type(&config)).filter(|t| !t.is_empty());
    let quantization = hf_quantization(&config);
    let trainable = hf_trainable(dir, &config_path, config);
    FoundModel {
        name,
        source: Source::HfCache,
        format: Format::HfFolder,
        path: dir.to_path_buf(),
        architecture,
        size,
        quantization,
        trainable,
    }
}

/// A quantization method (GPTQ, AWQ, bitsandbytes, ...) when the config names one, else the
/// weights' dtype (`torch_dtype`, or `dtype` as transformers 5 writes it).
fn hf_quantization(config: &Value) -> Option<String> {
    let method = config.get("quantization_config").and_then(|q| q.get("quant_method"));
    let dtype = config.get("torch_dtype").filter(|v| !v.is_null()).or_else(|| config.get("dtype"));
    method.or(dtype).and_then(Value::as_str).map(str::to_string)
}

fn hf_trainable(dir: &Path, config_path: &Path, config: Value) -> Trainable {
    // Packed integer weights (qweight, scales) have none of the tensors the loader reads.
    if let Some(method) = config.get("quantization_config").and_then(|q| q.get("quant_method")).and_then(Value::as_str) {
        return Trainable::No(format!("quantized with {method}; this build reads f32, f16 and bf16 weights"));
    }
    if let Trainable::No(why) = judged(check_config(config, &config_path.display().to_string()), config_path) {
        return Trainable::No(why);
    }
    if let Err(e) = SafetensorsFiles::open_dir(dir) {
        return Trainable::No(reason(e, dir));
    }
    match dir.join("tokenizer.json").is_file() {
        true => Trainable::Yes,
        false => Trainable::No("no tokenizer.json".into()),
    }
}

fn judged(check: crate::error::Result<()>, path: &Path) -> Trainable {
    match check {
        Ok(()) => Trainable::Yes,
        Err(e) => Trainable::No(reason(e, path)),
    }
}

/// An error's message without the leading "<path>: " the engine's errors start with: the list
/// shows the path beside the reason.
fn reason(error: impl fmt::Display, path: &Path) -> String {
    let message = error.to_string();
    match message.strip_prefix(&format!("{}: ", path.display())) {
        Some(rest) => rest.to_string(),
        None => message,
    }
}

fn unreadable(name: String, source: Source, format: Format, path: PathBuf, why: String) -> FoundModel {
    FoundModel { name, source, format, path, architecture: None, size: 0, quantization: None, trainable: Trainable::No(why) }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dir,
    File,
}

/// The visible folders or files in `dir` (links followed), by name; nothing when it cannot be
/// read, which for a store means it is not there.
fn entries(dir: &Path, kind: Kind) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = read
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, path)| !name.starts_with('.') && if kind == Kind::Dir { path.is_dir() } else { path.is_file() })
        .collect();
    out.sort();
    out
}

fn gguf_files(dir: &Path) -> Vec<(String, PathBuf)> {
    entries(dir, Kind::File).into_iter().filter(|(_, path)| super::gguf::has_gguf_name(path)).collect()
}

/// Bytes of every file under `dir`, links to files followed (the HF cache links snapshots to
/// its blobs) but not links to folders, which could loop.
fn folder_size(dir: &Path, depth: usize) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.filter_map(|e| e.ok())
        .map(|e| {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() && depth > 0 => folder_size(&path, depth - 1),
                Ok(t) if t.is_dir() => 0,
                _ => std::fs::metadata(&path).map_or(0, |m| if m.is_file() { m.len() } else { 0 }),
            }
        })
        .fold(0u64, u64::saturating_add)
}

//! One error type for user-facing failures: each names the file (and tensor) and what went wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: unsupported {what} (supported: {supported})")]
    Unsupported { path: PathBuf, what: String, supported: String },
    #[error("{path}: tensor {tensor}: {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },
    #[error("{path}: missing tensor {tensor}")]
    MissingTensor { path: PathBuf, tensor: String },
    /// A run setting no run can use; `key` is the TrainConfig field.
    #[error("invalid setting: {message}")]
    Setting { key: String, message: String },
    /// A new run would write over an earlier run's files; nothing was changed.
    #[error("{path} holds an earlier run ({files}): nothing was changed; resume it, replace it, or choose another output folder")]
    EarlierRun { path: PathBuf, files: String },
    /// A folder the user owns would be replaced; nothing was written.
    #[error("{path} exists and is not empty: nothing was written (choose another folder, or allow replacing it)")]
    Exists { path: PathBuf },
    /// Training stopped because values stopped being finite; nothing was saved from that state.
    #[error("step {step}: {what}; nothing was saved from it{}", kept(checkpoint))]
    Diverged { step: usize, what: String, checkpoint: Option<PathBuf> },
    /// The model could not be saved at the end of a run; the trained weights went to a checkpoint.
    #[error("saving the fine-tuned model failed: {error}{}", kept_weights(checkpoint))]
    SaveFailed { error: Box<Error>, checkpoint: Option<PathBuf> },
    /// The user cancelled long work that leaves nothing behind (a comparison of methods).
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Gguf(#[from] crate::io::gguf::GgufError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Memory(#[from] crate::train::memory::MemoryError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Invalid { path: path.into(), message: message.into() }
    }

    pub fn tensor(path: impl Into<PathBuf>, tensor: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Tensor { path: path.into(), tensor: tensor.into(), message: message.into() }
    }
}

fn kept(checkpoint: &Option<PathBuf>) -> String {
    match checkpoint {
        Some(dir) => format!(" (the last checkpoint, {}, is kept)", dir.display()),
        None => String::new(),
    }
}

fn kept_weights(checkpoint: &Option<PathBuf>) -> String {
    match checkpoint {
        Some(dir) => format!("; the trained weights are kept in the checkpoint {} (resume the run to save again)", dir.display()),
        None => "; writing a checkpoint of the trained weights failed too".into(),
    }
}

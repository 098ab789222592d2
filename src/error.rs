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
    #[error(transparent)]
    Gguf(#[from] crate::io::gguf::GgufError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
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

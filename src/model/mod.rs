//! Architectures, their configs and the parameter inventory the rest of the engine works on.

pub mod arch;
pub mod attention;
pub mod bloom;
pub mod cache;
pub mod config;
pub mod graph;
pub mod linear;
pub mod llama;
pub mod loader;
pub mod lora;
pub mod loss;
pub mod norm;
pub mod opt;
pub mod params;
pub mod precision;
pub mod t5;
pub mod weight;

pub use arch::{BatchInput, Model, ModelInfo};
pub use attention::{Mask, attention_mask};
pub use cache::KvCache;
pub use config::LlamaConfig;
pub use linear::{Linear, Linears};
pub use llama::Llama;
pub use params::{ParamMut, ParamRef, Parameters};
pub use precision::FrozenPrecision;
pub use weight::{QuantMatrix, Weight};

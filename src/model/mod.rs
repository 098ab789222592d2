//! Architectures, their configs and the parameter inventory the rest of the engine works on.

pub mod config;
pub mod llama;
pub mod lora;
pub mod loss;
pub mod params;
pub mod summary;

pub use config::LlamaConfig;
pub use llama::{KvCache, Llama, attention_mask};
pub use params::{ParamMut, ParamRef, Parameters};

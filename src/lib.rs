//! GreenTrainer Studio's engine: FLOPs-budgeted fine-tuning of open LLMs by adaptive
//! backpropagation (Huang et al., ICLR 2024), on wgpu or the CPU.
//!
//! Data path: `model` (architectures) and `io` (loading, saving) -> `profile` (FLOPs model) ->
//! `importance` -> `select` (DP) -> `train` -> `eval` -> `io::export`; `data` feeds train/eval
//! and `app` is a thin egui client of the engine.

pub mod app;
pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod green;
pub mod importance;
pub mod io;
pub mod kernels;
pub mod model;
pub mod profile;
pub mod select;
pub mod train;

pub use error::{Error, Result};

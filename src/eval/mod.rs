//! Judging a model: generation and ROUGE.

pub mod generate;
pub mod porter;
pub mod rouge;
pub mod runner;

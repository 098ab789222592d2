//! Judging a model: generation and ROUGE.

pub mod chat;
pub mod generate;
pub mod porter;
pub mod rouge;
pub mod runner;

//! Fine-tuning: methods (GreenTrainer, full, FT-top-k), the loop, optimizer, checkpoints, events.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod cost;
pub mod events;
pub mod memory;
pub mod optim;
pub mod output;
pub mod plan;
pub mod progress;
pub mod scoring;
pub mod step;
pub mod trainer;

pub use config::{Granularity, MethodKind, TrainConfig};
pub use control::RunControl;
pub use events::{Event, EventSink, JsonlLog};
pub use trainer::{RunOutcome, Trainer};

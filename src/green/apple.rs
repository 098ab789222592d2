//! Apple Silicon's GPU energy from IOReport's "Energy Model" counters. This part chooses the GPU
//! channels, converts their units and sums them from plain values, so it is built and tested on
//! every platform; `ioreport.rs` reads the channels on macOS.
//!
//! The GPU reports as `GPU Energy` on M1 to M4 (public tools match that name). Chips without it
//! publish the GPU as `GPU`, `GPU<n>` or `GPU<n>_<m>` blocks; those nest, so only the least
//! specific level present is counted. `GPU SRAM` blocks are left out, as public tools report them
//! apart from the GPU. Some chips publish the counters in batches seconds apart, so the energy of
//! a run's last seconds can be missing.

use std::fmt;

use crate::device::{BackendKind, ComputeDevice};

/// One channel of an IOReport sample delta: its energy over the delta, in `unit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub group: String,
    pub name: String,
    pub unit: String,
    pub value: i64,
}

/// The IOReport group holding the energy counters.
pub const ENERGY_GROUP: &str = "Energy Model";

/// Channel deltas since the previous call; None when IOReport gave no sample.
pub type Deltas = Box<dyn FnMut() -> Option<Vec<Channel>> + Send>;

/// How specific a GPU channel name is (0: the whole-GPU counter); None for other blocks.
fn gpu_level(name: &str) -> Option<u8> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match name {
        "GPU Energy" => Some(0),
        "GPU" => Some(1),
        _ => {
            let rest = name.strip_prefix("GPU")?;
            match rest.split_once('_') {
                None => digits(rest).then_some(2),
                Some((n, m)) => (digits(n) && digits(m)).then_some(3),
            }
        }
    }
}

/// The names of the GPU channels to count among `channels`, sorted; empty when there is none.
pub fn gpu_channels(channels: &[Channel]) -> Vec<String> {
    let gpu = channels.iter().filter(|c| c.group == ENERGY_GROUP).filter_map(|c| Some((gpu_level(&c.name)?, &c.name)));
    let Some(level) = gpu.clone().map(|(level, _)| level).min() else {
        return Vec::new();
    };
    let mut names: Vec<String> = gpu.filter(|(l, _)| *l == level).map(|(_, name)| name.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// `value` in joules; None for a unit IOReport is not known to use, or a negative delta.
pub fn to_joules(unit: &str, value: i64) -> Option<f64> {
    let scale = match unit.trim() {
        "mJ" => 1e-3,
        "uJ" => 1e-6,
        "nJ" => 1e-9,
        _ => return None,
    };
    (value >= 0).then_some(value as f64 * scale)
}

/// Joules of the `chosen` channels in `delta`; None when one is missing or unreadable.
pub fn gpu_joules(chosen: &[String], delta: &[Channel]) -> Option<f64> {
    chosen
        .iter()
        .map(|name| {
            let channel = delta.iter().find(|c| c.group == ENERGY_GROUP && &c.name == name)?;
            to_joules(&channel.unit, channel.value)
        })
        .sum()
}

/// The run card's name for a sensor counting these channels.
pub fn label(chosen: &[String]) -> String {
    format!("Apple GPU energy (IOReport {})", chosen.join(" + "))
}

/// The GPU's energy since the previous sample.
pub(super) struct Probe {
    read: Deltas,
    chosen: Vec<String>,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IOReport {:?}", self.chosen)
    }
}

impl Probe {
    /// Reads once to find the GPU channels; None when there is none or its unit is unknown, so a
    /// reader that cannot work is never opened.
    pub(super) fn open(mut read: Deltas) -> Option<(String, Self)> {
        let first = read()?;
        let chosen = gpu_channels(&first);
        if chosen.is_empty() {
            tracing::debug!("IOReport has no GPU energy channel, the Apple GPU is not measured");
            return None;
        }
        gpu_joules(&chosen, &first)?;
        Some((label(&chosen), Self { read, chosen }))
    }

    pub(super) fn sample(&mut self) -> Option<f64> {
        gpu_joules(&self.chosen, &(self.read)()?)
    }
}

/// A run on Apple's GPU: the Metal adapter, not a software one.
pub fn on_metal(device: &ComputeDevice) -> bool {
    device.backend == BackendKind::Wgpu && !device.software && device.name.ends_with(" / Metal")
}

/// The system's IOReport energy channels, where they can be read (macOS with libIOReport).
#[cfg(target_os = "macos")]
pub(super) fn system() -> Option<Deltas> {
    let mut reader = super::ioreport::Reader::open()?;
    Some(Box::new(move || reader.delta()))
}

#[cfg(not(target_os = "macos"))]
pub(super) fn system() -> Option<Deltas> {
    None
}

//! Which of the two wgpu masked-dW paths to run, picked per device and problem size by timing both
//! once, as cubecl autotunes its own matmul: the tiled WGSL kernel, or gathering dY's selected
//! columns and running the device's tuned dense matmul on the compact problem. Which one wins
//! depends on the device (on lavapipe the dense matmul does, by 3-6x).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a masked weight gradient is computed on wgpu; the CPU has one path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DwPath {
    /// The faster of the two below on this device and size, measured on first use.
    #[default]
    Auto,
    /// shaders/masked_dw.wgsl: a tiled GEMM over the selected rows.
    Tiled,
    /// Gather dY's selected columns, then the dense matmul.
    GatherMatmul,
}

/// A problem size class: token and row counts rounded up to powers of two, so a run with varying
/// padded lengths tunes a handful of times.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DwKey {
    pub device: String,
    pub tokens: usize,
    pub d_out: usize,
    pub d_in: usize,
    pub rows: usize,
}

impl DwKey {
    pub fn new(device: String, tokens: usize, d_out: usize, d_in: usize, rows: usize) -> Self {
        Self { device, tokens: tokens.next_power_of_two(), d_out, d_in, rows: rows.next_power_of_two() }
    }
}

static CHOSEN: LazyLock<Mutex<HashMap<DwKey, DwPath>>> = LazyLock::new(Default::default);

/// The path for `key`: remembered, or the faster of `Tiled` and `GatherMatmul` by `time`
/// (which runs a path to completion and returns how long it took; its first call per path also
/// pays shader compilation, so each path is timed after a warm-up).
pub fn pick(key: DwKey, mut time: impl FnMut(DwPath) -> Duration) -> DwPath {
    if let Some(&path) = CHOSEN.lock().expect("tuning table").get(&key) {
        return path;
    }
    let mut best = (Duration::MAX, DwPath::GatherMatmul);
    for path in [DwPath::Tiled, DwPath::GatherMatmul] {
        time(path);
        let took = time(path);
        if took < best.0 {
            best = (took, path);
        }
    }
    tracing::debug!("masked dW {key:?}: {:?} ({:.2} ms)", best.1, best.0.as_secs_f64() * 1e3);
    CHOSEN.lock().expect("tuning table").insert(key, best.1);
    best.1
}

/// Wall time of `run` followed by `sync`.
pub fn timed(run: impl FnOnce(), sync: impl FnOnce()) -> Duration {
    let start = Instant::now();
    run();
    sync();
    start.elapsed()
}

//! Which wgpu masked-dW path to run, picked per device and problem size by timing each, as cubecl
//! autotunes its own matmul: the tiled WGSL kernel, or gathering dY's selected columns and
//! running the device's tuned dense matmul on the compact problem, in either operand order. Which
//! one wins depends on the device and the shape (on lavapipe a matmul does, by 2-3x).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a masked weight gradient is computed on wgpu; the CPU has one path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DwPath {
    /// The fastest of the ones below on this device and size, measured on first use.
    #[default]
    Auto,
    /// shaders/masked_dw.wgsl: a tiled GEMM over the selected rows.
    Tiled,
    /// Gather dY's selected columns, then the dense matmul `dY_sel^T X`.
    GatherMatmul,
    /// Gather dY's selected columns, then `(X^T dY_sel)^T`: the matmul's tiles fall differently.
    SwappedGatherMatmul,
}

impl DwPath {
    /// The paths `Auto` chooses from.
    pub const CANDIDATES: [DwPath; 3] = [DwPath::Tiled, DwPath::GatherMatmul, DwPath::SwappedGatherMatmul];
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

/// Rounds of timing per candidate (see [`interleaved_best`]).
const ROUNDS: usize = 3;

/// The path for `key`: remembered, or the fastest of [`DwPath::CANDIDATES`] by `time`
/// (which runs a path to completion and returns how long it took; its first call per path also
/// pays shader compilation, so each path is warmed up first).
pub fn pick(key: DwKey, mut time: impl FnMut(DwPath) -> Duration) -> DwPath {
    if let Some(&path) = CHOSEN.lock().expect("tuning table").get(&key) {
        return path;
    }
    let best = interleaved_best(DwPath::CANDIDATES.len(), ROUNDS, |i| Ok::<_, std::convert::Infallible>(time(DwPath::CANDIDATES[i])));
    let (took, path) = best.into_iter().flatten().zip(DwPath::CANDIDATES).min_by_key(|&(t, _)| t).expect("candidates");
    tracing::debug!("masked dW {key:?}: {path:?} ({:.2} ms)", took.as_secs_f64() * 1e3);
    CHOSEN.lock().expect("tuning table").insert(key, path);
    path
}

/// Each of `count` candidates' best time (`time(i)` runs candidate `i` once and says how long it
/// took) over `rounds` rounds that each time every candidate once, after one warm-up of each
/// (shader compilation, autotune). Rounds are interleaved so load drift on a shared machine hits
/// all candidates alike, and the best round is taken because load only adds time. A candidate that
/// fails keeps its first error and is not run again.
pub fn interleaved_best<E>(count: usize, rounds: usize, mut time: impl FnMut(usize) -> Result<Duration, E>) -> Vec<Result<Duration, E>> {
    let mut best: Vec<Result<Duration, E>> = (0..count).map(|i| time(i).map(|_| Duration::MAX)).collect();
    for _ in 0..rounds.max(1) {
        for (i, b) in best.iter_mut().enumerate() {
            if let Ok(so_far) = b {
                match time(i) {
                    Ok(t) => *so_far = (*so_far).min(t),
                    Err(e) => *b = Err(e),
                }
            }
        }
    }
    best
}

/// Wall time of `run` followed by `sync`.
pub fn timed(run: impl FnOnce(), sync: impl FnOnce()) -> Duration {
    let start = Instant::now();
    run();
    sync();
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rows: usize) -> DwKey {
        DwKey::new("test device".into(), 1000, 576, 576, rows)
    }

    #[test]
    fn picks_the_best_round_ignores_warm_up_and_remembers() {
        // Per path: warm-up, then one time per round. Tiled's warm-up (compilation) is the slowest
        // call of all and the swapped path has one noisy round; its best round still wins.
        let mut script: HashMap<DwPath, Vec<u64>> = HashMap::from([
            (DwPath::Tiled, vec![900, 30, 31, 29]),
            (DwPath::GatherMatmul, vec![50, 24, 25, 26]),
            (DwPath::SwappedGatherMatmul, vec![50, 60, 20, 22]),
        ]);
        let mut calls = 0;
        let mut time = |p: DwPath| {
            calls += 1;
            Duration::from_millis(script.get_mut(&p).expect("scripted path").remove(0))
        };
        assert_eq!(pick(key(130), &mut time), DwPath::SwappedGatherMatmul);
        assert_eq!(calls, 3 * (1 + ROUNDS));
        // Remembered: no timing on the second call, and the same size class (rows up to 256) shares it.
        assert_eq!(pick(key(200), |_| panic!("timed again")), DwPath::SwappedGatherMatmul);
    }

    #[test]
    fn a_failing_candidate_keeps_its_first_error_and_is_not_run_again() {
        // Candidate 0 fails at warm-up, 1 fails in its second round, 2 succeeds throughout.
        let mut runs = [0; 3];
        let best = interleaved_best(3, 3, |i| {
            runs[i] += 1;
            match (i, runs[i]) {
                (0, _) => Err(format!("warm-up {}", runs[i])),
                (1, 3) => Err("round 2".to_string()),
                (_, n) => Ok(Duration::from_millis(10 - n as u64)),
            }
        });
        assert_eq!(best[0], Err("warm-up 1".to_string()));
        assert_eq!(best[1], Err("round 2".to_string()));
        assert_eq!(best[2], Ok(Duration::from_millis(6)));
        assert_eq!(runs, [1, 3, 4]);
    }
}

//! `greentrainer bench select`: the exact DP on random instances of a given size.

use std::time::Instant;

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::select::{Candidate, SelectConfig, select};

/// Median time of the DP over 5 random instances with `n` candidates at capacity `c`, per rho.
pub fn run(n: usize, c: usize) -> String {
    let mut out = String::from("| tensors | capacity | rho | median ms | selected |\n|---|---|---|---|---|\n");
    let mut rng = StdRng::seed_from_u64(7);
    for rho in [0.4, 0.5, 0.7] {
        let mut times = Vec::new();
        let mut chosen = 0;
        for _ in 0..5 {
            let candidates: Vec<Candidate> = (0..n)
                .map(|_| Candidate {
                    t_dy: rng.random_range(0.0..1.0),
                    t_dw: rng.random_range(0.0..1.0),
                    importance: rng.random_range(-0.2..1.0),
                    selectable: true,
                    // Some instances then need the time-bound passes too.
                    t_update: rng.random_range(0.0..0.5),
                })
                .collect();
            let t_fp: f64 = candidates.iter().map(|c| c.t_dy).sum();
            let config = SelectConfig { capacity: c, ..SelectConfig::new(rho) };
            let start = Instant::now();
            let result = select(&candidates, t_fp, &config);
            times.push(start.elapsed().as_secs_f64() * 1e3);
            chosen = result.map(|s| s.selected.len()).unwrap_or(0);
        }
        times.sort_by(f64::total_cmp);
        out += &format!("| {n} | {c} | {rho} | {:.2} | {chosen} |\n", times[times.len() / 2]);
    }
    out
}

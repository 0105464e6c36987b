//! c4m benchmarks: see `benches/` and `src/bin/`. What the bench binaries
//! share lives here.

use std::time::Duration;

/// The `p` quantile (0.0..=1.0) of `sorted` (ascending, not empty), the
/// nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

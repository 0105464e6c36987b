//! c4m benchmarks: see `benches/` and `src/bin/`.

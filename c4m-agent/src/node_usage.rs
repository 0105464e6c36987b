//! The node's own resource usage, as metrics-server reports a node's: the
//! whole machine's CPU rate (from `/proc/stat`) and memory working set
//! (`MemTotal - MemAvailable` of `/proc/meminfo`), sent with heartbeats.

use std::time::{Duration, Instant};

use c4m_api::agent::ResourceUsage;

/// Linux's `USER_HZ`: the unit of `/proc/stat`'s CPU times on every
/// architecture Linux runs on today.
const JIFFIES_PER_SECOND: u64 = 100;

/// Samples the node's usage; the CPU rate needs two samples.
#[derive(Debug, Default)]
pub(crate) struct NodeUsage {
    /// CPU time spent busy (nanoseconds) at the previous sample.
    last: Option<(u64, Instant)>,
}

impl NodeUsage {
    /// The usage since the previous call, or None on the first call or
    /// when `/proc` cannot be read.
    pub(crate) fn sample(&mut self) -> Option<ResourceUsage> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        self.next(busy_nanos(&stat)?, working_set(&meminfo)?, Instant::now())
    }

    fn next(&mut self, busy: u64, memory: u64, now: Instant) -> Option<ResourceUsage> {
        let previous = self.last.replace((busy, now));
        let (before, at) = previous?;
        let elapsed = now.duration_since(at);
        if elapsed < Duration::from_millis(1) {
            return None;
        }
        let nanocores = crate::supervisor::cpu_nanocores(busy.saturating_sub(before), elapsed);
        Some(ResourceUsage {
            cpu_millis: nanocores / 1_000_000,
            memory_bytes: i64::try_from(memory).unwrap_or(i64::MAX),
            cpu_nanocores: nanocores,
            window_millis: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
            containers: Vec::new(),
        })
    }
}

/// CPU time spent not idle, in nanoseconds, from `/proc/stat`'s `cpu` line
/// (user, nice, system, irq, softirq and steal; not idle or iowait).
fn busy_nanos(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    let jiffies = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Some(jiffies.saturating_mul(1_000_000_000 / JIFFIES_PER_SECOND))
}

/// Memory in use (`MemTotal - MemAvailable`), in bytes.
fn working_set(meminfo: &str) -> Option<u64> {
    let kib = |key: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(kib("MemTotal:")?.saturating_sub(kib("MemAvailable:")?) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_are_read_as_metrics_server_reports_them() {
        let stat = "cpu  100 20 30 1000 50 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        // user + nice + system + irq + softirq + steal = 160 jiffies.
        assert_eq!(busy_nanos(stat), Some(1_600_000_000));
        let meminfo = "MemTotal:       2048000 kB\nMemFree:  1000 kB\nMemAvailable:   1024000 kB\n";
        assert_eq!(working_set(meminfo), Some(1_024_000 * 1024));
        assert_eq!(busy_nanos("intr 1 2 3\n"), None);
        assert_eq!(working_set("MemTotal: x kB\n"), None);
    }

    #[test]
    fn the_rate_needs_two_samples() {
        let mut usage = NodeUsage::default();
        let start = Instant::now();
        assert!(usage.next(1_000_000_000, 4096, start).is_none());
        // 1.5 s of CPU time in 2 s: 750 millicores.
        let second = usage
            .next(2_500_000_000, 8192, start + Duration::from_secs(2))
            .unwrap();
        assert_eq!(second.cpu_nanocores, 750_000_000);
        assert_eq!(second.cpu_millis, 750);
        assert_eq!(second.window_millis, 2000);
        assert_eq!(second.memory_bytes, 8192);
    }
}

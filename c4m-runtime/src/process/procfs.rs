//! What the `process` driver reads from `/proc`: process identity (to tell a
//! live process from a reused pid) and usage when there are no cgroups.

use c4m_core::ResourceUsage;

/// Linux reports `/proc/<pid>/stat` times in USER_HZ clock ticks, which is
/// 100 on every architecture Linux supports (CLK_TCK is fixed for userspace).
const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// The fields of `/proc/<pid>/stat` the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: `R`, `S`, `Z` (zombie), ...
    pub state: char,
    /// Field 14: user CPU time in clock ticks.
    pub utime: u64,
    /// Field 15: system CPU time in clock ticks.
    pub stime: u64,
    /// Field 22: start time in clock ticks since boot; with the pid it
    /// identifies a process across pid reuse.
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat` text; `None` if it is malformed.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may itself contain
    // spaces and parentheses, so fields are counted from the last ')'.
    let after_comm = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3.
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        state: field(3)?.chars().next()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
    })
}

/// The process's stat, `None` if there is no such process (or it cannot be
/// read).
pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether the process identified by `pid` and `start_ticks` still runs (not
/// a zombie, and the pid not reused by another process).
pub(crate) fn is_alive(pid: u32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_ticks == start_ticks && s.state != 'Z' && s.state != 'X')
}

/// Usage of one process (without its children), for hosts without cgroups.
pub(crate) fn usage(pid: u32) -> ResourceUsage {
    let cpu_ticks = stat(pid).map_or(0, |s| s.utime.saturating_add(s.stime));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let status_field = |key: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    ResourceUsage {
        cpu_nanos: cpu_ticks.saturating_mul(1_000_000_000 / CLOCK_TICKS_PER_SECOND),
        memory_bytes: status_field("VmRSS").unwrap_or(0).saturating_mul(1024),
        pids: status_field("Threads").unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let text = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 1 0 123456 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                state: 'S',
                utime: 7,
                stime: 3,
                start_ticks: 123456
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let stat = stat(me).expect("own stat");
        assert!(is_alive(me, stat.start_ticks));
        assert!(!is_alive(me, stat.start_ticks + 1));
        let usage = usage(me);
        assert!(usage.memory_bytes > 0);
        assert!(usage.pids >= 1);
    }
}

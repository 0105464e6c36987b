//! What the daemon tells about a container, in c4m's terms.

use std::net::IpAddr;
use std::time::SystemTime;

use bollard::models::{ContainerInspectResponse, ContainerStatsResponse};

use super::SPEC_LABEL;
use crate::state::{self, signal_of_exit_code};
use crate::{Error, Result};
use c4m_core::{ContainerSpec, ContainerState, ContainerStatus, ResourceUsage};

/// The status of container `id` from its `inspect` answer: the spec from
/// its label, the state from `State`; declared ports are bound on the node
/// (`host_address`) at their own numbers, as host networking does.
pub(super) fn status(
    id: &str,
    inspected: &ContainerInspectResponse,
    host_address: IpAddr,
) -> Result<ContainerStatus> {
    let invalid = |message: String| Error::Runtime {
        id: id.into(),
        message,
    };
    let spec_json = inspected
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|labels| labels.get(SPEC_LABEL))
        .ok_or_else(|| invalid(format!("the container has no {SPEC_LABEL} label")))?;
    let spec: ContainerSpec = serde_json::from_str(spec_json).map_err(|e| {
        Error::container(id, format!("label {SPEC_LABEL}: not a container spec"), e)
    })?;
    let state = inspected
        .state
        .as_ref()
        .ok_or_else(|| invalid("the daemon reported no state".into()))?;
    let started_at = state
        .started_at
        .as_deref()
        .and_then(docker_time)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let state = if state.running == Some(true) {
        let pid = state
            .pid
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or(0);
        ContainerState::Running { pid, started_at }
    } else {
        // A container created but never started has no exit code yet.
        let never_ran = state.started_at.as_deref().and_then(docker_time).is_none();
        let exit_code = state
            .exit_code
            .and_then(|code| i32::try_from(code).ok())
            .filter(|_| !never_ran);
        ContainerState::Exited {
            exit_code,
            signal: exit_code.and_then(signal_of_exit_code),
            oom_killed: state.oom_killed == Some(true),
            started_at,
            // dockerd stamps a fast exit's end from another clock read
            // than its start, sometimes a fraction of a millisecond
            // earlier: an end is never before its start.
            finished_at: state
                .finished_at
                .as_deref()
                .and_then(docker_time)
                .map_or(started_at, |finished| finished.max(started_at)),
        }
    };
    let ports = state::host_port_bindings(&spec, &host_address.to_string());
    Ok(ContainerStatus {
        id: id.into(),
        spec,
        state,
        ports,
    })
}

/// A time as the daemon writes it (RFC 3339); Go's zero time
/// (`0001-01-01T00:00:00Z`, "never") and anything before 1970 are `None`.
pub(super) fn docker_time(text: &str) -> Option<SystemTime> {
    let time: jiff::Timestamp = text.parse().ok()?;
    (time.as_second() > 0).then(|| SystemTime::from(time))
}

/// Usage counters from a one-shot `stats` answer.
pub(super) fn usage(stats: &ContainerStatsResponse) -> ResourceUsage {
    ResourceUsage {
        cpu_nanos: stats
            .cpu_stats
            .as_ref()
            .and_then(|cpu| cpu.cpu_usage.as_ref())
            .and_then(|usage| usage.total_usage)
            .unwrap_or(0),
        memory_bytes: stats
            .memory_stats
            .as_ref()
            .and_then(|memory| memory.usage)
            .unwrap_or(0),
        pids: stats
            .pids_stats
            .as_ref()
            .and_then(|pids| pids.current)
            .unwrap_or(0),
    }
}

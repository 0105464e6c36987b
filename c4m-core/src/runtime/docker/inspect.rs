//! What the daemon tells about a container, in c4m's terms.

use std::net::IpAddr;
use std::time::SystemTime;

use bollard::models::{ContainerInspectResponse, ContainerStatsResponse};

use super::SPEC_LABEL;
use crate::runtime::state::signal_of_exit_code;
use crate::runtime::{ContainerSpec, ContainerState, ContainerStatus, PortBinding, ResourceUsage};
use crate::{Error, Result};

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
    let spec: ContainerSpec = serde_json::from_str(spec_json)
        .map_err(|e| invalid(format!("label {SPEC_LABEL}: not a container spec: {e}")))?;
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
            finished_at: state
                .finished_at
                .as_deref()
                .and_then(docker_time)
                .unwrap_or(started_at),
        }
    };
    let ports = spec
        .ports
        .iter()
        .map(|port| PortBinding {
            name: port.name.clone(),
            container_port: port.container_port,
            host_ip: host_address.to_string(),
            host_port: port.container_port,
            protocol: port.protocol.clone(),
        })
        .collect();
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

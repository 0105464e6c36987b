//! What the `docker` driver asks of the daemon and reads back from it, and
//! how it fails without one. The driver against a real dockerd is the
//! conformance suite's (`tests/conformance/docker.rs`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use bollard::models::{
    ContainerConfig, ContainerInspectResponse, ContainerState as DockerState, ImageConfig,
};

use super::*;
use c4m_core::{ContainerState, PortSpec, ResourceLimits};

fn spec() -> ContainerSpec {
    ContainerSpec {
        id: "default_web_1234abcd".into(),
        image: Some("127.0.0.1:5000/bb:1".into()),
        command: vec!["/bin/web".into()],
        args: vec!["--port".into(), "8080".into()],
        env: vec![("MODE".into(), "prod".into())],
        working_dir: Some("/srv".into()),
        user: Some(1000),
        group: Some(2000),
        ports: vec![PortSpec {
            name: "http".into(),
            container_port: 8080,
            protocol: "TCP".into(),
        }],
        resources: ResourceLimits {
            cpu_request_millis: 250,
            cpu_limit_millis: Some(500),
            memory_request_bytes: 64 << 20,
            memory_limit_bytes: Some(128 << 20),
        },
        ..ContainerSpec::default()
    }
}

#[test]
fn the_container_carries_the_spec_limits_and_security_defaults() {
    let spec = spec();
    let body = create::container_body(&spec, Some("node-a"), "127.0.0.1:5000/bb:1", None).unwrap();
    assert_eq!(body.image.as_deref(), Some("127.0.0.1:5000/bb:1"));
    assert_eq!(body.entrypoint, Some(vec!["/bin/web".to_string()]));
    assert_eq!(
        body.cmd,
        Some(vec!["--port".to_string(), "8080".to_string()])
    );
    assert_eq!(body.env, Some(vec!["MODE=prod".to_string()]));
    assert_eq!(body.working_dir.as_deref(), Some("/srv"));
    assert_eq!(body.user.as_deref(), Some("1000:2000"));
    let labels = body.labels.unwrap();
    assert_eq!(labels[ID_LABEL], spec.id);
    assert_eq!(labels[NODE_LABEL], "node-a");
    let kept: ContainerSpec = serde_json::from_str(&labels[SPEC_LABEL]).unwrap();
    assert_eq!(kept, spec);
    let host = body.host_config.unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    assert_eq!(host.memory, Some(128 << 20));
    assert_eq!(host.memory_swap, Some(128 << 20), "no swap under the limit");
    assert_eq!(host.cpu_shares, Some(256));
    assert_eq!(host.cpu_period, Some(100_000));
    assert_eq!(host.cpu_quota, Some(50_000));
    assert_eq!(host.pids_limit, Some(crate::PIDS_LIMIT));
    assert_eq!(host.privileged, Some(false));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_string()])
    );
    assert_eq!(host.readonly_rootfs, Some(false));
    assert_eq!(host.binds, None);
}

#[test]
fn unset_fields_leave_the_image_defaults_and_the_daemon_unlimited() {
    let spec = ContainerSpec {
        id: "a".into(),
        image: Some("bb".into()),
        privileged: true,
        read_only_root_filesystem: true,
        resolv_conf: Some(PathBuf::from("/run/c4m/a/resolv.conf")),
        ..ContainerSpec::default()
    };
    let body = create::container_body(&spec, None, "docker.io/library/bb:latest", None).unwrap();
    assert_eq!(body.entrypoint, None, "the image's entrypoint");
    assert_eq!(body.cmd, None, "the image's cmd");
    assert_eq!(body.user, None, "the image's user");
    assert_eq!(body.working_dir, None);
    assert!(!body.labels.unwrap().contains_key(NODE_LABEL));
    let host = body.host_config.unwrap();
    assert_eq!((host.memory, host.memory_swap), (None, None));
    assert_eq!((host.cpu_period, host.cpu_quota), (None, None));
    assert_eq!(host.cpu_shares, Some(2), "the least shares, as Kubernetes");
    assert_eq!(host.privileged, Some(true));
    assert_eq!(host.security_opt, None);
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(
        host.binds,
        Some(vec![
            "/run/c4m/a/resolv.conf:/etc/resolv.conf:ro".to_string()
        ])
    );
}

#[test]
fn args_alone_keep_the_image_entrypoint_and_a_group_alone_the_image_user() {
    let image = ImageConfig {
        user: Some("app:app".into()),
        ..Default::default()
    };
    let spec = ContainerSpec {
        id: "a".into(),
        args: vec!["echo hi".into()],
        group: Some(5),
        ..ContainerSpec::default()
    };
    let body = create::container_body(&spec, None, "bb", Some(&image)).unwrap();
    assert_eq!(body.entrypoint, None);
    assert_eq!(body.cmd, Some(vec!["echo hi".to_string()]));
    assert_eq!(body.user.as_deref(), Some("app:5"));
    let rootless_image = ImageConfig::default();
    let body = create::container_body(&spec, None, "bb", Some(&rootless_image)).unwrap();
    assert_eq!(body.user.as_deref(), Some("0:5"));
    let uid_only = ContainerSpec {
        user: Some(7),
        group: None,
        ..spec
    };
    let body = create::container_body(&uid_only, None, "bb", Some(&image)).unwrap();
    assert_eq!(
        body.user.as_deref(),
        Some("7"),
        "the daemon finds 7's group"
    );
}

fn inspected(spec: &ContainerSpec, state: DockerState) -> ContainerInspectResponse {
    ContainerInspectResponse {
        config: Some(ContainerConfig {
            labels: Some(HashMap::from([
                (ID_LABEL.to_string(), spec.id.clone()),
                (SPEC_LABEL.to_string(), serde_json::to_string(spec).unwrap()),
            ])),
            ..Default::default()
        }),
        state: Some(state),
        ..Default::default()
    }
}

const NODE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

#[test]
fn status_comes_from_the_state_and_the_spec_label() {
    let spec = spec();
    let running = inspected(
        &spec,
        DockerState {
            running: Some(true),
            pid: Some(4321),
            started_at: Some("2026-12-01T04:10:00.5Z".into()),
            finished_at: Some("0001-01-01T00:00:00Z".into()),
            ..Default::default()
        },
    );
    let status = inspect::status(&spec.id, &running, NODE).unwrap();
    assert_eq!(status.spec, spec);
    let started = UNIX_EPOCH + Duration::from_millis(1_796_098_200_500);
    assert_eq!(
        status.state,
        ContainerState::Running {
            pid: 4321,
            started_at: started
        }
    );
    assert_eq!(status.ports.len(), 1);
    assert_eq!(status.ports[0].host_ip, "10.0.0.7");
    assert_eq!(status.ports[0].host_port, 8080, "host networking");

    let killed = inspected(
        &spec,
        DockerState {
            running: Some(false),
            exit_code: Some(137),
            oom_killed: Some(true),
            started_at: Some("2026-12-01T04:10:00.5Z".into()),
            finished_at: Some("2026-12-01T04:10:01.5Z".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        inspect::status(&spec.id, &killed, NODE).unwrap().state,
        ContainerState::Exited {
            exit_code: Some(137),
            signal: Some(9),
            oom_killed: true,
            started_at: started,
            finished_at: started + Duration::from_secs(1),
        }
    );

    let never_started = inspected(
        &spec,
        DockerState {
            running: Some(false),
            exit_code: Some(0),
            started_at: Some("0001-01-01T00:00:00Z".into()),
            finished_at: Some("0001-01-01T00:00:00Z".into()),
            ..Default::default()
        },
    );
    assert!(matches!(
        inspect::status(&spec.id, &never_started, NODE)
            .unwrap()
            .state,
        ContainerState::Exited {
            exit_code: None,
            ..
        }
    ));
}

#[test]
fn a_container_without_a_readable_spec_label_is_an_error_naming_the_label() {
    let mut bad = inspected(&spec(), DockerState::default());
    let labels = bad.config.as_mut().unwrap().labels.as_mut().unwrap();
    labels.insert(SPEC_LABEL.into(), "{not json".into());
    let error = inspect::status("x", &bad, NODE).unwrap_err().to_string();
    assert!(
        error.starts_with("container x: label io.c4m.spec: not a container spec"),
        "{error}"
    );
    bad.config = None;
    let error = inspect::status("x", &bad, NODE).unwrap_err().to_string();
    assert_eq!(error, "container x: the container has no io.c4m.spec label");
}

#[tokio::test]
async fn a_daemon_that_does_not_answer_is_an_error_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let error = DockerRuntime::connect(&missing).await.unwrap_err();
    assert!(
        matches!(&error, Error::DaemonUnreachable { socket, .. } if *socket == missing),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with(&format!(
            "the docker daemon at {} is unreachable: ",
            missing.display()
        )),
        "{error}"
    );
    // A socket file nobody listens on any more.
    let dead = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    let error = DockerRuntime::connect(&dead).await.unwrap_err();
    assert!(
        matches!(&error, Error::DaemonUnreachable { socket, .. } if *socket == dead),
        "{error:?}"
    );
}

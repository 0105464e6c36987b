//! End-to-end tests of the spine: real control plane and agent processes on
//! loopback, driven through the `c4m` CLI and checked as a user would.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

fn web_deployment(replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          command: ["c4m-demo", "--name", "web"]
          ports: [{{name: http, containerPort: 8080}}]
          resources: {{requests: {{cpu: "1", memory: 64Mi}}}}
          readinessProbe:
            httpGet: {{path: /healthz, port: http}}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

fn resolve(dns_port: u16, name: &str) -> (Vec<String>, Vec<(String, u16)>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let resolver = c4m_mesh::cluster_resolver(([127, 0, 0, 1], dns_port).into());
        let a = resolver
            .ipv4_lookup(name)
            .await
            .map(|r| {
                r.answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        hickory_resolver::proto::rr::RData::A(a) => Some(a.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let srv = resolver
            .srv_lookup(format!("_http._tcp.{name}"))
            .await
            .map(|r| {
                r.answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        hickory_resolver::proto::rr::RData::SRV(s) => {
                            Some((s.target.to_string(), s.port))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        (a, srv)
    })
}

/// Two agents of 2 CPUs / 1 GiB (one `c4m-agent`, one `c4m agent`: the
/// same agent); 4 replicas of 1 CPU land 2 and 2, the registry and DNS
/// give 4 endpoints that answer, a fifth replica stays Pending with a
/// reason, and a killed instance process is restarted.
#[test]
fn deployment_spreads_by_fit_is_discoverable_and_restarts() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "2", "1Gi");
    let mut subcommand = Command::new(C4M);
    subcommand.arg("agent");
    cluster.start_agent_from(subcommand, "node-b", "2", "1Gi", &[]);

    let applied = cluster.apply(&web_deployment(4));
    assert!(applied.contains("deployment/web created"), "{applied}");
    let pods = cluster.wait_ready("app=web", 4, MINUTE);
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for pod in &pods {
        *per_node
            .entry(pod["spec"]["nodeName"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2],
        "{per_node:?}"
    );

    // The registry over HTTP: 4 endpoints, each answering.
    let registry = wait_for("4 endpoints in the registry", MINUTE, || {
        let (code, body) = http_get(
            &format!("127.0.0.1:{}", cluster.api),
            "/c4m/v1/namespaces/default/services/web/endpoints",
        )?;
        // The registry needs credentials: an anonymous request is refused.
        assert_eq!(code, 401, "{body}");
        let output = cluster.c4m(&["get", "endpoints", "web", "-o", "json"]);
        let endpoints: Value = serde_json::from_slice(&output.stdout).ok()?;
        let addresses: Vec<String> = endpoints["subsets"]
            .as_array()?
            .iter()
            .flat_map(|s| {
                let port = s["ports"][0]["port"].clone();
                s["addresses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |a| format!("{}:{}", a["ip"].as_str().unwrap(), port))
            })
            .collect();
        (addresses.len() == 4).then_some(addresses)
    });
    for addr in &registry {
        let (code, body) = http_get(addr, "/").expect("endpoint answers");
        assert_eq!(code, 200);
        assert!(body.starts_with("web ("), "{body}");
    }

    // DNS of a headless Service: its endpoints' A records and SRV records
    // for the named port.
    let (a, srv) = wait_for("DNS to give 4 endpoints", MINUTE, || {
        let (a, srv) = resolve(cluster.dns, "web.default.svc.c4m.");
        (srv.len() == 4).then_some((a, srv))
    });
    assert_eq!(a, vec!["127.0.0.1".to_string()]);
    let mut srv_ports: Vec<String> = srv
        .iter()
        .map(|(_, port)| format!("127.0.0.1:{port}"))
        .collect();
    srv_ports.sort();
    let mut registry_sorted = registry.clone();
    registry_sorted.sort();
    assert_eq!(srv_ports, registry_sorted);

    // A fifth replica fits nowhere: Pending, with a reason describe shows.
    cluster.apply(&web_deployment(5));
    let pending = wait_for("a Pending instance with a reason", MINUTE, || {
        cluster.instances_of("app=web").into_iter().find(|p| {
            p["spec"]["nodeName"].is_null()
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                })
        })
    });
    let name = pending["metadata"]["name"].as_str().unwrap();
    let described = cluster.ok(&["describe", "instance", name]);
    assert!(
        described.contains("0/2 nodes are available: 2 node(s) had insufficient cpu"),
        "{described}"
    );
    let status = cluster.ok(&["status", name]);
    assert!(
        status.contains("Pending") && status.contains("insufficient cpu"),
        "{status}"
    );

    // Kill one instance's process: the agent restarts it.
    let victim = &pods[0];
    let victim_name = victim["metadata"]["name"].as_str().unwrap();
    let addr = instance_addr(victim);
    let pid = demo_pid(&addr).expect("the instance reports its pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_for(
        "the killed instance to be restarted and ready",
        MINUTE,
        || {
            let pod: Value =
                serde_json::from_str(&cluster.ok(&["get", "instance", victim_name, "-o", "json"]))
                    .ok()?;
            (restarts(&pod) >= 1 && is_ready(&pod)).then_some(pod)
        },
    );
    let new_pid = wait_for("the restarted instance to answer", MINUTE, || {
        demo_pid(&instance_addr(&restarted))
    });
    assert_ne!(new_pid, pid);
    assert_eq!(
        instance_addr(&restarted),
        addr,
        "a restarted instance keeps its host port"
    );
    let table = cluster.ok(&["get", "instances"]);
    assert!(
        table.contains("NAME") && table.contains("RESTARTS") && table.contains(victim_name),
        "{table}"
    );
}

/// An agent that dies: its node turns NotReady and its instances move to
/// the node where they fit.
#[test]
fn instances_move_off_a_dead_node() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "2", "1Gi");
    cluster.start_agent("node-b", "2", "1Gi");
    cluster.apply(
        r#"
apiVersion: c4m.io/v1
kind: Microservice
metadata: {name: api}
spec:
  replicas: 2
  command: ["c4m-demo", "--name", "api"]
  ports: [{name: http, containerPort: 8080}]
  resources: {requests: {cpu: 500m, memory: 64Mi}}
"#,
    );
    let pods = cluster.wait_ready("c4m.io/microservice=api", 2, MINUTE);
    // Best fit packs both onto one node: that node's agent dies.
    let doomed = pods[0]["spec"]["nodeName"].as_str().unwrap().to_string();
    assert!(
        pods.iter()
            .all(|p| p["spec"]["nodeName"] == doomed.as_str()),
        "best fit packs"
    );
    let survivor = if doomed == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    cluster.kill_agent(&doomed);
    wait_for("the dead node to turn NotReady", MINUTE, || {
        (!cluster.node_ready(&doomed)).then_some(())
    });
    let nodes = cluster.ok(&["get", "nodes"]);
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with(&doomed) && l.contains("NotReady")),
        "{nodes}"
    );
    let moved = wait_for("instances to run on the surviving node", MINUTE, || {
        let pods = cluster.instances_of("c4m.io/microservice=api");
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| is_ready(p) && p["spec"]["nodeName"] == survivor))
        .then_some(pods)
    });
    for pod in &moved {
        // Without a readiness probe, Ready means started, not yet listening.
        wait_for("the moved instance to answer", MINUTE, || {
            demo_pid(&instance_addr(pod))
        });
    }
    // The dead agent's instances keep running as orphans; clean them up.
    kill_instances(&cluster.agent_dir(&doomed));
}

/// kill -9 of the control plane in the middle of 200 applies loses no
/// acknowledged object and does not restart running instances.
#[test]
fn control_plane_crash_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "4", "2Gi");
    cluster.apply(
        r#"
apiVersion: c4m.io/v1
kind: Microservice
metadata: {name: steady}
spec:
  command: ["c4m-demo", "--name", "steady"]
  ports: [{name: http, containerPort: 8080}]
  readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1}
"#,
    );
    let before = cluster
        .wait_ready("c4m.io/microservice=steady", 1, MINUTE)
        .remove(0);
    let pid_before = demo_pid(&instance_addr(&before)).unwrap();

    let client = cluster.client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        if i == 100 {
            cluster.kill_control();
        }
        let name = format!("cm-{i}");
        let request = c4m_api::ApplyRequest {
            objects: vec![c4m_api::ApplyObject {
                source: "test".into(),
                document: 1,
                object: serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": i.to_string()}}),
            }],
            default_namespace: None,
        };
        match runtime.block_on(client.apply(&request)) {
            Ok(_) => acknowledged.push(name),
            Err(_) => refused += 1,
        }
        if i == 150 {
            cluster.start_control();
        }
    }
    assert!(
        acknowledged.len() >= 140 && refused > 0,
        "acknowledged {} refused {refused}",
        acknowledged.len()
    );
    let stored: Vec<String> = cluster
        .list("configmaps")
        .iter()
        .map(|cm| cm["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for name in &acknowledged {
        assert!(stored.contains(name), "acknowledged {name} was lost");
    }

    // The instance kept running through the crash: same pid, no restart.
    let after = wait_for("the instance to be reported again", MINUTE, || {
        let pods = cluster.instances_of("c4m.io/microservice=steady");
        (pods.len() == 1 && is_ready(&pods[0])).then(|| pods[0].clone())
    });
    assert_eq!(after["metadata"]["name"], before["metadata"]["name"]);
    assert_eq!(restarts(&after), 0);
    assert_eq!(demo_pid(&instance_addr(&after)), Some(pid_before));
}

/// A manifest with one bad document applies nothing, and the error names
/// the file, the document and the field.
#[test]
fn a_bad_document_applies_nothing() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: first}
data: {a: "1"}
---
apiVersion: c4m.io/v1
kind: Microservice
metadata: {name: broken}
spec:
  command: ["sleep", "60"]
  resources: {limits: {memory: 12Q}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: third}
"#,
    )
    .unwrap();
    let output = cluster.c4m(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(
        stderr.contains("app.yaml")
            && stderr.contains("document 2")
            && stderr.contains("spec.resources.limits.memory"),
        "{stderr}"
    );
    assert!(
        cluster.list("configmaps").is_empty(),
        "nothing may be written"
    );

    // The server enforces the same, for clients that skip the CLI's checks.
    let client = cluster.client();
    let objects =
        c4m_core::parse_documents("app.yaml", &std::fs::read_to_string(&file).unwrap()).unwrap();
    let request = c4m_api::ApplyRequest {
        objects: objects
            .into_iter()
            .map(|d| c4m_api::ApplyObject {
                source: d.source,
                document: d.index,
                object: d.value,
            })
            .collect(),
        default_namespace: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime.block_on(client.apply(&request)).unwrap_err();
    assert_eq!(error.code(), Some(422), "{error}");
    assert!(error.to_string().contains("document 2"), "{error}");
    assert!(
        cluster.list("configmaps").is_empty(),
        "nothing may be written"
    );

    // Unsupported fields are accepted with a warning that names them.
    let output = cluster.c4m_with_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: with-volumes}
spec:
  replicas: 0
  selector: {matchLabels: {app: v}}
  template:
    metadata: {labels: {app: v}}
    spec:
      volumes: [{name: data, iscsi: {targetPortal: "10.0.0.1:3260", iqn: "iqn.2001-04.com.example:disk", lun: 0}}]
      containers: [{name: c, command: ["sleep", "1"]}]
"#,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("spec.template.spec.volumes[0].iscsi"),
        "{stderr}"
    );
}

/// An agent restart re-adopts running instances: same processes, no
/// duplicates, no restarts.
#[test]
fn agent_restart_adopts_instances() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "2", "1Gi");
    cluster.apply(
        r#"
apiVersion: c4m.io/v1
kind: Microservice
metadata: {name: kept}
spec:
  replicas: 2
  command: ["c4m-demo", "--name", "kept"]
  ports: [{name: http, containerPort: 8080}]
"#,
    );
    let before = cluster.wait_ready("c4m.io/microservice=kept", 2, MINUTE);
    // Ready (it has no readiness probe) once its process runs, which may be
    // before it listens.
    let pids: Vec<i32> = before
        .iter()
        .map(|p| wait_for("the demo to answer", MINUTE, || demo_pid(&instance_addr(p))))
        .collect();
    cluster.kill_agent("node-a");
    cluster.start_agent("node-a", "2", "1Gi");
    // Give the new agent time to act on its assignments.
    std::thread::sleep(Duration::from_secs(3));
    let after = cluster.wait_ready("c4m.io/microservice=kept", 2, MINUTE);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old["metadata"]["name"], new["metadata"]["name"]);
        assert_eq!(restarts(new), 0, "adopted, not restarted");
    }
    let pids_after: Vec<i32> = after
        .iter()
        .map(|p| demo_pid(&instance_addr(p)).unwrap())
        .collect();
    assert_eq!(pids, pids_after);
    // No duplicate processes: exactly one c4m-demo per instance on the node.
    let demos = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("environ")).ok())
        .filter(|env| {
            env.split(|b| *b == 0)
                .any(|kv| kv.starts_with(b"C4M_INSTANCE=kept-"))
        })
        .count();
    assert_eq!(demos, 2);
}

/// SIGTERM stops the control plane and the agent cleanly; the agent's
/// instances keep running for the next agent to adopt.
#[test]
fn daemons_shut_down_gracefully() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "1", "512Mi");
    cluster.ok(&[
        "run", "--name", "sleeper", "--memory", "64Mi", "--", "sleep", "300",
    ]);
    let pod = cluster
        .wait_ready("c4m.io/microservice=sleeper", 1, MINUTE)
        .remove(0);
    let status = cluster.signal_agent("node-a", nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "agent exit: {status:?}");
    assert!(cluster.log_text("agent-node-a").contains("agent stopped"));
    let status = cluster.signal_control(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "control plane exit: {status:?}");
    assert!(
        cluster
            .log_text("control")
            .contains("control plane stopped")
    );
    // The instance survived both.
    let name = pod["metadata"]["name"].as_str().unwrap();
    let alive = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("environ")).ok())
        .any(|env| {
            env.split(|b| *b == 0)
                .any(|kv| kv == format!("C4M_INSTANCE={name}").as_bytes())
        });
    assert!(alive, "the instance must outlive the agent");
}

/// `c4m run` with env, working dir and user; `logs`, `status`, `metrics`.
#[test]
#[ignore = "needs root: cgroups enforce the CPU limit it checks"]
fn run_logs_status_metrics() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "2", "1Gi");
    let created = cluster.ok(&[
        "run",
        "--name",
        "hello",
        "--env",
        "GREETING=bonjour",
        "--dir",
        "/tmp",
        "--user",
        "nobody",
        "--memory",
        "64Mi",
        "--cpu",
        "500m",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING from $(pwd) as $(id -u)\"; while :; do :; done",
    ]);
    assert_eq!(created.trim(), "microservice/hello created");
    let pod = cluster
        .wait_ready("c4m.io/microservice=hello", 1, MINUTE)
        .remove(0);
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let logs = wait_for("the instance's output", MINUTE, || {
        let text = cluster.ok(&["logs", &name]);
        text.contains("bonjour").then_some(text)
    });
    assert_eq!(logs.trim(), "bonjour from /tmp as 65534");
    let status = cluster.ok(&["status", &name]);
    assert!(
        status.contains("Running") && status.contains("1/1") && status.contains("node-a"),
        "{status}"
    );
    // The busy loop is capped at 500m by its CPU limit.
    let metrics = wait_for("CPU usage to be reported", MINUTE, || {
        let output = cluster.c4m(&["metrics", &name]);
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let cpu: u64 = text
            .lines()
            .nth(1)?
            .split_whitespace()
            .nth(1)?
            .trim_end_matches('m')
            .parse()
            .ok()?;
        (cpu >= 200).then_some((text, cpu))
    });
    assert!(metrics.1 <= 650, "CPU limit not enforced: {}", metrics.0);
    assert!(
        metrics.0.contains("Ki") || metrics.0.contains("Mi"),
        "{}",
        metrics.0
    );
    // An unknown instance: one clear error line, non-zero exit.
    let output = cluster.c4m(&["status", "nope"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not found"));
    // A bare Pod that runs to completion with restartPolicy Never: Succeeded, not restarted.
    cluster.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers: [{name: once, command: ["sh", "-c", "echo done"]}]
"#,
    );
    let once = wait_for("the bare pod to succeed", MINUTE, || {
        let pod: Value =
            serde_json::from_str(&cluster.ok(&["get", "pod", "once", "-o", "json"])).ok()?;
        (pod["status"]["phase"] == "Succeeded").then_some(pod)
    });
    assert_eq!(restarts(&once), 0);
    assert_eq!(
        once["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );

    // Deleting the microservice removes its instance.
    cluster.ok(&["delete", "microservice", "hello"]);
    cluster.wait_gone("c4m.io/microservice=hello", MINUTE);
}

/// The HTTP API's Kubernetes semantics: create, read, compare-and-swap
/// update, label-selected list, watch from a resourceVersion, delete, and
/// Status errors with the right codes.
#[test]
fn api_crud_watch_and_conflicts() {
    use futures::StreamExt;
    let cluster = Cluster::start();
    let client = cluster.client();
    let configmaps = c4m_core::ResourceKind::from_name("configmaps").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listed = client.list(configmaps, Some("default"), None).await.unwrap();
        let from = listed["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        let mut events = Box::pin(client.watch(configmaps, Some("default"), &from).await.unwrap());

        let object = serde_json::json!({"metadata": {"name": "settings", "labels": {"tier": "web"}}, "data": {"a": "1"}});
        let created = client.create(configmaps, Some("default"), &object).await.unwrap();
        assert_eq!(created["kind"], "ConfigMap");
        assert!(created["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
        assert_eq!(client.create(configmaps, Some("default"), &object).await.unwrap_err().code(), Some(409));

        let mut changed = created.clone();
        changed["data"]["a"] = serde_json::json!("2");
        let updated = client.replace(configmaps, Some("default"), "settings", &changed).await.unwrap();
        assert_ne!(updated["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
        assert_eq!(updated["metadata"]["generation"], 2);
        // The same stale resourceVersion again: 409 Conflict, nothing written.
        let stale = client.replace(configmaps, Some("default"), "settings", &changed).await.unwrap_err();
        assert_eq!(stale.code(), Some(409), "{stale}");

        let selected = client.list(configmaps, Some("default"), Some("tier=web")).await.unwrap();
        assert_eq!(selected["kind"], "ConfigMapList");
        assert_eq!(selected["items"].as_array().unwrap().len(), 1);
        let none = client.list(configmaps, Some("default"), Some("tier in (db)")).await.unwrap();
        assert!(none["items"].as_array().unwrap().is_empty());

        client.delete(configmaps, Some("default"), "settings").await.unwrap();
        assert_eq!(client.get(configmaps, Some("default"), "settings").await.unwrap_err().code(), Some(404));

        let mut seen = Vec::new();
        while seen.len() < 3 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap().unwrap();
            seen.push((event.event_type, event.object["data"]["a"].as_str().unwrap_or_default().to_string()));
        }
        assert_eq!(
            seen,
            [("ADDED".into(), "1".into()), ("MODIFIED".into(), "2".into()), ("DELETED".into(), "2".into())]
        );

        // Invalid objects: 422 naming the field; unknown kinds: 404.
        let invalid = serde_json::json!({"metadata": {"name": "Bad_Name"}});
        let error = client.create(configmaps, Some("default"), &invalid).await.unwrap_err();
        assert_eq!(error.code(), Some(422), "{error}");
        assert!(error.to_string().contains("metadata.name"), "{error}");
        let missing = client.get_path::<serde_json::Value>("/api/v1/namespaces/default/widgets").await.unwrap_err();
        assert_eq!(missing.code(), Some(404));
        // A namespace that does not exist.
        let error = client.create(configmaps, Some("nowhere"), &object).await.unwrap_err();
        assert_eq!(error.code(), Some(404), "{error}");
    });
}

/// A failing liveness probe gets the instance restarted, with backoff.
#[test]
fn failing_liveness_probe_restarts_the_instance() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "2", "1Gi");
    cluster.apply(
        r#"
apiVersion: c4m.io/v1
kind: Microservice
metadata: {name: sick}
spec:
  command: ["sleep", "300"]
  livenessProbe:
    exec: {command: ["false"]}
    periodSeconds: 1
    failureThreshold: 2
"#,
    );
    let pod = wait_for("two liveness restarts", MINUTE, || {
        let pods = cluster.instances_of("c4m.io/microservice=sick");
        pods.into_iter().find(|p| restarts(p) >= 2)
    });
    let name = pod["metadata"]["name"].as_str().unwrap();
    let described = cluster.ok(&["describe", "instance", name]);
    assert!(described.contains("Last exit"), "{described}");
    // Backoff: the restarts are spaced, not immediate.
    std::thread::sleep(Duration::from_secs(2));
    let later: Value =
        serde_json::from_str(&cluster.ok(&["get", "instance", name, "-o", "json"])).unwrap();
    assert!(
        restarts(&later) < 6,
        "restarting without backoff: {}",
        restarts(&later)
    );
}

/// The two PriorityClasses the preemption tests use: `batch` (0) and `vip`
/// (1000), and a `batch` Microservice of two 1-CPU replicas.
const BATCH: &str = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: batch}
value: 0
description: work that can wait
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: vip}
value: 1000
---
apiVersion: c4m.io/v1
kind: Microservice
metadata: {name: batch}
spec:
  replicas: 2
  priorityClassName: batch
  command: ["sleep", "300"]
  resources: {requests: {cpu: "1"}}
"#;

/// A 1-CPU `vip` Microservice of the `vip` class.
const VIP: &str = r#"
apiVersion: c4m.io/v1
kind: Microservice
metadata: {name: vip}
spec:
  priorityClassName: vip
  command: ["sleep", "300"]
  resources: {requests: {cpu: "1"}}
"#;

/// On a full node, an instance of a higher PriorityClass preempts one of a
/// lower class, which goes back to Pending (it fits nowhere else).
#[test]
fn priority_preempts_lower_priority_instances() {
    let mut cluster = Cluster::start();
    cluster.start_agent("node-a", "2", "1Gi");
    cluster.apply(BATCH);
    let classes = cluster.ok(&["get", "pc"]);
    assert!(
        classes.starts_with("NAME")
            && classes.contains("VALUE")
            && classes.contains("GLOBAL-DEFAULT"),
        "{classes}"
    );
    assert!(
        classes
            .lines()
            .any(|l| l.starts_with("vip") && l.contains("1000") && l.contains("false")),
        "{classes}"
    );
    cluster.wait_ready("c4m.io/microservice=batch", 2, MINUTE);
    cluster.apply(VIP);
    let vip = cluster.wait_ready("c4m.io/microservice=vip", 1, MINUTE);
    // Admission stamped the class's priority and preemption policy.
    assert_eq!(vip[0]["spec"]["priority"], 1000);
    assert_eq!(vip[0]["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    let (running, pending) = wait_for("one batch instance preempted and Pending", MINUTE, || {
        let pods = cluster.instances_of("c4m.io/microservice=batch");
        let running = pods.iter().filter(|p| is_ready(p)).count();
        let pending: Vec<Value> = pods
            .into_iter()
            .filter(|p| p["spec"]["nodeName"].is_null())
            .collect();
        (running == 1 && pending.len() == 1).then_some((running, pending))
    });
    assert_eq!(running, 1);
    let name = pending[0]["metadata"]["name"].as_str().unwrap();
    let described = cluster.ok(&["describe", "instance", name]);
    assert!(described.contains("insufficient cpu"), "{described}");
}

/// A PodDisruptionBudget that allows no disruption keeps a higher-priority
/// instance Pending rather than let it preempt; once the budget allows one,
/// the preemption happens. The budget's status follows the instances.
#[test]
fn a_disruption_budget_stops_a_preemption() {
    let mut cluster = Cluster::start();
    cluster.start_hollow_agents("node", 1, "2", "1Gi");
    let budget = |max_unavailable: u32| {
        format!(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: batch}}\nspec:\n  maxUnavailable: {max_unavailable}\n  selector: {{matchLabels: {{c4m.io/microservice: batch}}}}\n"
        )
    };
    cluster.apply(&format!("{BATCH}---\n{}", budget(0)));
    let batch = cluster.wait_ready("c4m.io/microservice=batch", 2, MINUTE);
    let status = wait_for("the budget's status", MINUTE, || {
        let pdb: Value =
            serde_json::from_str(&cluster.ok(&["get", "pdb", "batch", "-o", "json"])).ok()?;
        (pdb["status"]["currentHealthy"] == 2).then(|| pdb["status"].clone())
    });
    assert_eq!(
        (
            &status["expectedPods"],
            &status["desiredHealthy"],
            &status["disruptionsAllowed"],
            &status["observedGeneration"]
        ),
        (&json!(2), &json!(2), &json!(0), &json!(1)),
        "{status}"
    );
    let table = cluster.ok(&["get", "pdb"]);
    assert!(table.contains("ALLOWED-DISRUPTIONS"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(4).eq(["batch", "N/A", "0", "0"])),
        "{table}"
    );

    cluster.apply(VIP);
    let reason = wait_for("the vip instance to be unschedulable", MINUTE, || {
        let pods = cluster.instances_of("c4m.io/microservice=vip");
        let scheduled = pods.first()?["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled")?
            .clone();
        (scheduled["reason"] == "Unschedulable").then_some(scheduled)
    });
    assert!(
        reason["message"]
            .as_str()
            .unwrap()
            .contains("insufficient cpu"),
        "{reason}"
    );
    // A few scheduling cycles later, nothing was preempted.
    std::thread::sleep(Duration::from_secs(3));
    let names = |pods: &[Value]| -> Vec<String> {
        let mut names: Vec<String> = pods
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let still = cluster.wait_ready("c4m.io/microservice=batch", 2, MINUTE);
    assert_eq!(names(&still), names(&batch));
    let vip = cluster.instances_of("c4m.io/microservice=vip");
    assert!(vip[0]["spec"]["nodeName"].is_null(), "{:?}", vip[0]);
    assert!(
        vip[0]["status"]["nominatedNodeName"].is_null(),
        "{:?}",
        vip[0]
    );

    // One disruption allowed: the vip instance preempts one batch instance.
    cluster.apply(&budget(1));
    cluster.wait_ready("c4m.io/microservice=vip", 1, MINUTE);
    wait_for("one batch instance preempted", MINUTE, || {
        let pods = cluster.instances_of("c4m.io/microservice=batch");
        (pods.iter().filter(|p| is_ready(p)).count() == 1).then_some(())
    });
}

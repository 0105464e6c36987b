//! A StatefulSet's pods return to the node holding their local volume
//! (issue 16: "`web-0` keeps its volume when rescheduled on its node"):
//! two agents on simulated hosts, `oci` pods each writing to a claim of
//! the default `local` class (`WaitForFirstConsumer`), deleted again and
//! again; with its node cordoned a pod waits, saying why, rather than
//! moving to the free node, which has no copy of its data.

use std::time::Duration;

use c4m_storage::testing::{CleanupGuard, LOCAL_PROGRAMS, require_root_and};
use c4m_testkit::Hosts;
use serde_json::{Value, json};

use crate::common::kubectl::Kubectl;
use crate::common::oci::require_oci;
use crate::common::volumes::{agent_pool, assert_agent_leaked_nothing, json_files, volume_record};
use crate::common::{Cluster, import_busybox, name_of, node_of, start_named_host_agent, wait_for};
use crate::statefulsets::{apply, bound_volume, pods_of, rollout, wait_pods};

const MINUTE: Duration = Duration::from_secs(60);
/// The simulated hosts' subnet: the control plane at .1, the nodes at .11
/// and .12.
const UNDERLAY: [u8; 3] = [10, 99, 246];
/// The instance network; each node serves a /24 of it.
const VPC: &str = "10.99.96.0/20";
const NODES: [&str; 2] = ["node-a", "node-b"];

/// A headless Service and a StatefulSet `web` of two, one per node if it
/// can (a preferred anti-affinity: the other node stays a candidate for
/// the scheduler, so only the volume can keep a pod off it). Each start
/// of a pod appends `<pod> on <node>` to its claim's `/data/log` and
/// fsyncs it; the pod is Ready once it has.
const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {matchLabels: {app: web}}
      containers:
      - name: main
        image: bb:1
        command: [sh, -c, 'echo "$POD on $NODE" >> /data/log && sync /data/log && touch /written && exec sleep 3600']
        env:
        - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        volumeMounts: [{name: data, mountPath: /data}]
        readinessProbe:
          exec: {command: [test, -f, /written]}
          periodSeconds: 1
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
"#;

/// The lines of `/data/log` in pod `pod`.
fn log_of(kubectl: &Kubectl, pod: &str) -> Vec<String> {
    kubectl
        .ok(&["exec", pod, "--", "cat", "/data/log"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The node PersistentVolume `volume` is pinned to; fails unless its node
/// affinity is the one term on the node's hostname a local volume gets.
fn pinned_node(kubectl: &Kubectl, volume: &str) -> String {
    let pv = kubectl.json(&["get", "pv", volume]);
    let terms = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"];
    let node = terms[0]["matchExpressions"][0]["values"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{volume} has no node affinity: {pv}"));
    let expected = json!([{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]);
    assert_eq!(terms, &expected, "{pv}");
    node.to_string()
}

fn uid_of(pod: &Value) -> &Value {
    &pod["metadata"]["uid"]
}

/// The pod's `PodScheduled` condition, if it has one.
fn scheduled_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
}

#[test]
#[ignore = "needs root + runc + conmon + losetup + e2fsprogs + nftables + nsenter + kubectl: simulated hosts"]
fn statefulset_pods_return_to_the_node_holding_their_volume_and_wait_while_it_is_cordoned() {
    require_oci();
    require_root_and(LOCAL_PROGRAMS).unwrap();
    c4m_testkit::require_commands(&[
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("nft", "nftables"),
    ]);
    // Declared first, dropped last: after the cluster's processes are gone.
    let hosts = Hosts::create(UNDERLAY, NODES.len());
    let mut cluster = Cluster::start_listening_on(&hosts.gateway().to_string());
    let _cleanup = CleanupGuard::new([cluster.dir.path().to_path_buf()]);
    for (index, node) in (1..).zip(NODES) {
        start_named_host_agent(
            &mut cluster,
            &hosts,
            index,
            node,
            ["2", "2Gi"],
            VPC,
            &["--default-driver", "oci"],
        );
    }
    import_busybox(&cluster, "bb", &NODES);
    let kubectl = Kubectl::for_cluster(&cluster);
    apply(&cluster, &kubectl, "web", WEB);
    rollout(&kubectl, "web", "120s");
    let names = ["web-0", "web-1"];
    let mut pods = wait_pods(&kubectl, "web", &names);
    let homes: Vec<String> = pods.iter().map(node_of).collect();
    let mut spread = homes.clone();
    spread.sort();
    assert_eq!(spread, NODES, "one pod per node");

    // Each claim's volume was provisioned on its pod's node: its PV is
    // pinned there, and only that node's pool holds it.
    let volumes: Vec<String> = names
        .iter()
        .map(|pod| bound_volume(&kubectl, &format!("data-{pod}")))
        .collect();
    for ((pod, volume), home) in names.iter().zip(&volumes).zip(&homes) {
        assert_eq!(&pinned_node(&kubectl, volume), home, "{pod}'s volume");
        for node in NODES {
            assert_eq!(
                volume_record(&cluster, node, volume).is_some(),
                node == home,
                "{pod}'s volume {volume} in {node}'s pool"
            );
        }
    }
    let written: Vec<String> = names
        .iter()
        .zip(&homes)
        .map(|(pod, home)| format!("{pod} on {home}"))
        .collect();
    for (pod, line) in names.iter().zip(&written) {
        assert_eq!(log_of(&kubectl, pod), std::slice::from_ref(line));
    }

    // Deleted, three times over: each comes back under its name, on the
    // node of its volume, and finds every line its predecessors wrote.
    for round in 1..=3 {
        let before: Vec<Value> = pods.iter().map(|p| uid_of(p).clone()).collect();
        kubectl.ok(&["delete", "pod", "web-0", "web-1"]);
        pods = wait_for(
            &format!("both pods back (round {round})"),
            2 * MINUTE,
            || {
                let pods = wait_pods(&kubectl, "web", &names);
                pods.iter()
                    .zip(&before)
                    .all(|(pod, uid)| uid_of(pod) != uid)
                    .then_some(pods)
            },
        );
        for (((pod, home), volume), line) in pods.iter().zip(&homes).zip(&volumes).zip(&written) {
            let name = name_of(pod);
            assert_eq!(&node_of(pod), home, "{name} in round {round}");
            assert_eq!(&pinned_node(&kubectl, volume), home);
            assert_eq!(&bound_volume(&kubectl, &format!("data-{name}")), volume);
            assert_eq!(
                log_of(&kubectl, &name),
                vec![line.clone(); round + 1],
                "{name}'s log in round {round}"
            );
        }
    }

    // web-0's node cordoned, web-0 deleted: the other node could take it
    // but for its volume, so it waits, and says why.
    let (home, other) = (&homes[0], &homes[1]);
    let cordoned = kubectl.ok(&["cordon", home]);
    assert_eq!(cordoned.trim(), format!("node/{home} cordoned"));
    assert_eq!(
        kubectl.json(&["get", "node", home])["spec"]["unschedulable"],
        true
    );
    let before = uid_of(&pods[0]).clone();
    kubectl.ok(&["delete", "pod", "web-0"]);
    let pending = wait_for("web-0 back and unschedulable", MINUTE, || {
        let pod = pods_of(&kubectl, "web")
            .into_iter()
            .find(|p| name_of(p) == "web-0" && uid_of(p) != &before)?;
        (scheduled_condition(&pod)?["reason"] == "Unschedulable").then_some(pod)
    });
    let expected = "0/2 nodes are available: \
        1 node(s) had untolerated taint {node.kubernetes.io/unschedulable: }, \
        1 node(s) had volume node affinity conflict.";
    let condition = scheduled_condition(&pending).unwrap();
    assert_eq!(condition["status"], "False", "{pending}");
    assert_eq!(condition["message"], expected, "{pending}");
    let described = kubectl.ok(&["describe", "pod", "web-0"]);
    assert!(
        described.contains("FailedScheduling") && described.contains(expected),
        "{described}"
    );
    // Refused, it stayed unbound; web-1 runs on, on the other node.
    let pods_now = pods_of(&kubectl, "web");
    let web0 = pods_now.iter().find(|p| name_of(p) == "web-0").unwrap();
    assert_eq!(uid_of(web0), uid_of(&pending));
    assert_eq!(node_of(web0), "", "web-0 must wait for {home}: {web0}");
    assert_eq!(web0["status"]["phase"], "Pending");
    let web1 = pods_now.iter().find(|p| name_of(p) == "web-1").unwrap();
    assert_eq!(&node_of(web1), other);

    // Uncordoned, its node takes it back, with its data.
    let uncordoned = kubectl.ok(&["uncordon", home]);
    assert_eq!(uncordoned.trim(), format!("node/{home} uncordoned"));
    let pods = wait_pods(&kubectl, "web", &names);
    assert_eq!(uid_of(&pods[0]), uid_of(&pending));
    assert_eq!(&node_of(&pods[0]), home);
    assert_eq!(log_of(&kubectl, "web-0"), vec![written[0].clone(); 5]);

    // The set and its claims deleted: each node deletes its volume and
    // leaves no loop device, mount or record behind.
    kubectl.ok(&["delete", "sts", "web"]);
    wait_for("web's pods gone", 2 * MINUTE, || {
        pods_of(&kubectl, "web").is_empty().then_some(())
    });
    kubectl.ok(&["delete", "pvc", "data-web-0", "data-web-1", "--wait=false"]);
    wait_for("the volumes deleted on their nodes", 2 * MINUTE, || {
        let pvs = kubectl.json(&["get", "pv"]);
        let records_left = NODES.iter().any(|node| {
            !json_files(&agent_pool(&cluster, node).join("records/volumes")).is_empty()
        });
        (pvs["items"].as_array().is_some_and(Vec::is_empty) && !records_left).then_some(())
    });
    for node in NODES {
        assert_agent_leaked_nothing(&cluster, node, "after the set and its claims went");
    }
}

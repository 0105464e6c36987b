//! Scheduler throughput: 10,000 best-fit placements into clusters of 100,
//! 1,000 and 5,000 nodes, and 10,000 placements with a required node
//! affinity into 5,000 nodes (a fresh snapshot per iteration, built outside
//! the timed part). Criterion reports placements per second as elements/s.
//!
//! The `preemption` group fills 5,000 nodes with recorded low-priority
//! instances (priorities 0 to 2), then preempts for 1,000 high-priority
//! instances that fit nowhere: each preemption is found, its victims
//! released and the preemptor recorded on its node. Elements/s are
//! preemptions per second.
//!
//! After kube-scheduler's scheduler_perf: `pod_anti_affinity/5000_nodes`
//! places 4,000 instances (on top of 1,000 placed outside the timed part)
//! in 20 groups, each with a required anti-affinity on the hostname against
//! its own group; `daemonset/15000_nodes` places one instance per node,
//! pinned by a required node affinity on `metadata.name` (even nodes) or on
//! the hostname label (odd nodes). Every node carries its own
//! `kubernetes.io/hostname` label, as agents set it.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::Duration;

use c4m_sched::{
    ClusterSnapshot, HOSTNAME_LABEL, InstanceAffinityTerm, InstanceRequest, LabelSelector,
    NODE_NAME_FIELD, NodeInfo, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm,
    PlacedInstance, Resources,
};
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput};

const PLACEMENTS: usize = 10_000;
const MIB: u64 = 1 << 20;
const ZONES: [&str; 3] = ["a", "b", "c"];

/// The name of node `index`.
fn node_name(index: usize) -> String {
    format!("node-{index:05}")
}

/// Nodes of 32 CPUs / 128 GiB / 110 instances in three zones, each with its
/// own hostname label; every fourth has an SSD label and every fifth also
/// offers the `wasm` driver, which makes a dozen or so distinct shapes.
fn cluster(node_count: usize) -> ClusterSnapshot {
    let mut snapshot = ClusterSnapshot::new();
    for index in 0..node_count {
        let mut labels = BTreeMap::from([
            ("zone".to_owned(), ZONES[index % ZONES.len()].to_owned()),
            (HOSTNAME_LABEL.to_owned(), node_name(index)),
        ]);
        if index % 4 == 0 {
            labels.insert("disk".to_owned(), "ssd".to_owned());
        }
        let mut drivers = BTreeSet::from(["process".to_owned()]);
        if index % 5 == 0 {
            drivers.insert("wasm".to_owned());
        }
        snapshot.upsert_node(NodeInfo {
            name: node_name(index),
            allocatable: Resources {
                cpu_millis: 32_000,
                memory_bytes: 128 * 1024 * MIB,
                instances: 110,
                ..Resources::default()
            },
            labels,
            drivers,
            ready: true,
            ..NodeInfo::default()
        });
    }
    snapshot
}

/// Mixed small requests from a fixed pseudo-random sequence; one in five
/// selects a zone, one in eight an SSD, one in ten asks for `wasm`.
fn requests() -> Vec<InstanceRequest> {
    const CPU_MILLIS: [u64; 4] = [50, 100, 250, 500];
    const MEMORY_MIB: [u64; 5] = [64, 128, 256, 512, 1024];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PLACEMENTS)
        .map(|index| {
            // xorshift64: deterministic and dependency-free.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut node_selector = BTreeMap::new();
            if index % 5 == 0 {
                node_selector.insert(
                    "zone".to_owned(),
                    ZONES[(state >> 32) as usize % ZONES.len()].to_owned(),
                );
            }
            if index % 8 == 0 {
                node_selector.insert("disk".to_owned(), "ssd".to_owned());
            }
            InstanceRequest {
                cpu_millis: CPU_MILLIS[state as usize % CPU_MILLIS.len()],
                memory_bytes: MEMORY_MIB[(state >> 8) as usize % MEMORY_MIB.len()] * MIB,
                node_selector,
                driver: Some(if index % 10 == 0 { "wasm" } else { "process" }.to_owned()),
                ..InstanceRequest::default()
            }
        })
        .collect()
}

/// The requests of [`requests`] without selectors, each with a required node
/// affinity matching about half the nodes: zone `a`, or an SSD in zone `b`,
/// or (every third request) any zone but `c`.
fn affinity_requests() -> Vec<InstanceRequest> {
    requests()
        .into_iter()
        .enumerate()
        .map(|(index, request)| {
            let required_affinity = if index % 3 == 0 {
                vec![NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement::new(
                        "zone",
                        NodeSelectorOperator::NotIn,
                        ["c"],
                    )],
                    ..NodeSelectorTerm::default()
                }]
            } else {
                vec![
                    NodeSelectorTerm {
                        match_expressions: vec![NodeSelectorRequirement::new(
                            "zone",
                            NodeSelectorOperator::In,
                            ["a"],
                        )],
                        ..NodeSelectorTerm::default()
                    },
                    NodeSelectorTerm {
                        match_expressions: vec![
                            NodeSelectorRequirement::new("zone", NodeSelectorOperator::In, ["b"]),
                            NodeSelectorRequirement::new(
                                "disk",
                                NodeSelectorOperator::Exists,
                                [""; 0],
                            ),
                        ],
                        ..NodeSelectorTerm::default()
                    },
                ]
            };
            InstanceRequest {
                node_selector: BTreeMap::new(),
                driver: Some("process".to_owned()),
                required_affinity,
                ..request
            }
        })
        .collect()
}

/// Places every request in order; returns the snapshot (dropped outside the
/// timed part) and how many did not fit.
fn place_all(
    mut snapshot: ClusterSnapshot,
    requests: &[InstanceRequest],
) -> (ClusterSnapshot, usize) {
    let mut unschedulable = 0;
    for request in requests {
        if black_box(snapshot.place(black_box(request))).is_err() {
            unschedulable += 1;
        }
    }
    (snapshot, unschedulable)
}

/// A group of few, short samples counting `elements` per iteration.
fn short_group<'a>(
    c: &'a mut Criterion,
    name: &'static str,
    elements: usize,
) -> (BenchmarkGroup<'a, WallTime>, &'static str) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(elements as u64));
    (group, name)
}

/// Benches placing `requests` in order into a snapshot from `setup` (built
/// outside the timed part), saying first how many do not fit.
fn bench_place_all(
    (group, group_name): &mut (BenchmarkGroup<'_, WallTime>, &str),
    name: &str,
    setup: impl Fn() -> ClusterSnapshot,
    requests: &[InstanceRequest],
) {
    let (_, unschedulable) = place_all(setup(), requests);
    eprintln!(
        "{group_name}/{name}: {unschedulable} of {} requests unschedulable",
        requests.len()
    );
    group.bench_function(name, |b| {
        b.iter_batched(
            &setup,
            |snapshot| place_all(snapshot, requests),
            BatchSize::LargeInput,
        );
    });
}

fn placements(c: &mut Criterion) {
    let requests = requests();
    let mut group = short_group(c, "placements", PLACEMENTS);
    for node_count in [100, 1_000, 5_000] {
        let name = format!("{node_count}_nodes");
        bench_place_all(&mut group, &name, || cluster(node_count), &requests);
    }
    group.0.finish();
}

fn node_affinity(c: &mut Criterion) {
    const NODES: usize = 5_000;
    let mut group = short_group(c, "node_affinity", PLACEMENTS);
    let name = format!("{NODES}_nodes");
    bench_place_all(&mut group, &name, || cluster(NODES), &affinity_requests());
    group.0.finish();
}

const PREEMPTIONS: usize = 1_000;
/// Low-priority instances per node: 16 × 2 CPUs fill a node's 32.
const FILLERS_PER_NODE: usize = 16;

/// An instance of `cpu_millis` and `memory_mib` on the `process` driver.
fn instance(cpu_millis: u64, memory_mib: u64) -> InstanceRequest {
    InstanceRequest {
        cpu_millis,
        memory_bytes: memory_mib * MIB,
        driver: Some("process".to_owned()),
        ..InstanceRequest::default()
    }
}

/// [`cluster`] with every node's CPU taken by recorded instances of
/// priority 0, 1 or 2.
fn full_cluster(node_count: usize) -> ClusterSnapshot {
    let mut snapshot = cluster(node_count);
    let filler = instance(2_000, 4 * 1024);
    for node in 0..node_count {
        for slot in 0..FILLERS_PER_NODE {
            let index = node * FILLERS_PER_NODE + slot;
            let placed = PlacedInstance {
                id: format!("low-{index}"),
                priority: (index * 7 % 3) as i32,
                disruption_budget: None,
            };
            snapshot.allocate_instance(&node_name(node), &filler, placed);
        }
    }
    snapshot
}

/// Preempts for each of `preemptors` (2 CPUs each: every one needs a
/// victim) in turn and applies the result: the
/// victims are released and the preemptor recorded. Returns the snapshot
/// (dropped outside the timed part) and how many evicted nothing (found no
/// victims, or did not need any).
fn preempt_all(
    mut snapshot: ClusterSnapshot,
    preemptors: &[InstanceRequest],
) -> (ClusterSnapshot, usize) {
    const PRIORITY: i32 = 100;
    let budgets = BTreeMap::new();
    let mut failed = 0;
    for (index, preemptor) in preemptors.iter().enumerate() {
        let found = black_box(snapshot.preempt(black_box(preemptor), PRIORITY, &budgets));
        let Some(preemption) = found.filter(|found| !found.victims.is_empty()) else {
            failed += 1;
            continue;
        };
        for victim in &preemption.victims {
            snapshot.release_instance(victim);
        }
        let placed = PlacedInstance {
            id: format!("high-{index}"),
            priority: PRIORITY,
            disruption_budget: None,
        };
        snapshot.allocate_instance(&preemption.node, preemptor, placed);
    }
    (snapshot, failed)
}

fn preemption(c: &mut Criterion) {
    const NODES: usize = 5_000;
    let preemptors: Vec<InstanceRequest> = (0..PREEMPTIONS)
        .map(|index| instance(2_000, [1_024, 2_048, 4_096][index % 3]))
        .collect();
    let (mut group, _) = short_group(c, "preemption", PREEMPTIONS);
    let (_, failed) = preempt_all(full_cluster(NODES), &preemptors);
    eprintln!("{NODES} full nodes: {failed} of {PREEMPTIONS} preemptors evicted nothing");
    group.bench_function(format!("{NODES}_nodes"), |b| {
        b.iter_batched(
            || full_cluster(NODES),
            |snapshot| preempt_all(snapshot, &preemptors),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

const ANTI_AFFINITY_GROUPS: usize = 20;
const ANTI_AFFINITY_EXISTING: usize = 1_000;
const ANTI_AFFINITY_PLACEMENTS: usize = 4_000;

/// Instance `index` of the anti-affinity workload: group `index % 20`,
/// repelled by its own group on the hostname.
fn anti_affinity_instance(index: usize) -> InstanceRequest {
    let group = BTreeMap::from([(
        "group".to_owned(),
        format!("g{}", index % ANTI_AFFINITY_GROUPS),
    )]);
    InstanceRequest {
        cpu_millis: 100,
        memory_bytes: 256 * MIB,
        driver: Some("process".to_owned()),
        namespace: "perf".to_owned(),
        required_instance_anti_affinity: vec![InstanceAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: group.clone(),
                ..LabelSelector::default()
            }),
            topology_key: HOSTNAME_LABEL.to_owned(),
            ..InstanceAffinityTerm::default()
        }],
        labels: group,
        ..InstanceRequest::default()
    }
}

/// [`cluster`] with the first [`ANTI_AFFINITY_EXISTING`] instances placed.
fn anti_affinity_cluster(node_count: usize) -> ClusterSnapshot {
    let mut snapshot = cluster(node_count);
    for index in 0..ANTI_AFFINITY_EXISTING {
        snapshot
            .place(&anti_affinity_instance(index))
            .expect("the existing instances fit");
    }
    snapshot
}

fn pod_anti_affinity(c: &mut Criterion) {
    const NODES: usize = 5_000;
    let requests: Vec<InstanceRequest> = (ANTI_AFFINITY_EXISTING
        ..ANTI_AFFINITY_EXISTING + ANTI_AFFINITY_PLACEMENTS)
        .map(anti_affinity_instance)
        .collect();
    let mut group = short_group(c, "pod_anti_affinity", ANTI_AFFINITY_PLACEMENTS);
    let name = format!("{NODES}_nodes");
    bench_place_all(
        &mut group,
        &name,
        || anti_affinity_cluster(NODES),
        &requests,
    );
    group.0.finish();
}

/// One instance per node, pinned to it by `metadata.name` (even nodes) or
/// by the hostname label (odd nodes).
fn daemonset_requests(node_count: usize) -> Vec<InstanceRequest> {
    (0..node_count)
        .map(|index| {
            let name = node_name(index);
            let pin = if index % 2 == 0 {
                NodeSelectorTerm {
                    match_fields: vec![NodeSelectorRequirement::new(
                        NODE_NAME_FIELD,
                        NodeSelectorOperator::In,
                        [name.as_str()],
                    )],
                    ..NodeSelectorTerm::default()
                }
            } else {
                NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement::new(
                        HOSTNAME_LABEL,
                        NodeSelectorOperator::In,
                        [name.as_str()],
                    )],
                    ..NodeSelectorTerm::default()
                }
            };
            InstanceRequest {
                cpu_millis: 100,
                memory_bytes: 128 * MIB,
                driver: Some("process".to_owned()),
                namespace: "kube-system".to_owned(),
                labels: BTreeMap::from([("app".to_owned(), "node-agent".to_owned())]),
                required_affinity: vec![pin],
                ..InstanceRequest::default()
            }
        })
        .collect()
}

fn daemonset(c: &mut Criterion) {
    const NODES: usize = 15_000;
    let mut group = short_group(c, "daemonset", NODES);
    let name = format!("{NODES}_nodes");
    bench_place_all(
        &mut group,
        &name,
        || cluster(NODES),
        &daemonset_requests(NODES),
    );
    group.0.finish();
}

/// Building a snapshot of 5,000 nodes, as the control plane does at the
/// start of every scheduling cycle; elements/s are nodes added per second.
fn snapshot_build(c: &mut Criterion) {
    const NODES: usize = 5_000;
    let (mut group, _) = short_group(c, "snapshot_build", NODES);
    group.bench_function(format!("{NODES}_nodes"), |b| b.iter(|| cluster(NODES)));
    group.finish();
}

/// What `criterion_main!` would generate, minus an undocumented group function.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    placements(&mut criterion);
    node_affinity(&mut criterion);
    preemption(&mut criterion);
    pod_anti_affinity(&mut criterion);
    daemonset(&mut criterion);
    snapshot_build(&mut criterion);
    criterion.final_summary();
}

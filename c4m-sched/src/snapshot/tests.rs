use super::*;

pub(super) const GIB: u64 = 1 << 30;

pub(super) fn node(name: &str, cpu_millis: u64, memory_bytes: u64, instances: u64) -> NodeInfo {
    NodeInfo {
        name: name.to_owned(),
        allocatable: Resources {
            cpu_millis,
            memory_bytes,
            instances,
            ..Resources::default()
        },
        drivers: BTreeSet::from(["process".to_owned()]),
        ready: true,
        ..NodeInfo::default()
    }
}

pub(super) fn request(cpu_millis: u64, memory_bytes: u64) -> InstanceRequest {
    InstanceRequest {
        cpu_millis,
        memory_bytes,
        driver: Some("process".to_owned()),
        ..InstanceRequest::default()
    }
}

pub(super) fn snapshot_of(nodes: impl IntoIterator<Item = NodeInfo>) -> ClusterSnapshot {
    let mut snapshot = ClusterSnapshot::new();
    for node in nodes {
        snapshot.upsert_node(node);
    }
    snapshot
}

pub(super) fn unschedulable_text(snapshot: &mut ClusterSnapshot, req: &InstanceRequest) -> String {
    snapshot.place(req).expect_err("should not fit").to_string()
}

#[test]
fn best_fit_picks_the_tightest_node() {
    let mut snapshot = snapshot_of([
        node("a", 4000, 8 * GIB, 10),
        node("b", 4000, 8 * GIB, 10),
        node("c", 4000, 8 * GIB, 10),
    ]);
    assert!(snapshot.allocate("b", &request(2000, 4 * GIB)));
    assert!(snapshot.allocate("c", &request(1000, GIB)));
    assert_eq!(snapshot.place(&request(500, GIB)).unwrap(), "b");
    // b now has 1500m / 3 GiB free: too little CPU for 2000m, c is next tightest.
    assert_eq!(snapshot.place(&request(2000, GIB)).unwrap(), "c");
}

#[test]
fn best_fit_compares_nodes_of_different_sizes_relatively() {
    // small: 4 cores, 8 GiB, empty -> leftover after (1000m, 1 GiB) = 3/4 + 7/8 = 1.625.
    // big: 64 cores, 256 GiB with 48 cores, 192 GiB used -> 15/64 + 63/256 = 0.48.
    let mut snapshot = snapshot_of([
        node("small", 4000, 8 * GIB, 10),
        node("big", 64_000, 256 * GIB, 10),
    ]);
    assert!(snapshot.allocate("big", &request(48_000, 192 * GIB)));
    assert_eq!(snapshot.place(&request(1000, GIB)).unwrap(), "big");
}

#[test]
fn equal_leftovers_go_to_the_smallest_name() {
    let mut snapshot = snapshot_of([
        node("n2", 1000, GIB, 5),
        node("n1", 2000, 2 * GIB, 5),
        node("n3", 1000, GIB, 5),
    ]);
    // n2 and n3 are empty and identical; n1 has the same relative leftover once half used.
    assert!(snapshot.allocate("n1", &request(1000, GIB / 2)));
    assert_eq!(snapshot.place(&request(0, 0)).unwrap(), "n1");
    snapshot.remove_node("n1");
    assert_eq!(snapshot.place(&request(100, 1)).unwrap(), "n2");
    assert_eq!(
        snapshot.place(&request(100, 1)).unwrap(),
        "n2",
        "n2 is now the tightest"
    );
}

#[test]
fn node_selector_must_match_every_label() {
    let mut ssd = node("ssd", 1000, GIB, 5);
    ssd.labels = BTreeMap::from([
        ("disk".to_owned(), "ssd".to_owned()),
        ("zone".to_owned(), "a".to_owned()),
    ]);
    let mut hdd = node("hdd", 1000, GIB, 5);
    hdd.labels = BTreeMap::from([
        ("disk".to_owned(), "hdd".to_owned()),
        ("zone".to_owned(), "a".to_owned()),
    ]);
    let mut snapshot = snapshot_of([ssd, hdd, node("plain", 1000, GIB, 5)]);
    let mut req = request(100, 1);
    req.node_selector = BTreeMap::from([
        ("disk".to_owned(), "ssd".to_owned()),
        ("zone".to_owned(), "a".to_owned()),
    ]);
    assert_eq!(snapshot.place(&req).unwrap(), "ssd");
    req.node_selector.insert("zone".to_owned(), "b".to_owned());
    assert_eq!(
        unschedulable_text(&mut snapshot, &req),
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn driver_must_be_offered() {
    let mut wasm = node("wasm", 1000, GIB, 5);
    wasm.drivers.insert("wasm".to_owned());
    let mut snapshot = snapshot_of([
        wasm,
        node("plain-a", 1000, GIB, 5),
        node("plain-b", 1000, GIB, 5),
    ]);
    let mut req = request(100, 1);
    req.driver = Some("wasm".to_owned());
    assert_eq!(snapshot.place(&req).unwrap(), "wasm");
    req.driver = Some("vm".to_owned());
    assert_eq!(
        unschedulable_text(&mut snapshot, &req),
        "0/3 nodes are available: 3 node(s) lacked driver \"vm\"."
    );
}

#[test]
fn not_ready_nodes_are_skipped_until_ready() {
    let mut down = node("down", 1000, GIB, 5);
    down.ready = false;
    let mut snapshot = snapshot_of([down.clone()]);
    assert_eq!(
        unschedulable_text(&mut snapshot, &request(1, 1)),
        "0/1 nodes are available: 1 node(s) were not ready."
    );
    down.ready = true;
    snapshot.upsert_node(down);
    assert_eq!(snapshot.place(&request(1, 1)).unwrap(), "down");
}

#[test]
fn instance_slots_limit_placements() {
    let mut snapshot = snapshot_of([node("tiny", 1000, GIB, 2)]);
    assert_eq!(snapshot.place(&request(0, 0)).unwrap(), "tiny");
    assert_eq!(snapshot.place(&request(0, 0)).unwrap(), "tiny");
    assert_eq!(
        unschedulable_text(&mut snapshot, &request(0, 0)),
        "0/1 nodes are available: 1 node(s) had too many instances."
    );
    snapshot.release("tiny", &request(0, 0));
    assert_eq!(snapshot.place(&request(0, 0)).unwrap(), "tiny");
}

#[test]
fn reasons_are_counted_per_node_and_sorted_by_count_then_reason() {
    let mut down = node("down", 1000, GIB, 5);
    down.ready = false;
    let mut labelled = node("labelled", 8000, GIB, 5);
    labelled.labels.insert("zone".to_owned(), "a".to_owned());
    let mut snapshot = snapshot_of([
        down,
        node("small-1", 1000, GIB, 5),
        node("small-2", 1000, 16 * GIB, 5),
    ]);
    assert_eq!(
        unschedulable_text(&mut snapshot, &request(2000, GIB)),
        "0/3 nodes are available: 1 node(s) were not ready, 2 node(s) had insufficient cpu."
    );
    snapshot.upsert_node(labelled);
    let err = snapshot.place(&request(2000, 2 * GIB)).unwrap_err();
    assert_eq!(err.total_nodes, 4);
    assert_eq!(
        err.reasons,
        vec![
            (UnfitReason::NotReady, 1),
            (UnfitReason::InsufficientCpu, 2),
            (UnfitReason::InsufficientMemory, 2),
        ]
    );
    // small-1 lacks both cpu and memory, so the counts add up to more than 4.
    assert_eq!(
        err.to_string(),
        "0/4 nodes are available: 1 node(s) were not ready, 2 node(s) had insufficient cpu, \
         2 node(s) had insufficient memory."
    );
}

#[test]
fn an_empty_cluster_is_unschedulable() {
    let mut snapshot = ClusterSnapshot::new();
    assert_eq!(
        unschedulable_text(&mut snapshot, &request(0, 0)),
        "0/0 nodes are available."
    );
}

#[test]
fn allocate_and_release_keep_the_books() {
    let mut snapshot = snapshot_of([node("n", 1000, GIB, 3)]);
    let half = request(500, GIB / 2);
    assert!(snapshot.allocate("n", &half));
    assert!(snapshot.allocate("n", &half));
    assert_eq!(
        snapshot.free("n"),
        Some(Resources {
            cpu_millis: 0,
            memory_bytes: 0,
            instances: 1,
            ..Resources::default()
        })
    );
    // Over-commit: reported, yet counted because the instance runs anyway.
    assert!(!snapshot.allocate("n", &half));
    assert_eq!(snapshot.free("n"), Some(Resources::default()));
    snapshot.release("n", &half);
    assert_eq!(
        snapshot.free("n"),
        Some(Resources {
            cpu_millis: 0,
            memory_bytes: 0,
            instances: 1,
            ..Resources::default()
        }),
        "still 1000m used of 1000m after the over-commit is released"
    );
    snapshot.release("n", &half);
    assert_eq!(
        snapshot.free("n"),
        Some(Resources {
            cpu_millis: 500,
            memory_bytes: GIB / 2,
            instances: 2,
            ..Resources::default()
        })
    );
    assert_eq!(snapshot.place(&half).unwrap(), "n");
    assert!(!snapshot.allocate("unknown", &half));
    snapshot.release("unknown", &half);
    assert_eq!(snapshot.free("unknown"), None);
}

#[test]
fn upsert_keeps_allocations_even_when_the_node_shrinks() {
    let mut snapshot = snapshot_of([node("n", 4000, 4 * GIB, 10)]);
    assert!(snapshot.allocate("n", &request(2000, 2 * GIB)));
    let mut relabelled = node("n", 4000, 4 * GIB, 10);
    relabelled.labels.insert("zone".to_owned(), "b".to_owned());
    snapshot.upsert_node(relabelled);
    assert_eq!(
        snapshot.free("n"),
        Some(Resources {
            cpu_millis: 2000,
            memory_bytes: 2 * GIB,
            instances: 9,
            ..Resources::default()
        })
    );
    snapshot.upsert_node(node("n", 1000, 4 * GIB, 10));
    assert_eq!(
        snapshot.free("n"),
        Some(Resources {
            cpu_millis: 0,
            memory_bytes: 2 * GIB,
            instances: 9,
            ..Resources::default()
        })
    );
    assert_eq!(
        unschedulable_text(&mut snapshot, &request(1, 1)),
        "0/1 nodes are available: 1 node(s) had insufficient cpu."
    );
    assert_eq!(snapshot.place(&request(0, GIB)).unwrap(), "n");
    assert_eq!(snapshot.node_count(), 1);
}

#[test]
fn removed_nodes_take_nothing() {
    let mut snapshot = snapshot_of([node("a", 1000, GIB, 5), node("b", 2000, 2 * GIB, 5)]);
    assert_eq!(snapshot.place(&request(900, 1)).unwrap(), "a");
    snapshot.remove_node("a");
    snapshot.remove_node("missing");
    assert_eq!(snapshot.node_count(), 1);
    assert_eq!(snapshot.free("a"), None);
    assert_eq!(snapshot.place(&request(900, 1)).unwrap(), "b");
    // Re-adding starts from an empty node, in a fresh class.
    snapshot.remove_node("b");
    assert!(snapshot.classes.is_empty() && snapshot.class_ids.is_empty());
    snapshot.upsert_node(node("a", 1000, GIB, 5));
    assert_eq!(
        snapshot.free("a"),
        Some(Resources {
            cpu_millis: 1000,
            memory_bytes: GIB,
            instances: 5,
            ..Resources::default()
        })
    );
}

#[test]
fn zero_allocatable_dimensions_take_only_zero_requests() {
    let mut snapshot = snapshot_of([node("no-cpu", 0, GIB, 5), node("nothing", 0, 0, 5)]);
    assert_eq!(
        unschedulable_text(&mut snapshot, &request(1, 0)),
        "0/2 nodes are available: 2 node(s) had insufficient cpu."
    );
    // Both leftovers are 0 with a (0, 0) request on "nothing" and 1 on "no-cpu".
    assert_eq!(snapshot.place(&request(0, 0)).unwrap(), "nothing");
    assert_eq!(snapshot.place(&request(0, GIB)).unwrap(), "no-cpu");
    assert_eq!(
        snapshot.free("no-cpu"),
        Some(Resources {
            cpu_millis: 0,
            memory_bytes: 0,
            instances: 4,
            ..Resources::default()
        })
    );
}

#[test]
fn a_request_of_nothing_still_takes_a_slot() {
    let mut snapshot = snapshot_of([node("n", 1000, GIB, 1)]);
    assert_eq!(snapshot.place(&request(0, 0)).unwrap(), "n");
    assert_eq!(snapshot.free("n").unwrap().instances, 0);
    assert!(snapshot.place(&request(0, 0)).is_err());
}

#[test]
fn extreme_quantities_compare_exactly() {
    // The leftovers differ by 1/MAX - 1/(MAX (MAX-1)), far below what f64 resolves.
    let mut snapshot = snapshot_of([
        node("x", u64::MAX, u64::MAX, 5),
        node("y", u64::MAX, u64::MAX - 1, 5),
    ]);
    assert!(snapshot.allocate("x", &request(1, 0)));
    // x: (MAX-2)/MAX + (MAX-1)/MAX is tighter than y: (MAX-1)/MAX + (MAX-2)/(MAX-1).
    assert_eq!(snapshot.place(&request(1, 1)).unwrap(), "x");
    // x now leaves (MAX-2)/MAX + (MAX-1)/MAX for a zero request; untouched y leaves 2.
    assert_eq!(snapshot.place(&request(0, 0)).unwrap(), "x");
}

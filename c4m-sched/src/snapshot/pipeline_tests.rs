//! The pipeline through `place`: each built-in filter and scorer, strategies
//! and an embedder's extensions.

use super::tests::{GIB, request, snapshot_of, unschedulable_text};
use super::*;
use crate::affinity::{
    NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
};
use crate::model::Protocol;
use crate::scorers::{BestFit, MAX_NODE_SCORE, Spread};
use crate::taint::{TaintEffect, Toleration, TolerationOperator};

const GPU: &str = "nvidia.com/gpu";

fn node(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        name: name.to_owned(),
        allocatable: Resources {
            cpu_millis: 4000,
            memory_bytes: 8 * GIB,
            ephemeral_storage_bytes: 10 * GIB,
            instances: 10,
            extended: BTreeMap::new(),
        },
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        drivers: BTreeSet::from(["process".to_owned()]),
        taints: Vec::new(),
        ready: true,
    }
}

fn tainted(mut node: NodeInfo, key: &str, value: &str, effect: TaintEffect) -> NodeInfo {
    node.taints.push(Taint {
        key: key.to_owned(),
        value: value.to_owned(),
        effect,
    });
    node
}

fn term(key: &str, operator: NodeSelectorOperator, values: &[&str]) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: vec![NodeSelectorRequirement::new(
            key,
            operator,
            values.iter().copied(),
        )],
        ..NodeSelectorTerm::default()
    }
}

fn tolerate(key: &str, value: &str) -> Toleration {
    Toleration {
        key: key.to_owned(),
        value: value.to_owned(),
        ..Toleration::default()
    }
}

#[test]
fn untolerated_taints_are_counted_with_their_key_and_value() {
    let mut snapshot = snapshot_of([
        tainted(
            node("db-1", &[]),
            "dedicated",
            "db",
            TaintEffect::NoSchedule,
        ),
        tainted(node("db-2", &[]), "dedicated", "db", TaintEffect::NoExecute),
        node("a", &[]),
        node("b", &[]),
        node("c", &[]),
    ]);
    let big = request(1000, 16 * GIB);
    assert_eq!(
        unschedulable_text(&mut snapshot, &big),
        "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: db}, \
         3 node(s) had insufficient memory."
    );
    let mut db = request(1000, GIB);
    assert_eq!(snapshot.place(&db).unwrap(), "a");
    // With the toleration the tainted nodes fit too, but "a" is fuller.
    db.tolerations = vec![tolerate("dedicated", "db")];
    assert_eq!(snapshot.place(&db).unwrap(), "a");
    let mut everything = request(3500, GIB);
    everything.tolerations = vec![Toleration {
        operator: TolerationOperator::Exists,
        ..Toleration::default()
    }];
    // "a" has no room left; the empty nodes tie and "b" < "c" < "db-1".
    assert_eq!(snapshot.place(&everything).unwrap(), "b");
}

#[test]
fn prefer_no_schedule_lowers_the_score_but_still_fits() {
    let soft = tainted(
        node("soft", &[]),
        "spot",
        "true",
        TaintEffect::PreferNoSchedule,
    );
    let req = request(100, GIB);
    let view = NodeView {
        info: &soft,
        used: &NOTHING_USED,
        host_ports_in_use: &NO_HOST_PORTS,
    };
    assert_eq!(PreferNoScheduleTaints.score(&req, &view), -MAX_NODE_SCORE);
    let mut tolerant = req.clone();
    tolerant.tolerations = vec![tolerate("spot", "true")];
    assert_eq!(PreferNoScheduleTaints.score(&tolerant, &view), 0);

    // "soft" would be the best fit (it is fuller), but its taint costs more.
    let mut snapshot = snapshot_of([soft, node("plain", &[])]);
    assert!(snapshot.allocate("soft", &request(2000, 4 * GIB)));
    assert_eq!(snapshot.place(&req).unwrap(), "plain");
    assert_eq!(snapshot.place(&tolerant).unwrap(), "soft");
    snapshot.remove_node("plain");
    assert_eq!(snapshot.place(&req).unwrap(), "soft");
}

#[test]
fn required_affinity_ors_its_terms() {
    use NodeSelectorOperator::*;
    let mut snapshot = snapshot_of([
        node("a", &[("zone", "a")]),
        node("b", &[("zone", "b"), ("gpu", "true")]),
        node("c", &[("zone", "c"), ("cores", "64")]),
    ]);
    let mut req = request(100, GIB);
    req.required_affinity = vec![term("zone", In, &["z"]), term("cores", Gt, &["32"])];
    assert_eq!(snapshot.place(&req).unwrap(), "c");
    req.required_affinity = vec![term("gpu", Exists, &[])];
    assert_eq!(snapshot.place(&req).unwrap(), "b");
    req.required_affinity = vec![term("zone", NotIn, &["a", "b", "c"])];
    assert_eq!(
        unschedulable_text(&mut snapshot, &req),
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    );
    req.required_affinity = vec![term("gpu", DoesNotExist, &[]), term("cores", Lt, &["8"])];
    // a and c lack the gpu label; c is fuller (best fit).
    assert_eq!(snapshot.place(&req).unwrap(), "c");
}

#[test]
fn preferred_affinity_adds_the_weights_of_matching_terms() {
    use NodeSelectorOperator::*;
    let mut snapshot = snapshot_of([node("a", &[("disk", "ssd")]), node("b", &[("zone", "b")])]);
    // Best fit alone would pick the fuller "b".
    assert!(snapshot.allocate("b", &request(2000, 4 * GIB)));
    let mut req = request(100, GIB);
    req.preferred_affinity = vec![PreferredSchedulingTerm {
        weight: 80,
        preference: term("disk", In, &["ssd"]),
    }];
    assert_eq!(snapshot.place(&req).unwrap(), "a");
    req.preferred_affinity.push(PreferredSchedulingTerm {
        weight: 90,
        preference: term("zone", Exists, &[]),
    });
    assert_eq!(snapshot.place(&req).unwrap(), "b");
}

#[test]
fn spread_and_best_fit_choose_opposite_nodes() {
    let mut snapshot = snapshot_of([node("full", &[]), node("empty", &[]), node("half", &[])]);
    assert!(snapshot.allocate("full", &request(3000, 6 * GIB)));
    assert!(snapshot.allocate("half", &request(2000, 4 * GIB)));
    let mut req = request(100, GIB);
    assert_eq!(snapshot.place(&req).unwrap(), "full");
    req.strategy = Strategy::Spread;
    assert_eq!(snapshot.place(&req).unwrap(), "empty");
    // The scorers agree with the placements.
    let free = NodeInfo::default();
    let view = NodeView {
        info: &free,
        used: &NOTHING_USED,
        host_ports_in_use: &NO_HOST_PORTS,
    };
    assert_eq!(BestFit.score(&request(0, 0), &view), MAX_NODE_SCORE);
    assert_eq!(Spread.score(&request(0, 0), &view), 0);
}

#[test]
fn spread_breaks_ties_by_the_smallest_name() {
    let mut snapshot = snapshot_of([node("n3", &[]), node("n1", &[]), node("n2", &[])]);
    let mut req = request(100, GIB);
    req.strategy = Strategy::Spread;
    assert_eq!(snapshot.place(&req).unwrap(), "n1");
    assert_eq!(snapshot.place(&req).unwrap(), "n2");
    assert_eq!(snapshot.place(&req).unwrap(), "n3");
    assert_eq!(snapshot.place(&req).unwrap(), "n1");
}

#[test]
fn host_ports_conflict_per_port_and_protocol() {
    let http = HostPort {
        port: 80,
        protocol: Protocol::Tcp,
    };
    let mut snapshot = snapshot_of([node("a", &[]), node("b", &[])]);
    let mut web = request(100, GIB);
    web.host_ports = vec![http];
    assert_eq!(snapshot.place(&web).unwrap(), "a");
    assert_eq!(snapshot.place(&web).unwrap(), "b");
    assert_eq!(
        unschedulable_text(&mut snapshot, &web),
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
    );
    let mut dns = request(100, GIB);
    dns.host_ports = vec![HostPort {
        port: 80,
        protocol: Protocol::Udp,
    }];
    assert_eq!(snapshot.place(&dns).unwrap(), "a");
    snapshot.release("b", &web);
    assert_eq!(snapshot.place(&web).unwrap(), "b");
    // An instance bound despite a conflict is reported and still counted.
    assert!(!snapshot.allocate("a", &web));
    snapshot.release("a", &web);
    assert_eq!(
        unschedulable_text(&mut snapshot, &web)
            .matches("free ports")
            .count(),
        1
    );
}

#[test]
fn extended_resources_are_counted_exactly() {
    let mut gpu_node = node("gpu", &[]);
    gpu_node.allocatable.extended.insert(GPU.to_owned(), 2);
    let mut snapshot = snapshot_of([gpu_node, node("cpu", &[])]);
    let mut training = request(100, GIB);
    training.extended.insert(GPU.to_owned(), 1);
    assert_eq!(snapshot.place(&training).unwrap(), "gpu");
    assert_eq!(snapshot.place(&training).unwrap(), "gpu");
    assert_eq!(snapshot.free("gpu").unwrap().extended(GPU), 0);
    assert_eq!(
        unschedulable_text(&mut snapshot, &training),
        "0/2 nodes are available: 2 node(s) had insufficient nvidia.com/gpu."
    );
    snapshot.release("gpu", &training);
    assert_eq!(snapshot.free("gpu").unwrap().extended(GPU), 1);
    assert_eq!(snapshot.place(&training).unwrap(), "gpu");
    // Asking for none of a resource no node has still fits.
    let mut none = request(100, GIB);
    none.extended.insert("example.com/fpga".to_owned(), 0);
    assert_eq!(snapshot.place(&none).unwrap(), "gpu");
}

#[test]
fn ephemeral_storage_is_a_resource() {
    let mut snapshot = snapshot_of([node("a", &[])]);
    let mut scratch = request(100, GIB);
    scratch.ephemeral_storage_bytes = 6 * GIB;
    assert_eq!(snapshot.place(&scratch).unwrap(), "a");
    assert_eq!(snapshot.free("a").unwrap().ephemeral_storage_bytes, 4 * GIB);
    assert_eq!(
        unschedulable_text(&mut snapshot, &scratch),
        "0/1 nodes are available: 1 node(s) had insufficient ephemeral-storage."
    );
    snapshot.release("a", &scratch);
    assert_eq!(snapshot.place(&scratch).unwrap(), "a");
}

/// An embedder's node-scoped filter: refuses nodes whose name ends in "-x".
#[derive(Debug)]
struct NotCordonedByName;

impl Filter for NotCordonedByName {
    fn unfit_reasons(&self, _: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        if node.info.name.ends_with("-x") {
            vec![UnfitReason::Custom("were cordoned by name".to_owned())]
        } else {
            Vec::new()
        }
    }
}

/// An embedder's class-scoped filter: only nodes labelled `tier=gold`.
#[derive(Debug)]
struct GoldOnly;

impl Filter for GoldOnly {
    fn scope(&self) -> Scope {
        Scope::Class
    }

    fn unfit_reasons(&self, _: &InstanceRequest, node: &NodeView<'_>) -> Vec<UnfitReason> {
        if node
            .info
            .labels
            .get("tier")
            .is_some_and(|tier| tier == "gold")
        {
            Vec::new()
        } else {
            vec![UnfitReason::Custom("were not gold".to_owned())]
        }
    }
}

/// An embedder's node-scoped scorer: prefers names that sort last.
#[derive(Debug)]
pub(super) struct LastName;

impl Scorer for LastName {
    fn score(&self, _: &InstanceRequest, node: &NodeView<'_>) -> i64 {
        node.info.name.bytes().last().map_or(0, i64::from)
    }
}

#[test]
fn an_embedders_filters_refuse_nodes_with_their_own_reason() {
    let mut snapshot = snapshot_of([
        node("a-x", &[("tier", "gold")]),
        node("b", &[("tier", "gold")]),
        node("c", &[]),
    ]);
    snapshot.add_filter(NotCordonedByName);
    snapshot.add_filter(GoldOnly);
    let req = request(4000, GIB);
    assert_eq!(snapshot.place(&req).unwrap(), "b");
    assert_eq!(
        unschedulable_text(&mut snapshot, &req),
        "0/3 nodes are available: 1 node(s) had insufficient cpu, 1 node(s) were cordoned by name, \
         1 node(s) were not gold."
    );
}

#[test]
fn an_embedders_node_scorer_outweighs_best_fit() {
    let mut snapshot = snapshot_of([node("a", &[]), node("b", &[]), node("c", &[])]);
    assert!(snapshot.allocate("a", &request(3000, 6 * GIB)));
    let req = request(100, GIB);
    assert_eq!(snapshot.place(&req).unwrap(), "a");
    snapshot.add_scorer(100, LastName);
    assert_eq!(snapshot.place(&req).unwrap(), "c");
    // Weight 0 leaves best fit alone.
    let mut unweighted = snapshot_of([node("a", &[]), node("c", &[])]);
    unweighted.add_scorer(0, LastName);
    assert!(unweighted.allocate("a", &request(3000, 6 * GIB)));
    assert_eq!(unweighted.place(&req).unwrap(), "a");
}

//! Per-node labels, inter-instance affinity and topology spread through
//! `place`.

use super::tests::{GIB, request, snapshot_of, unschedulable_text};
use super::*;
use crate::affinity::{
    NODE_NAME_FIELD, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm,
};
use crate::instance_affinity::{
    TopologySpreadConstraint, WeightedInstanceAffinityTerm, WhenUnsatisfiable,
};
use crate::labels::LabelSelector;
use crate::labels::tests::labels;
use crate::model::PlacedInstance;

/// A 4-CPU, 8-GiB, 10-slot node with its hostname label and `pairs`.
pub(super) fn host(name: &str, pairs: &[(&str, &str)]) -> NodeInfo {
    let mut labels = labels(pairs);
    labels.insert(HOSTNAME_LABEL.to_owned(), name.to_owned());
    NodeInfo {
        name: name.to_owned(),
        allocatable: Resources {
            cpu_millis: 4000,
            memory_bytes: 8 * GIB,
            instances: 10,
            ..Resources::default()
        },
        labels,
        drivers: BTreeSet::from(["process".to_owned()]),
        ready: true,
        ..NodeInfo::default()
    }
}

/// A small request of `app` in namespace `prod`.
fn instance_of(app: &str) -> InstanceRequest {
    InstanceRequest {
        namespace: "prod".to_owned(),
        labels: labels(&[("app", app)]),
        ..request(100, GIB / 8)
    }
}

/// A term selecting `app` over `topology_key`.
fn term(app: &str, topology_key: &str) -> InstanceAffinityTerm {
    InstanceAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: labels(&[("app", app)]),
            ..LabelSelector::default()
        }),
        topology_key: topology_key.to_owned(),
        ..InstanceAffinityTerm::default()
    }
}

fn pin(key: &str, operator: NodeSelectorOperator, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement::new(key, operator, values.iter().copied())
}

fn spread(
    max_skew: u32,
    topology_key: &str,
    when_unsatisfiable: WhenUnsatisfiable,
    app: &str,
) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew,
        topology_key: topology_key.to_owned(),
        when_unsatisfiable,
        label_selector: term(app, topology_key).label_selector,
    }
}

#[test]
fn hostname_labels_do_not_split_classes() {
    let mut snapshot = snapshot_of((0..10).map(|i| host(&format!("n{i}"), &[("zone", "a")])));
    assert_eq!(snapshot.class_count(), 1);
    snapshot.set_per_node_label_keys(Vec::<String>::new());
    assert_eq!(snapshot.class_count(), 10);
    assert!(snapshot.allocate("n4", &request(1000, GIB)));
    snapshot.set_per_node_label_keys([HOSTNAME_LABEL]);
    assert_eq!(snapshot.class_count(), 1);
    assert_eq!(
        snapshot.free("n4").unwrap().cpu_millis,
        3000,
        "allocations stay"
    );
    assert_eq!(snapshot.place(&request(100, 1)).unwrap(), "n4");
    // Presence of a per-node key still tells classes apart.
    let mut nameless = host("x", &[("zone", "a")]);
    nameless.labels.remove(HOSTNAME_LABEL);
    snapshot.upsert_node(nameless);
    assert_eq!(snapshot.class_count(), 2);
}

#[test]
fn selecting_by_hostname_judges_each_node() {
    use NodeSelectorOperator::*;
    let mut snapshot = snapshot_of((0..6).map(|i| host(&format!("n{i}"), &[])));
    assert!(snapshot.allocate("n1", &request(3000, GIB)));
    let mut req = request(100, GIB);
    req.node_selector = labels(&[(HOSTNAME_LABEL, "n3")]);
    assert_eq!(snapshot.place(&req).unwrap(), "n3");
    req.node_selector = labels(&[(HOSTNAME_LABEL, "missing")]);
    assert_eq!(
        unschedulable_text(&mut snapshot, &req),
        "0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector."
    );
    req.node_selector.clear();
    req.required_affinity = vec![NodeSelectorTerm {
        match_expressions: vec![pin(HOSTNAME_LABEL, In, &["n2", "n3"])],
        ..NodeSelectorTerm::default()
    }];
    assert_eq!(snapshot.place(&req).unwrap(), "n3", "n3 is fuller than n2");
    req.required_affinity = vec![NodeSelectorTerm {
        match_expressions: vec![pin(HOSTNAME_LABEL, NotIn, &["n1", "n3"])],
        ..NodeSelectorTerm::default()
    }];
    assert_eq!(
        snapshot.place(&req).unwrap(),
        "n0",
        "the rest are empty: smallest name"
    );
    req.required_affinity = vec![NodeSelectorTerm {
        match_fields: vec![pin(NODE_NAME_FIELD, In, &["n5"])],
        ..NodeSelectorTerm::default()
    }];
    assert_eq!(snapshot.place(&req).unwrap(), "n5");
    // A preferred hostname outweighs best fit.
    req.required_affinity.clear();
    req.preferred_affinity = vec![crate::PreferredSchedulingTerm {
        weight: 100,
        preference: NodeSelectorTerm {
            match_expressions: vec![pin(HOSTNAME_LABEL, In, &["n4"])],
            ..NodeSelectorTerm::default()
        },
    }];
    assert_eq!(snapshot.place(&req).unwrap(), "n4");
}

#[test]
fn numeric_comparisons_on_per_node_labels_judge_every_node() {
    use NodeSelectorOperator::*;
    let mut snapshot = snapshot_of([host("10", &[]), host("20", &[]), host("30", &[])]);
    let mut req = request(100, GIB);
    req.required_affinity = vec![NodeSelectorTerm {
        match_expressions: vec![pin(HOSTNAME_LABEL, Gt, &["15"])],
        ..NodeSelectorTerm::default()
    }];
    assert_eq!(snapshot.place(&req).unwrap(), "20");
    assert_eq!(snapshot.place(&req).unwrap(), "20", "now the fuller one");
    req.required_affinity[0].match_expressions[0] = pin(HOSTNAME_LABEL, Lt, &["15"]);
    assert_eq!(snapshot.place(&req).unwrap(), "10");
}

#[test]
fn required_anti_affinity_keeps_a_group_one_per_node() {
    let mut snapshot = snapshot_of([host("a", &[]), host("b", &[]), host("c", &[])]);
    let mut web = instance_of("web");
    web.required_instance_anti_affinity = vec![term("web", HOSTNAME_LABEL)];
    let mut placed: Vec<String> = (0..3).map(|_| snapshot.place(&web).unwrap()).collect();
    placed.sort();
    assert_eq!(placed, ["a", "b", "c"]);
    assert_eq!(
        unschedulable_text(&mut snapshot, &web),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
    // Another app is not repelled, and the group fits again once one goes.
    assert!(snapshot.place(&instance_of("db")).is_ok());
    snapshot.release("b", &web);
    assert_eq!(snapshot.place(&web).unwrap(), "b");
}

#[test]
fn an_existing_instances_anti_affinity_repels_newcomers_it_selects() {
    let mut snapshot = snapshot_of([host("a", &[]), host("b", &[])]);
    let mut loner = instance_of("loner");
    loner.required_instance_anti_affinity = vec![term("db", HOSTNAME_LABEL)];
    let recorded = PlacedInstance {
        id: "prod/loner".to_owned(),
        ..PlacedInstance::default()
    };
    assert!(snapshot.allocate_instance("a", &loner, recorded));
    assert!(snapshot.allocate("b", &request(3000, GIB)));
    // Best fit alone would take the fuller "b" either way: make "a" fuller.
    assert!(snapshot.allocate("a", &request(3500, GIB)));
    assert_eq!(snapshot.place(&instance_of("web")).unwrap(), "a");
    let db = instance_of("db");
    assert_eq!(snapshot.place(&db).unwrap(), "b");
    snapshot.remove_node("b");
    assert_eq!(
        unschedulable_text(&mut snapshot, &db),
        "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules."
    );
    // Another namespace is not selected by the loner's term.
    let mut elsewhere = db.clone();
    elsewhere.namespace = "dev".to_owned();
    assert_eq!(snapshot.place(&elsewhere).unwrap(), "a");
    assert!(snapshot.release_instance("prod/loner"));
    assert_eq!(snapshot.place(&db).unwrap(), "a");
}

#[test]
fn required_affinity_follows_the_selected_instances_domain() {
    let mut snapshot = snapshot_of([
        host("a1", &[("zone", "a")]),
        host("a2", &[("zone", "a")]),
        host("b1", &[("zone", "b")]),
        host("none", &[]),
    ]);
    let mut web = instance_of("web");
    web.required_instance_affinity = vec![term("cache", "zone")];
    assert_eq!(
        unschedulable_text(&mut snapshot, &web),
        "0/4 nodes are available: 4 node(s) didn't match pod affinity rules."
    );
    assert!(snapshot.allocate("a2", &instance_of("cache")));
    assert!(snapshot.allocate("b1", &request(3000, GIB)));
    // b1 is fuller, but only zone a runs a cache.
    assert_eq!(snapshot.place(&web).unwrap(), "a2");
    // Every term must select the same instance.
    web.required_instance_affinity.push(term("db", "zone"));
    assert!(snapshot.place(&web).is_err());
}

#[test]
fn the_first_of_a_self_attracting_group_goes_anywhere_with_the_key() {
    let mut snapshot = snapshot_of([host("a", &[("zone", "a")]), host("bare", &[])]);
    assert!(snapshot.allocate("bare", &request(3000, GIB)));
    let mut web = instance_of("web");
    web.required_instance_affinity = vec![term("web", "zone")];
    // "bare" is fuller but lacks the topology key.
    assert_eq!(snapshot.place(&web).unwrap(), "a");
    assert_eq!(snapshot.place(&web).unwrap(), "a");
    // An instance its own term does not select has no such exception.
    let mut api = instance_of("api");
    api.required_instance_affinity = vec![term("worker", "zone")];
    assert!(snapshot.place(&api).is_err());
}

#[test]
fn namespaces_scope_what_a_term_selects() {
    let mut snapshot = snapshot_of([host("a", &[]), host("b", &[])]);
    let mut dev_db = instance_of("db");
    dev_db.namespace = "dev".to_owned();
    assert!(snapshot.allocate("a", &dev_db));
    let mut web = instance_of("web");
    web.required_instance_affinity = vec![term("db", HOSTNAME_LABEL)];
    assert!(snapshot.place(&web).is_err(), "prod sees no db");
    web.required_instance_affinity[0].namespaces = vec!["dev".to_owned()];
    assert_eq!(snapshot.place(&web).unwrap(), "a");
    web.required_instance_affinity[0].namespaces.clear();
    web.required_instance_affinity[0].all_namespaces = true;
    assert_eq!(snapshot.place(&web).unwrap(), "a");
}

#[test]
fn preferred_terms_attract_and_repel_by_domain() {
    let mut snapshot = snapshot_of([
        host("a", &[("zone", "a")]),
        host("b", &[("zone", "b")]),
        host("c", &[("zone", "b")]),
    ]);
    assert!(snapshot.allocate("a", &request(3000, GIB)));
    assert!(snapshot.allocate("c", &instance_of("cache")));
    let mut web = instance_of("web");
    web.preferred_instance_affinity = vec![WeightedInstanceAffinityTerm {
        weight: 10,
        term: term("cache", "zone"),
    }];
    // Best fit alone would take "a"; zone b runs the cache.
    assert_eq!(snapshot.place(&web).unwrap(), "c");
    // Soft anti-affinity on the hostname spreads a group over nodes.
    let mut spreading = instance_of("api");
    spreading.preferred_instance_anti_affinity = vec![WeightedInstanceAffinityTerm {
        weight: 100,
        term: term("api", HOSTNAME_LABEL),
    }];
    let mut placed: Vec<String> = (0..3)
        .map(|_| snapshot.place(&spreading).unwrap())
        .collect();
    placed.sort();
    assert_eq!(placed, ["a", "b", "c"]);
}

#[test]
fn do_not_schedule_spread_keeps_the_skew_and_needs_the_key() {
    let mut snapshot = snapshot_of([
        host("a1", &[("zone", "a")]),
        host("a2", &[("zone", "a")]),
        host("b1", &[("zone", "b")]),
        host("bare", &[]),
    ]);
    assert!(snapshot.allocate("bare", &request(3000, GIB)));
    let mut web = instance_of("web");
    web.topology_spread = vec![spread(1, "zone", WhenUnsatisfiable::DoNotSchedule, "web")];
    let mut zones = Vec::new();
    for _ in 0..4 {
        let node = snapshot.place(&web).unwrap();
        assert_ne!(node, "bare", "lacks the zone");
        zones.push(node[..1].to_owned());
    }
    zones.sort();
    assert_eq!(zones, ["a", "a", "b", "b"]);
    // With zone b full, zone a may take one more (skew 1), not two.
    assert!(snapshot.allocate("b1", &request(100, 7 * GIB + 3 * GIB / 4)));
    assert!(snapshot.place(&web).unwrap().starts_with('a'));
    assert_eq!(
        unschedulable_text(&mut snapshot, &web),
        "0/4 nodes are available: 1 node(s) had insufficient memory, \
         1 node(s) didn't match pod topology spread constraints (missing required label), \
         2 node(s) didn't match pod topology spread constraints."
    );
    // Instances it does not select do not count.
    assert!(snapshot.place(&instance_of("db")).is_ok());
}

#[test]
fn spread_counts_only_nodes_the_instance_may_use() {
    let mut snapshot = snapshot_of([
        host("a1", &[("zone", "a"), ("pool", "x")]),
        host("b1", &[("zone", "b"), ("pool", "x")]),
        host("c1", &[("zone", "c"), ("pool", "y")]),
    ]);
    let mut web = instance_of("web");
    web.node_selector = labels(&[("pool", "x")]);
    web.topology_spread = vec![spread(1, "zone", WhenUnsatisfiable::DoNotSchedule, "web")];
    // Zone c is out of the pool: its emptiness does not hold the others back.
    for _ in 0..4 {
        assert!(snapshot.place(&web).is_ok());
    }
    assert_eq!(snapshot.free("c1").unwrap().instances, 10);
    assert_eq!(snapshot.free("a1").unwrap().instances, 8);
}

#[test]
fn schedule_anyway_prefers_emptier_domains_but_still_places() {
    let mut snapshot = snapshot_of([host("a1", &[("zone", "a")]), host("b1", &[("zone", "b")])]);
    assert!(snapshot.allocate("a1", &instance_of("web")));
    assert!(snapshot.allocate("a1", &request(2000, GIB)));
    let mut web = instance_of("web");
    web.topology_spread = vec![spread(
        1,
        HOSTNAME_LABEL,
        WhenUnsatisfiable::ScheduleAnyway,
        "web",
    )];
    // a1 is the best fit, but already runs a web.
    assert_eq!(snapshot.place(&web).unwrap(), "b1");
    snapshot.remove_node("b1");
    assert_eq!(snapshot.place(&web).unwrap(), "a1");
}

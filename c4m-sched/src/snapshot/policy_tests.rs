//! Each knob of the [`Policy`] through `place`.

use super::pipeline_tests::LastName;
use super::rules_tests::host;
use super::tests::{GIB, request, snapshot_of, unschedulable_text};
use super::*;
use crate::affinity::PreferredSchedulingTerm;
use crate::affinity::{NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm};
use crate::instance_affinity::{TopologySpreadConstraint, WhenUnsatisfiable};
use crate::labels::LabelSelector;
use crate::taint::TaintEffect;

fn policy(change: impl FnOnce(&mut Policy)) -> Policy {
    let mut policy = Policy::default();
    change(&mut policy);
    assert_eq!(policy.validate(), Ok(()));
    policy
}

fn tainted(name: &str, effect: TaintEffect) -> NodeInfo {
    let mut node = host(name, &[]);
    node.taints.push(Taint {
        key: "dedicated".to_owned(),
        value: "db".to_owned(),
        effect,
    });
    node
}

#[test]
fn disabled_filters_are_skipped() {
    let mut snapshot = snapshot_of([tainted("tainted", TaintEffect::NoSchedule)]);
    let req = request(100, GIB);
    assert!(snapshot.place(&req).is_err());
    snapshot.set_policy(&policy(|p| {
        p.disabled_filters
            .insert(filter_names::TAINT_TOLERATION.to_owned());
    }));
    assert_eq!(snapshot.place(&req).unwrap(), "tainted");
    assert_eq!(snapshot.policy().disabled_filters.len(), 1);

    let mut snapshot = snapshot_of([host("a", &[("zone", "a")])]);
    let mut picky = req.clone();
    picky.node_selector = BTreeMap::from([("zone".to_owned(), "b".to_owned())]);
    picky.required_affinity = vec![NodeSelectorTerm {
        match_expressions: vec![NodeSelectorRequirement::new(
            "zone",
            NodeSelectorOperator::In,
            ["c"],
        )],
        ..NodeSelectorTerm::default()
    }];
    snapshot.set_policy(&policy(|p| {
        p.disabled_filters
            .insert(filter_names::NODE_SELECTOR.to_owned());
    }));
    assert!(
        snapshot.place(&picky).is_err(),
        "node affinity still applies"
    );
    snapshot.set_policy(&policy(|p| {
        p.disabled_filters
            .insert(filter_names::NODE_SELECTOR.to_owned());
        p.disabled_filters
            .insert(filter_names::NODE_AFFINITY.to_owned());
    }));
    assert_eq!(snapshot.place(&picky).unwrap(), "a");
}

#[test]
fn disabled_instance_filters_are_skipped() {
    let mut snapshot = snapshot_of([host("a", &[("zone", "a")])]);
    let selector = Some(LabelSelector {
        match_labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
        ..LabelSelector::default()
    });
    let mut web = request(100, GIB);
    web.labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    web.required_instance_anti_affinity = vec![InstanceAffinityTerm {
        label_selector: selector.clone(),
        topology_key: HOSTNAME_LABEL.to_owned(),
        ..InstanceAffinityTerm::default()
    }];
    web.topology_spread = vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "rack".to_owned(),
        when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        label_selector: selector,
    }];
    assert!(
        unschedulable_text(&mut snapshot, &web).contains("(missing required label)"),
        "no node has a rack"
    );
    snapshot.set_policy(&policy(|p| {
        p.disabled_filters
            .insert(filter_names::TOPOLOGY_SPREAD.to_owned());
    }));
    assert_eq!(snapshot.place(&web).unwrap(), "a");
    assert!(
        unschedulable_text(&mut snapshot, &web).contains("anti-affinity"),
        "the first web repels the second"
    );
    snapshot.set_policy(&policy(|p| {
        p.disabled_filters
            .insert(filter_names::TOPOLOGY_SPREAD.to_owned());
        p.disabled_filters
            .insert(filter_names::INTER_INSTANCE_AFFINITY.to_owned());
    }));
    assert_eq!(snapshot.place(&web).unwrap(), "a");
}

#[test]
fn weights_multiply_the_built_in_scores() {
    // "soft" is fuller (best fit prefers it by 25 points) but has a
    // PreferNoSchedule taint (-100); "zoned" is preferred by affinity (+30).
    let mut snapshot = snapshot_of([
        tainted("soft", TaintEffect::PreferNoSchedule),
        host("zoned", &[("zone", "a")]),
    ]);
    assert!(snapshot.allocate("soft", &request(2000, 4 * GIB)));
    let mut req = request(100, GIB / 8);
    req.preferred_affinity = vec![PreferredSchedulingTerm {
        weight: 30,
        preference: NodeSelectorTerm {
            match_expressions: vec![NodeSelectorRequirement::new(
                "zone",
                NodeSelectorOperator::Exists,
                Vec::<String>::new(),
            )],
            ..NodeSelectorTerm::default()
        },
    }];
    let choice = |snapshot: &mut ClusterSnapshot, change: fn(&mut Policy)| {
        snapshot.set_policy(&policy(change));
        let node = snapshot.place(&req).unwrap();
        snapshot.release(&node, &req);
        node
    };
    assert_eq!(choice(&mut snapshot, |_| {}), "zoned");
    let ignore_taints = |p: &mut Policy| {
        p.weights
            .insert(scorer_names::TAINT_TOLERATION.to_owned(), 0);
    };
    // Fit (+~50 for soft) against the affinity's 30.
    assert_eq!(choice(&mut snapshot, ignore_taints), "soft");
    let affinity_counts_triple = |p: &mut Policy| {
        p.weights
            .insert(scorer_names::TAINT_TOLERATION.to_owned(), 0);
        p.weights.insert(scorer_names::NODE_AFFINITY.to_owned(), 3);
    };
    assert_eq!(choice(&mut snapshot, affinity_counts_triple), "zoned");
    let no_affinity_score = |p: &mut Policy| {
        p.disabled_scorers
            .insert(scorer_names::NODE_AFFINITY.to_owned());
        p.disabled_scorers
            .insert(scorer_names::TAINT_TOLERATION.to_owned());
    };
    assert_eq!(choice(&mut snapshot, no_affinity_score), "soft");
    // Without the fit score the leftover still breaks the tie.
    let nothing_scores = |p: &mut Policy| {
        for name in crate::policy::SCORERS {
            p.disabled_scorers.insert(name.to_owned());
        }
    };
    assert_eq!(choice(&mut snapshot, nothing_scores), "soft");
}

#[test]
fn percentage_of_nodes_to_score_bounds_the_scan() {
    let names = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"];
    let mut snapshot = snapshot_of(names.map(|name| host(name, &[])));
    snapshot.add_scorer(1, LastName);
    let req = request(100, GIB);
    assert_eq!(snapshot.place(&req).unwrap(), "n9");
    snapshot.release("n9", &req);
    // 30% of 10 nodes: the first three feasible by name are scored.
    snapshot.set_policy(&policy(|p| p.percentage_of_nodes_to_score = 30));
    assert_eq!(snapshot.place(&req).unwrap(), "n2");
    // At least one node, and always a feasible one.
    snapshot.set_policy(&policy(|p| p.percentage_of_nodes_to_score = 1));
    assert!(snapshot.allocate("n0", &request(4000, GIB)));
    assert_eq!(snapshot.place(&req).unwrap(), "n1");
    // The class indexes need no bound: without a node scorer all are judged.
    let mut indexed = snapshot_of(names.map(|name| host(name, &[])));
    indexed.set_policy(&policy(|p| p.percentage_of_nodes_to_score = 1));
    assert!(indexed.allocate("n7", &request(1000, GIB)));
    assert_eq!(indexed.place(&req).unwrap(), "n7");
}

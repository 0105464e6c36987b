use super::super::tests::{GIB, node, request, snapshot_of};
use super::*;
use crate::model::Protocol;

fn low(id: &str, priority: i32) -> PlacedInstance {
    PlacedInstance {
        id: id.to_owned(),
        priority,
        disruption_budget: None,
    }
}

fn no_budgets() -> BTreeMap<String, DisruptionBudget> {
    BTreeMap::new()
}

fn victims_on(
    snapshot: &ClusterSnapshot,
    req: &InstanceRequest,
    priority: i32,
) -> Option<(String, Vec<String>)> {
    snapshot
        .preempt(req, priority, &no_budgets())
        .map(|preemption| (preemption.node, preemption.victims))
}

fn owned(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

#[test]
fn fewest_victims_win_over_lower_priorities() {
    let mut snapshot = snapshot_of([node("a", 4000, 4 * GIB, 10), node("b", 4000, 4 * GIB, 10)]);
    // a: two small instances of priority 0; b: one big instance of priority 5.
    snapshot.allocate_instance("a", &request(2000, GIB), low("a-1", 0));
    snapshot.allocate_instance("a", &request(2000, GIB), low("a-2", 0));
    snapshot.allocate_instance("b", &request(4000, GIB), low("b-1", 5));
    let found = victims_on(&snapshot, &request(3000, GIB), 10);
    assert_eq!(found, Some(("b".to_owned(), owned(&["b-1"]))));
}

#[test]
fn lowest_priorities_win_among_equal_counts_then_the_sum() {
    let mut snapshot = snapshot_of([
        node("a", 4000, 4 * GIB, 10),
        node("b", 4000, 4 * GIB, 10),
        node("c", 4000, 4 * GIB, 10),
    ]);
    // Each node needs two victims for 3000m: highest priorities 3, 2 and 2.
    for (node, priorities) in [("a", [1, 3]), ("b", [2, 2]), ("c", [0, 2])] {
        for (index, priority) in priorities.into_iter().enumerate() {
            snapshot.allocate_instance(
                node,
                &request(2000, GIB),
                low(&format!("{node}-{index}"), priority),
            );
        }
    }
    let found = victims_on(&snapshot, &request(3000, GIB), 10);
    assert_eq!(found, Some(("c".to_owned(), owned(&["c-0", "c-1"]))));
}

#[test]
fn equal_costs_go_to_the_smallest_name() {
    let mut snapshot = snapshot_of([node("n2", 1000, GIB, 10), node("n1", 1000, GIB, 10)]);
    for node in ["n2", "n1"] {
        snapshot.allocate_instance(node, &request(1000, GIB), low(&format!("{node}-x"), 1));
    }
    let found = victims_on(&snapshot, &request(500, GIB / 2), 2);
    assert_eq!(found, Some(("n1".to_owned(), owned(&["n1-x"]))));
}

#[test]
fn the_cheapest_combination_on_a_node_is_exact() {
    let mut snapshot = snapshot_of([node("a", 10_000, 10 * GIB, 10)]);
    // Greedy by priority would take p0 (1000m) then p1 (1000m) then ...;
    // the one 6000m instance of priority 3 alone frees enough.
    snapshot.allocate_instance("a", &request(1000, GIB), low("p0", 0));
    snapshot.allocate_instance("a", &request(1000, GIB), low("p1", 1));
    snapshot.allocate_instance("a", &request(6000, GIB), low("p3", 3));
    snapshot.allocate_instance("a", &request(2000, GIB), low("p4", 4));
    let found = victims_on(&snapshot, &request(5000, GIB), 10);
    assert_eq!(found, Some(("a".to_owned(), owned(&["p3"]))));
}

#[test]
fn equal_or_higher_priorities_are_never_victims() {
    let mut snapshot = snapshot_of([node("a", 1000, GIB, 10)]);
    snapshot.allocate_instance("a", &request(1000, GIB), low("same", 5));
    assert_eq!(victims_on(&snapshot, &request(1000, GIB), 5), None);
    assert_eq!(victims_on(&snapshot, &request(1000, GIB), 4), None);
    assert_eq!(
        victims_on(&snapshot, &request(1000, GIB), 6),
        Some(("a".to_owned(), owned(&["same"])))
    );
}

#[test]
fn nothing_lower_means_no_preemption() {
    let mut snapshot = snapshot_of([node("a", 1000, GIB, 10)]);
    // Anonymous allocations are never victims.
    snapshot.allocate("a", &request(1000, GIB));
    assert_eq!(victims_on(&snapshot, &request(500, GIB / 2), 100), None);
    let empty = snapshot_of([]);
    assert_eq!(victims_on(&empty, &request(500, GIB / 2), 100), None);
}

#[test]
fn a_fitting_request_needs_no_victims() {
    let mut snapshot = snapshot_of([node("a", 1000, GIB, 10)]);
    snapshot.allocate_instance("a", &request(500, GIB / 2), low("x", 0));
    assert_eq!(
        victims_on(&snapshot, &request(500, GIB / 2), 1),
        Some(("a".to_owned(), Vec::new()))
    );
}

#[test]
fn disruption_budgets_limit_victims_per_group() {
    let mut snapshot = snapshot_of([node("a", 2000, 2 * GIB, 10), node("b", 4000, 4 * GIB, 10)]);
    let member = |id: &str, group: &str| PlacedInstance {
        disruption_budget: Some(group.to_owned()),
        ..low(id, 0)
    };
    // a needs both of web's members gone; b needs two of its four db members.
    snapshot.allocate_instance("a", &request(1000, GIB), member("web-1", "web"));
    snapshot.allocate_instance("a", &request(1000, GIB), member("web-2", "web"));
    for index in 0..4 {
        snapshot.allocate_instance(
            "b",
            &request(1000, GIB),
            member(&format!("db-{index}"), "db"),
        );
    }
    let budget = |max_unavailable, unavailable| DisruptionBudget {
        max_unavailable,
        unavailable,
    };
    let req = request(2000, 2 * GIB);
    let mut budgets = BTreeMap::from([
        ("web".to_owned(), budget(1, 0)),
        ("db".to_owned(), budget(3, 0)),
    ]);
    let found = snapshot.preempt(&req, 1, &budgets).unwrap();
    assert_eq!((found.node.as_str(), found.victims.len()), ("b", 2));
    budgets.insert("web".to_owned(), budget(2, 0));
    assert_eq!(snapshot.preempt(&req, 1, &budgets).unwrap().node, "a");
    // One db member already down: only two more may go, which is enough on b.
    budgets.insert("web".to_owned(), budget(2, 1));
    budgets.insert("db".to_owned(), budget(3, 1));
    assert_eq!(snapshot.preempt(&req, 1, &budgets).unwrap().node, "b");
    budgets.insert("db".to_owned(), budget(3, 2));
    assert_eq!(snapshot.preempt(&req, 1, &budgets), None);
    // A group the caller does not know is never disrupted.
    assert_eq!(snapshot.preempt(&req, 1, &no_budgets()), None);
}

#[test]
fn host_port_holders_are_victims_even_when_resources_suffice() {
    let port = HostPort {
        port: 80,
        protocol: Protocol::Tcp,
    };
    let with_port = |mut req: InstanceRequest| {
        req.host_ports = vec![port];
        req
    };
    let mut snapshot = snapshot_of([node("a", 4000, 4 * GIB, 10)]);
    snapshot.allocate_instance("a", &request(100, GIB / 8), low("cheap", 0));
    snapshot.allocate_instance("a", &with_port(request(100, GIB / 8)), low("web", 3));
    let found = victims_on(&snapshot, &with_port(request(100, GIB / 8)), 5);
    assert_eq!(found, Some(("a".to_owned(), owned(&["web"]))));
    // Held by an instance of equal priority: no preemption frees it.
    assert_eq!(
        victims_on(&snapshot, &with_port(request(100, GIB / 8)), 3),
        None
    );
}

#[test]
fn released_instances_give_back_by_id() {
    let mut snapshot = snapshot_of([node("a", 1000, GIB, 10)]);
    assert!(snapshot.allocate_instance("a", &request(1000, GIB), low("x", 0)));
    assert!(!snapshot.allocate_instance("missing", &request(1, 1), low("y", 0)));
    assert!(snapshot.release_instance("x"));
    assert!(!snapshot.release_instance("x"));
    assert_eq!(snapshot.free("a").unwrap().cpu_millis, 1000);
    assert_eq!(victims_on(&snapshot, &request(2000, GIB), 1), None);
    // A removed node takes its records along.
    snapshot.allocate_instance("a", &request(1000, GIB), low("z", 0));
    snapshot.remove_node("a");
    assert!(!snapshot.release_instance("z"));
}

//! Property test: on random small clusters (≤ 5 nodes, ≤ 6 recorded
//! instances each, host ports, disruption budgets, extended resources, a
//! node selector), a preemption's victims, once released, make `place`
//! choose the preemption's node, and a brute force over every subset of
//! every node finds no cheaper victim set: fewer victims, then a lower
//! highest priority, then a lower priority sum, then a smaller node name.

use std::collections::{BTreeMap, BTreeSet};

use c4m_sched::{
    ClusterSnapshot, DisruptionBudget, Filter, HostPort, HostPorts, InstanceRequest, NodeInfo,
    NodeSelector, NodeView, PlacedInstance, Protocol, Resources, ResourcesFit,
};
use proptest::prelude::*;

const GPU: &str = "nvidia.com/gpu";
const GROUPS: [&str; 3] = ["g0", "g1", "unknown"];

#[derive(Clone, Debug)]
struct Instance {
    request: InstanceRequest,
    priority: i32,
    group: Option<usize>,
}

#[derive(Clone, Debug)]
struct Case {
    nodes: Vec<(NodeInfo, Vec<Instance>)>,
    preemptor: InstanceRequest,
    priority: i32,
    budgets: BTreeMap<String, DisruptionBudget>,
}

fn port(number: u16) -> HostPort {
    HostPort {
        port: number,
        protocol: Protocol::Tcp,
    }
}

fn request_strategy() -> impl Strategy<Value = InstanceRequest> {
    (0u64..5, 0u64..5, 0u64..2, proptest::option::of(80u16..82)).prop_map(
        |(cpu, memory, gpu, host_port)| InstanceRequest {
            cpu_millis: cpu * 500,
            memory_bytes: memory * 256,
            extended: if gpu > 0 {
                BTreeMap::from([(GPU.to_owned(), gpu)])
            } else {
                BTreeMap::new()
            },
            host_ports: host_port.map(port).into_iter().collect(),
            driver: Some("process".to_owned()),
            ..InstanceRequest::default()
        },
    )
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let instance = (request_strategy(), 0i32..4, proptest::option::of(0usize..3)).prop_map(
        |(request, priority, group)| Instance {
            request,
            priority,
            group,
        },
    );
    let node = (
        1u64..5,
        1u64..5,
        0u64..2,
        1u64..6,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(instance, 0..=6),
    )
        .prop_map(|(cpu, memory, gpu, slots, ready, labelled, instances)| {
            let info = NodeInfo {
                name: String::new(),
                allocatable: Resources {
                    cpu_millis: cpu * 1000,
                    memory_bytes: memory * 512,
                    instances: slots,
                    extended: BTreeMap::from([(GPU.to_owned(), gpu)]),
                    ..Resources::default()
                },
                labels: if labelled {
                    BTreeMap::from([("disk".to_owned(), "ssd".to_owned())])
                } else {
                    BTreeMap::new()
                },
                drivers: BTreeSet::from(["process".to_owned()]),
                ready,
                ..NodeInfo::default()
            };
            (info, instances)
        });
    let budget = (0u64..3, 0u64..3).prop_map(|(max_unavailable, unavailable)| DisruptionBudget {
        max_unavailable,
        unavailable,
    });
    (
        proptest::collection::vec(node, 1..=5),
        request_strategy(),
        any::<bool>(),
        1i32..5,
        budget.clone(),
        budget,
    )
        .prop_map(|(nodes, mut preemptor, selective, priority, g0, g1)| {
            if selective {
                preemptor.node_selector = BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]);
            }
            let nodes = nodes
                .into_iter()
                .enumerate()
                .map(|(index, (mut info, instances))| {
                    // Names out of index order, so the name tie-break matters.
                    info.name = format!("n{}", (index * 3) % 5);
                    (info, instances)
                })
                .collect();
            Case {
                nodes,
                preemptor,
                priority,
                budgets: BTreeMap::from([(GROUPS[0].to_owned(), g0), (GROUPS[1].to_owned(), g1)]),
            }
        })
}

fn instance_id(node: usize, index: usize) -> String {
    format!("{node}/{index}")
}

fn snapshot_of(case: &Case) -> ClusterSnapshot {
    let mut snapshot = ClusterSnapshot::new();
    for (node_index, (info, instances)) in case.nodes.iter().enumerate() {
        snapshot.upsert_node(info.clone());
        for (index, instance) in instances.iter().enumerate() {
            snapshot.allocate_instance(
                &info.name,
                &instance.request,
                PlacedInstance {
                    id: instance_id(node_index, index),
                    priority: instance.priority,
                    disruption_budget: instance.group.map(|group| GROUPS[group].to_owned()),
                },
            );
        }
    }
    snapshot
}

/// (count, highest priority, priority sum, node name) of the cheapest
/// victim set over all nodes and subsets, if any.
fn brute_force(case: &Case) -> Option<(usize, i32, i64, String)> {
    let mut best: Option<(usize, i32, i64, String)> = None;
    for (info, instances) in &case.nodes {
        if !info.ready {
            continue;
        }
        let empty = (Resources::default(), BTreeMap::new());
        let class_view = NodeView {
            info,
            used: &empty.0,
            host_ports_in_use: &empty.1,
        };
        if !NodeSelector
            .unfit_reasons(&case.preemptor, &class_view)
            .is_empty()
        {
            continue;
        }
        for subset in 0u32..(1 << instances.len()) {
            let chosen = |index: usize| subset & (1 << index) != 0;
            let mut per_group = [0u64; 3];
            let mut allowed = true;
            let mut used = Resources::default();
            let mut host_ports: BTreeMap<HostPort, usize> = BTreeMap::new();
            let (mut count, mut highest, mut sum) = (0usize, i32::MIN, 0i64);
            for (index, instance) in instances.iter().enumerate() {
                if chosen(index) {
                    allowed &= instance.priority < case.priority;
                    if let Some(group) = instance.group {
                        per_group[group] += 1;
                    }
                    count += 1;
                    highest = highest.max(instance.priority);
                    sum += i64::from(instance.priority);
                } else {
                    used = used.saturating_add(&instance.request.resources());
                    for port in &instance.request.host_ports {
                        *host_ports.entry(*port).or_default() += 1;
                    }
                }
            }
            for (group, taken) in per_group.iter().enumerate() {
                let allowance = case
                    .budgets
                    .get(GROUPS[group])
                    .map_or(0, DisruptionBudget::allowed_disruptions);
                allowed &= *taken <= allowance;
            }
            let view = NodeView {
                info,
                used: &used,
                host_ports_in_use: &host_ports,
            };
            let fits = ResourcesFit
                .unfit_reasons(&case.preemptor, &view)
                .is_empty()
                && HostPorts.unfit_reasons(&case.preemptor, &view).is_empty();
            let key = (count, highest, sum, info.name.clone());
            if allowed && fits && best.as_ref().is_none_or(|best| key < *best) {
                best = Some(key);
            }
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn preemption_is_minimal_and_makes_room(case in case_strategy()) {
        let snapshot = snapshot_of(&case);
        let found = snapshot.preempt(&case.preemptor, case.priority, &case.budgets);
        let expected = brute_force(&case);
        let Some(preemption) = found else {
            prop_assert!(expected.is_none(), "missed {expected:?}");
            return Ok(());
        };
        let Some((count, highest, sum, name)) = expected else {
            return Err(TestCaseError::fail(format!("no victim set exists, got {preemption:?}")));
        };
        let instances: BTreeMap<String, &Instance> = case
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(node, (_, instances))| {
                instances.iter().enumerate().map(move |(index, instance)| (instance_id(node, index), instance))
            })
            .collect();
        let priorities: Vec<i32> = preemption.victims.iter().map(|id| instances[id].priority).collect();
        prop_assert!(priorities.iter().all(|priority| *priority < case.priority));
        prop_assert_eq!(preemption.victims.len(), count);
        if count > 0 {
            prop_assert_eq!(priorities.iter().copied().max(), Some(highest));
            prop_assert_eq!(priorities.iter().map(|p| i64::from(*p)).sum::<i64>(), sum);
            prop_assert_eq!(&preemption.node, &name);
        }
        let mut released = snapshot_of(&case);
        for victim in &preemption.victims {
            prop_assert!(released.release_instance(victim));
        }
        prop_assert_eq!(released.place(&case.preemptor).ok(), Some(preemption.node));
    }
}

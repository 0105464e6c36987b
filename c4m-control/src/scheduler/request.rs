//! From Kubernetes objects to what `c4m-sched` works with: a Pod's needs
//! ([`request`]) and a Node's description ([`node_info`]).
//!
//! An instance's fields the scheduler cannot honour faithfully are refused
//! with the field's path rather than ignored (an ignored field would widen
//! or empty a constraint); a node's malformed fields are skipped, since
//! they come from its agent and must not stop scheduling elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use c4m_sched::{
    HostPort, InstanceAffinityTerm, InstanceRequest, LabelSelector, LabelSelectorOperator,
    LabelSelectorRequirement, NODE_NAME_FIELD, NodeInfo, NodeSelectorOperator,
    NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm, Protocol, Resources,
    Strategy, Taint, TaintEffect, Toleration, TolerationOperator, TopologySpreadConstraint,
    WeightedInstanceAffinityTerm, WhenUnsatisfiable,
};
use k8s_openapi::api::core::v1::{self as core, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde::Deserialize;
use serde_json::Value;

use crate::objects::{name_of, namespace_of};
use crate::pods::{is_ready, labels};

/// Pod annotation choosing how to pick among fitting nodes: `bestfit`
/// (the default) or `spread`.
pub(super) const PLACEMENT_STRATEGY: &str = "c4m.io/placement-strategy";

/// The resource name of local ephemeral storage.
const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// The taint of a cordoned node (`spec.unschedulable`), as Kubernetes'
/// node lifecycle controller sets it; daemon pods tolerate it.
pub(crate) const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// The scheduler's view of an instance's needs.
pub(crate) fn request(pod: &Value) -> std::result::Result<InstanceRequest, String> {
    let spec: PodSpec = PodSpec::deserialize(&pod["spec"]).map_err(|e| format!("spec: {e}"))?;
    let requests = c4m_core::pod_requests(&spec).map_err(|e| e.to_string())?;
    let (ephemeral_storage_bytes, extended) = other_requests(&spec)?;
    let node_affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref());
    let required_affinity = node_affinity
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|required| {
            required
                .node_selector_terms
                .iter()
                .map(node_selector_term)
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let preferred_affinity = node_affinity
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
        .iter()
        .map(|term| {
            Ok(PreferredSchedulingTerm {
                weight: i64::from(term.weight),
                preference: node_selector_term(&term.preference)?,
            })
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let tolerations = spec
        .tolerations
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(toleration)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let own_labels = labels(pod);
    let instance_terms = InstanceTerms {
        labels: &own_labels,
    };
    let pod_affinity = spec.affinity.as_ref().and_then(|a| a.pod_affinity.as_ref());
    let pod_anti_affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref());
    const AFFINITY: &str = "affinity.podAffinity";
    const ANTI_AFFINITY: &str = "affinity.podAntiAffinity";
    Ok(InstanceRequest {
        cpu_millis: requests.cpu_millis,
        memory_bytes: requests.memory_bytes,
        ephemeral_storage_bytes,
        extended,
        required_affinity,
        preferred_affinity,
        tolerations,
        host_ports: host_ports(&spec)?,
        strategy: strategy(pod)?,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        driver: spec.runtime_class_name.clone().filter(|d| !d.is_empty()),
        namespace: namespace_of(pod).to_owned(),
        required_instance_affinity: instance_terms.required(
            AFFINITY,
            pod_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        required_instance_anti_affinity: instance_terms.required(
            ANTI_AFFINITY,
            pod_anti_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        preferred_instance_affinity: instance_terms.preferred(
            AFFINITY,
            pod_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        preferred_instance_anti_affinity: instance_terms.preferred(
            ANTI_AFFINITY,
            pod_anti_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        volume_nodes: None,
        topology_spread: spec
            .topology_spread_constraints
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(index, constraint)| instance_terms.spread(index, constraint))
            .collect::<std::result::Result<_, _>>()?,
        labels: own_labels.clone(),
    })
}

/// Maps the terms of inter-instance rules, which may refer to the
/// instance's own label values (`matchLabelKeys`, `mismatchLabelKeys`).
struct InstanceTerms<'a> {
    labels: &'a BTreeMap<String, String>,
}

impl InstanceTerms<'_> {
    fn required(
        &self,
        field: &str,
        terms: Option<&[core::PodAffinityTerm]>,
    ) -> std::result::Result<Vec<InstanceAffinityTerm>, String> {
        let field = format!("{field}.requiredDuringSchedulingIgnoredDuringExecution");
        terms
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(index, term)| self.term(&format!("{field}[{index}]"), term))
            .collect()
    }

    fn preferred(
        &self,
        field: &str,
        terms: Option<&[core::WeightedPodAffinityTerm]>,
    ) -> std::result::Result<Vec<WeightedInstanceAffinityTerm>, String> {
        let field = format!("{field}.preferredDuringSchedulingIgnoredDuringExecution");
        terms
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(index, weighted)| {
                Ok(WeightedInstanceAffinityTerm {
                    weight: i64::from(weighted.weight),
                    term: self.term(
                        &format!("{field}[{index}].podAffinityTerm"),
                        &weighted.pod_affinity_term,
                    )?,
                })
            })
            .collect()
    }

    /// One term. A `namespaceSelector` with labels would need the
    /// namespaces' labels; it is refused rather than guessed.
    fn term(
        &self,
        field: &str,
        term: &core::PodAffinityTerm,
    ) -> std::result::Result<InstanceAffinityTerm, String> {
        let all_namespaces = match &term.namespace_selector {
            None => false,
            Some(selector) if is_empty_selector(selector) => true,
            Some(_) => {
                return Err(format!(
                    "{field}.namespaceSelector: only the empty selector (all namespaces) is supported"
                ));
            }
        };
        let mut selector = term
            .label_selector
            .as_ref()
            .map(|selector| label_selector(&format!("{field}.labelSelector"), selector))
            .transpose()?;
        if let Some(selector) = &mut selector {
            for (keys, operator) in [
                (&term.match_label_keys, LabelSelectorOperator::In),
                (&term.mismatch_label_keys, LabelSelectorOperator::NotIn),
            ] {
                self.fold_label_keys(selector, keys.as_deref().unwrap_or_default(), operator);
            }
        }
        Ok(InstanceAffinityTerm {
            label_selector: selector,
            namespaces: term.namespaces.clone().unwrap_or_default(),
            all_namespaces,
            topology_key: term.topology_key.clone(),
        })
    }

    fn spread(
        &self,
        index: usize,
        constraint: &core::TopologySpreadConstraint,
    ) -> std::result::Result<TopologySpreadConstraint, String> {
        let field = format!("topologySpreadConstraints[{index}]");
        let max_skew = u32::try_from(constraint.max_skew)
            .ok()
            .filter(|skew| *skew > 0)
            .ok_or_else(|| format!("{field}.maxSkew: must be at least 1"))?;
        let when_unsatisfiable = match constraint.when_unsatisfiable.as_str() {
            "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
            "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
            other => {
                return Err(format!(
                    "{field}.whenUnsatisfiable: unknown value {other:?} (DoNotSchedule or ScheduleAnyway)"
                ));
            }
        };
        let mut selector = constraint
            .label_selector
            .as_ref()
            .map(|selector| label_selector(&format!("{field}.labelSelector"), selector))
            .transpose()?;
        if let Some(selector) = &mut selector {
            let keys = constraint.match_label_keys.as_deref().unwrap_or_default();
            self.fold_label_keys(selector, keys, LabelSelectorOperator::In);
        }
        Ok(TopologySpreadConstraint {
            max_skew,
            topology_key: constraint.topology_key.clone(),
            when_unsatisfiable,
            label_selector: selector,
        })
    }

    /// Adds `key operator [own value]` for each of `keys` the instance has
    /// a label for, as Kubernetes does for `matchLabelKeys` (In) and
    /// `mismatchLabelKeys` (NotIn).
    fn fold_label_keys(
        &self,
        selector: &mut LabelSelector,
        keys: &[String],
        operator: LabelSelectorOperator,
    ) {
        for key in keys {
            if let Some(value) = self.labels.get(key) {
                selector.match_expressions.push(LabelSelectorRequirement {
                    key: key.clone(),
                    operator,
                    values: vec![value.clone()],
                });
            }
        }
    }
}

fn is_empty_selector(selector: &meta::LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// A Kubernetes label selector; an unknown operator is an error naming `field`.
fn label_selector(
    field: &str,
    selector: &meta::LabelSelector,
) -> std::result::Result<LabelSelector, String> {
    let match_expressions = selector
        .match_expressions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, requirement)| {
            let operator = match requirement.operator.as_str() {
                "In" => LabelSelectorOperator::In,
                "NotIn" => LabelSelectorOperator::NotIn,
                "Exists" => LabelSelectorOperator::Exists,
                "DoesNotExist" => LabelSelectorOperator::DoesNotExist,
                other => {
                    return Err(format!(
                        "{field}.matchExpressions[{index}].operator: unknown operator {other:?}"
                    ));
                }
            };
            Ok(LabelSelectorRequirement {
                key: requirement.key.clone(),
                operator,
                values: requirement.values.clone().unwrap_or_default(),
            })
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

/// Ephemeral storage (bytes) and extended resources (names with a domain,
/// like `nvidia.com/gpu`: integer counts) summed over the containers, each
/// container's request falling back to its limit.
fn other_requests(spec: &PodSpec) -> std::result::Result<(u64, BTreeMap<String, u64>), String> {
    let mut ephemeral_storage_bytes = 0u64;
    let mut extended: BTreeMap<String, u64> = BTreeMap::new();
    for (index, container) in spec.containers.iter().enumerate() {
        let Some(resources) = &container.resources else {
            continue;
        };
        // Limits first so that requests overwrite them.
        let mut effective: BTreeMap<&str, &str> = BTreeMap::new();
        for amounts in [&resources.limits, &resources.requests]
            .into_iter()
            .flatten()
        {
            for (name, quantity) in amounts {
                effective.insert(name, &quantity.0);
            }
        }
        for (name, quantity) in effective {
            let invalid = |e: &dyn std::fmt::Display| {
                format!("containers[{index}].resources.requests.{name}: {e}")
            };
            let total = if name == EPHEMERAL_STORAGE {
                &mut ephemeral_storage_bytes
            } else if name.contains('/') {
                extended.entry(name.to_owned()).or_default()
            } else {
                continue;
            };
            let amount = if name == EPHEMERAL_STORAGE {
                c4m_core::parse_memory_bytes(quantity).map_err(|e| invalid(&e))?
            } else {
                quantity.parse::<u64>().map_err(|e| invalid(&e))?
            };
            *total = total
                .checked_add(amount)
                .ok_or_else(|| invalid(&"total overflows"))?;
        }
    }
    Ok((ephemeral_storage_bytes, extended))
}

/// A node selector term. `matchFields` may only name `metadata.name`
/// (what Kubernetes allows, and what DaemonSet instances use).
pub(crate) fn node_selector_term(
    term: &core::NodeSelectorTerm,
) -> std::result::Result<NodeSelectorTerm, String> {
    let requirements = |list: &Option<Vec<core::NodeSelectorRequirement>>, what: &str| {
        list.as_deref()
            .unwrap_or_default()
            .iter()
            .map(|requirement| node_selector_requirement(requirement, what))
            .collect::<std::result::Result<Vec<_>, _>>()
    };
    let match_fields = requirements(&term.match_fields, "matchFields")?;
    if let Some(field) = match_fields.iter().find(|r| r.key != NODE_NAME_FIELD) {
        return Err(format!(
            "affinity.nodeAffinity: matchFields key {:?} is not supported (only {NODE_NAME_FIELD})",
            field.key
        ));
    }
    Ok(NodeSelectorTerm {
        match_expressions: requirements(&term.match_expressions, "matchExpressions")?,
        match_fields,
    })
}

fn node_selector_requirement(
    requirement: &core::NodeSelectorRequirement,
    what: &str,
) -> std::result::Result<NodeSelectorRequirement, String> {
    let operator = match requirement.operator.as_str() {
        "In" => NodeSelectorOperator::In,
        "NotIn" => NodeSelectorOperator::NotIn,
        "Exists" => NodeSelectorOperator::Exists,
        "DoesNotExist" => NodeSelectorOperator::DoesNotExist,
        "Gt" => NodeSelectorOperator::Gt,
        "Lt" => NodeSelectorOperator::Lt,
        other => {
            return Err(format!(
                "affinity.nodeAffinity: unknown {what} operator {other:?} for key {:?}",
                requirement.key
            ));
        }
    };
    Ok(NodeSelectorRequirement::new(
        requirement.key.clone(),
        operator,
        requirement.values.clone().unwrap_or_default(),
    ))
}

fn taint_effect(effect: &str) -> std::result::Result<TaintEffect, String> {
    match effect {
        "NoSchedule" => Ok(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
        "NoExecute" => Ok(TaintEffect::NoExecute),
        other => Err(format!("unknown taint effect {other:?}")),
    }
}

fn toleration(toleration: &core::Toleration) -> std::result::Result<Toleration, String> {
    let invalid = |e: String| format!("tolerations: {e}");
    let operator = match toleration.operator.as_deref() {
        None | Some("") | Some("Equal") => TolerationOperator::Equal,
        Some("Exists") => TolerationOperator::Exists,
        Some(other) => return Err(invalid(format!("unknown operator {other:?}"))),
    };
    let effect = match toleration.effect.as_deref() {
        None | Some("") => None,
        Some(effect) => Some(taint_effect(effect).map_err(invalid)?),
    };
    Ok(Toleration {
        key: toleration.key.clone().unwrap_or_default(),
        operator,
        value: toleration.value.clone().unwrap_or_default(),
        effect,
    })
}

/// The host ports the containers bind (ports without `hostPort` bind none).
fn host_ports(spec: &PodSpec) -> std::result::Result<Vec<HostPort>, String> {
    let mut ports = Vec::new();
    for container in &spec.containers {
        for port in container.ports.as_deref().unwrap_or_default() {
            let Some(host_port) = port.host_port.filter(|p| *p != 0) else {
                continue;
            };
            let invalid = |what: &str| format!("containers[{}].ports: {what}", container.name);
            let protocol = match port.protocol.as_deref() {
                None | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                Some(other) => return Err(invalid(&format!("unknown protocol {other:?}"))),
            };
            let port = u16::try_from(host_port)
                .map_err(|_| invalid(&format!("hostPort {host_port} is out of range")))?;
            ports.push(HostPort { port, protocol });
        }
    }
    Ok(ports)
}

/// The pod's placement strategy annotation (best fit when absent).
/// The strategy the annotation names; without one, the policy's
/// `defaultStrategy`, which the caller applies ([`Scheduler::request`]).
fn strategy(pod: &Value) -> std::result::Result<Strategy, String> {
    match pod["metadata"]["annotations"][PLACEMENT_STRATEGY].as_str() {
        None | Some("bestfit") => Ok(Strategy::BestFit),
        Some("spread") => Ok(Strategy::Spread),
        Some(other) => Err(format!(
            "annotation {PLACEMENT_STRATEGY}: unknown strategy {other:?} (bestfit or spread)"
        )),
    }
}

/// The scheduler's view of a node. Unparsable quantities count as zero (an
/// absent ephemeral storage as unlimited) and
/// malformed taints are skipped: a node's status comes from its agent, and
/// one bad field must not stop scheduling elsewhere. A cordoned node
/// carries [`UNSCHEDULABLE_TAINT`] (`NoSchedule`), so that a pending
/// instance is told so, and an instance tolerating it may still go there.
pub(crate) fn node_info(node: &Value) -> NodeInfo {
    let allocatable = &node["status"]["allocatable"];
    let quantity = |field: &str, parse: fn(&str) -> c4m_core::Result<u64>| {
        allocatable[field]
            .as_str()
            .and_then(|q| parse(q).ok())
            .unwrap_or(0)
    };
    let drivers: BTreeSet<String> = node["metadata"]["annotations"][c4m_core::annotations::DRIVERS]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter_map(|d| d.split('=').next())
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    let extended = allocatable
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.contains('/'))
        .filter_map(|(name, amount)| {
            let amount = amount
                .as_str()
                .and_then(|a| a.parse().ok())
                .or_else(|| amount.as_u64())?;
            Some((name.clone(), amount))
        })
        .collect();
    let mut taints: Vec<Taint> = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|taint| {
            Some(Taint {
                key: taint["key"].as_str()?.to_owned(),
                value: taint["value"].as_str().unwrap_or_default().to_owned(),
                effect: taint_effect(taint["effect"].as_str()?).ok()?,
            })
        })
        .collect();
    let cordon = Taint {
        key: UNSCHEDULABLE_TAINT.to_owned(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    };
    if node["spec"]["unschedulable"] == true && !taints.contains(&cordon) {
        taints.push(cordon);
    }
    NodeInfo {
        name: name_of(node).to_string(),
        allocatable: Resources {
            cpu_millis: quantity("cpu", c4m_core::parse_cpu_millis),
            memory_bytes: quantity("memory", c4m_core::parse_memory_bytes),
            // Agents do not report ephemeral storage yet: a node that does not
            // say is not limited, rather than refusing every request for it.
            ephemeral_storage_bytes: if allocatable[EPHEMERAL_STORAGE].is_null() {
                u64::MAX
            } else {
                quantity(EPHEMERAL_STORAGE, c4m_core::parse_memory_bytes)
            },
            instances: allocatable["pods"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .or_else(|| allocatable["pods"].as_u64())
                .unwrap_or(110),
            extended,
        },
        labels: labels(node),
        drivers,
        taints,
        ready: is_ready(node),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pod_fields_map_to_the_request() {
        let pod = json!({
            "metadata": {"name": "train", "annotations": {PLACEMENT_STRATEGY: "spread"}},
            "spec": {
                "containers": [
                    {
                        "name": "a",
                        "ports": [
                            {"containerPort": 8080, "hostPort": 80},
                            {"containerPort": 53, "hostPort": 53, "protocol": "UDP"},
                            {"containerPort": 9000}
                        ],
                        "resources": {
                            "requests": {"cpu": "500m", "ephemeral-storage": "1Gi", "nvidia.com/gpu": "1"},
                            "limits": {"nvidia.com/gpu": "1", "example.com/fpga": "2"}
                        }
                    },
                    {"name": "b", "resources": {"limits": {"ephemeral-storage": "512Mi", "nvidia.com/gpu": "2"}}}
                ],
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
                    {"operator": "Exists"}
                ],
                "affinity": {"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
                        {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["32"]}]}
                    ]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 20, "preference": {"matchExpressions": [
                            {"key": "zone", "operator": "In", "values": ["a"]}
                        ]}}
                    ]
                }}
            }
        });
        let request = request(&pod).unwrap();
        assert_eq!(request.cpu_millis, 500);
        assert_eq!(request.ephemeral_storage_bytes, (1 << 30) + (512 << 20));
        assert_eq!(
            request.extended,
            BTreeMap::from([
                ("example.com/fpga".to_owned(), 2),
                ("nvidia.com/gpu".to_owned(), 3)
            ])
        );
        assert_eq!(
            request.host_ports,
            [
                HostPort {
                    port: 80,
                    protocol: Protocol::Tcp
                },
                HostPort {
                    port: 53,
                    protocol: Protocol::Udp
                }
            ]
        );
        assert_eq!(request.strategy, Strategy::Spread);
        assert_eq!(request.tolerations.len(), 2);
        assert_eq!(request.tolerations[0].effect, Some(TaintEffect::NoSchedule));
        assert_eq!(request.tolerations[1].operator, TolerationOperator::Exists);
        assert!(request.tolerations[1].key.is_empty());
        assert_eq!(request.required_affinity.len(), 2);
        assert_eq!(
            request.required_affinity[1].match_expressions[0].operator,
            NodeSelectorOperator::Gt
        );
        assert_eq!(request.preferred_affinity[0].weight, 20);
    }

    #[test]
    fn invalid_pod_fields_are_reasons_not_panics() {
        let with =
            |metadata: Value, spec: Value| request(&json!({"metadata": metadata, "spec": spec}));
        let container = json!([{"name": "a"}]);
        let error = with(
            json!({"annotations": {PLACEMENT_STRATEGY: "random"}}),
            json!({"containers": container}),
        )
        .unwrap_err();
        assert!(error.contains("unknown strategy \"random\""), "{error}");
        let error = with(
            json!({}),
            json!({"containers": [{"name": "a", "resources": {"requests": {"nvidia.com/gpu": "1.5"}}}]}),
        )
        .unwrap_err();
        assert!(error.contains("nvidia.com/gpu"), "{error}");
        let error = with(
            json!({}),
            json!({"containers": container, "tolerations": [{"key": "k", "operator": "Maybe"}]}),
        )
        .unwrap_err();
        assert!(error.contains("unknown operator \"Maybe\""), "{error}");
        assert!(
            with(json!({}), json!({"containers": container}))
                .unwrap()
                .strategy
                == Strategy::BestFit
        );
    }

    #[test]
    fn node_fields_map_to_node_info() {
        let node = json!({
            "metadata": {"name": "n1", "labels": {"gpu": "true"}},
            "spec": {"taints": [
                {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
                {"key": "spot", "effect": "PreferNoSchedule"},
                {"key": "broken", "effect": "Sometimes"}
            ]},
            "status": {
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10",
                                "ephemeral-storage": "20Gi", "nvidia.com/gpu": "2"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        let info = node_info(&node);
        assert_eq!(info.allocatable.ephemeral_storage_bytes, 20 << 30);
        assert_eq!(info.allocatable.extended("nvidia.com/gpu"), 2);
        assert_eq!(
            info.taints,
            [
                Taint {
                    key: "dedicated".to_owned(),
                    value: "ml".to_owned(),
                    effect: TaintEffect::NoSchedule
                },
                Taint {
                    key: "spot".to_owned(),
                    value: String::new(),
                    effect: TaintEffect::PreferNoSchedule
                },
            ]
        );
        let unreported =
            node_info(&json!({"metadata": {"name": "n2"}, "status": {"allocatable": {}}}));
        assert_eq!(unreported.allocatable.ephemeral_storage_bytes, u64::MAX);
        assert!(unreported.allocatable.extended.is_empty());
    }

    #[test]
    fn a_cordoned_node_is_ready_and_tainted_unschedulable() {
        let cordoned = |taints: Value| {
            node_info(&json!({
                "metadata": {"name": "n1"},
                "spec": {"unschedulable": true, "taints": taints},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }))
        };
        let unschedulable = Taint {
            key: UNSCHEDULABLE_TAINT.to_owned(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        };
        let info = cordoned(json!([]));
        assert!(info.ready, "cordoned is not down");
        assert_eq!(info.taints, std::slice::from_ref(&unschedulable));
        // Already tainted (as Kubernetes' controller does): not twice.
        let tainted = cordoned(json!([{"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}]));
        assert_eq!(tainted.taints, [unschedulable]);
    }

    #[test]
    fn inter_instance_rules_and_spread_map_to_the_request() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web", "rev": "7"}},
            "spec": {
                "containers": [{"name": "c", "image": "x"}],
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
                    ]}},
                    "podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [{
                            "labelSelector": {"matchLabels": {"app": "web"}},
                            "matchLabelKeys": ["rev"],
                            "topologyKey": "kubernetes.io/hostname",
                        }],
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 30,
                            "podAffinityTerm": {"labelSelector": {"matchExpressions": [
                                {"key": "tier", "operator": "Exists"}
                            ]}, "namespaceSelector": {}, "topologyKey": "zone"},
                        }],
                    },
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"app": "cache"}},
                        "namespaces": ["infra"],
                        "topologyKey": "zone",
                    }]},
                },
                "topologySpreadConstraints": [{
                    "maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app": "web"}},
                }],
            },
        });
        let request = request(&pod).unwrap();
        assert_eq!(request.namespace, "shop");
        assert_eq!(request.labels["app"], "web");
        assert_eq!(
            request.required_affinity[0].match_fields[0].key,
            NODE_NAME_FIELD
        );
        let anti = &request.required_instance_anti_affinity[0];
        assert_eq!(anti.topology_key, "kubernetes.io/hostname");
        let selector = anti.label_selector.as_ref().unwrap();
        assert_eq!(selector.match_labels["app"], "web");
        // matchLabelKeys folds the instance's own value in.
        assert_eq!(selector.match_expressions[0].values, ["7"]);
        let preferred = &request.preferred_instance_anti_affinity[0];
        assert_eq!(preferred.weight, 30);
        assert!(preferred.term.all_namespaces);
        assert_eq!(request.required_instance_affinity[0].namespaces, ["infra"]);
        let spread = &request.topology_spread[0];
        assert_eq!((spread.max_skew, spread.topology_key.as_str()), (2, "zone"));
        assert_eq!(spread.when_unsatisfiable, WhenUnsatisfiable::ScheduleAnyway);
    }

    #[test]
    fn unsupported_inter_instance_fields_are_refused_by_path() {
        let with = |spec: Value| {
            let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
            for (key, value) in spec.as_object().unwrap() {
                pod["spec"][key] = value.clone();
            }
            request(&pod).unwrap_err()
        };
        let error = with(
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"namespaceSelector": {"matchLabels": {"team": "a"}}, "topologyKey": "zone"}
            ]}}}),
        );
        assert!(error.starts_with("affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].namespaceSelector"), "{error}");
        let error = with(json!({"topologySpreadConstraints": [
            {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
        ]}));
        assert_eq!(
            error,
            "topologySpreadConstraints[0].maxSkew: must be at least 1"
        );
        let error = with(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]}
            ]}}}}),
        );
        assert!(
            error.contains("matchFields key \"metadata.uid\""),
            "{error}"
        );
    }
}

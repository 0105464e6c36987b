//! What one request's label rules make of the nodes: node selector, node
//! affinity (required and preferred), inter-instance affinity and
//! anti-affinity, and topology spread. Everything that needs the accounted
//! instances is counted once per request, by topology domain, so judging a
//! node is a few lookups.
//!
//! The rules read nodes through [`NodeFacts`], so a class's generic node
//! answers for all of its members but the *exceptions*: the nodes whose
//! per-node label value (or name) the request names, directly or as a
//! topology domain it counts. Those are judged one by one.

use foldhash::{HashMap, HashSet};

use super::{ClassId, ClusterSnapshot, Knobs, NodeState, ShapeClass};
use crate::affinity::{NODE_NAME_FIELD, NodeSelectorOperator, NodeSelectorTerm};
use crate::filters::{node_selector_matches, required_node_affinity_matches};
use crate::instance_affinity::{TopologySpreadConstraint, WhenUnsatisfiable};
use crate::labels::{LabelValue, NodeFacts};
use crate::model::InstanceRequest;
use crate::scorers::preferred_node_affinity_score;
use crate::unschedulable::UnfitReason;

/// Domain values of one topology key.
type Domains<'a> = HashSet<&'a str>;

/// The scores the rules give a node that passes them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RuleScores {
    /// Preferred node affinity, weighted.
    pub(super) weighted: i64,
    /// Preferred inter-instance (anti-)affinity, raw: normalised over the
    /// feasible nodes before it counts.
    pub(super) instance_affinity: i64,
    /// Matching instances in the node's domains of the `ScheduleAnyway`
    /// constraints, raw; `None` when the node lacks one of their keys.
    pub(super) spread: Option<i64>,
}

/// The request's inter-instance rules, counted by domain.
#[derive(Debug, Default)]
struct InstanceRules<'a> {
    /// Per required affinity term: its topology key and the domains running
    /// an instance that every term selects.
    affinity: Vec<(&'a str, Domains<'a>)>,
    /// No instance is selected by every term and the incoming instance is:
    /// the first of a group that attracts itself may go anywhere.
    affinity_self_satisfied: bool,
    /// Domains running instances the request's anti-affinity selects.
    anti_affinity: HashMap<&'a str, Domains<'a>>,
    /// Domains running instances whose anti-affinity selects the request.
    existing_anti_affinity: HashMap<&'a str, Domains<'a>>,
    /// Per topology key and domain: the preferred terms' weight times the
    /// instances they select there (anti-affinity negative).
    preferred: HashMap<&'a str, HashMap<&'a str, i64>>,
}

/// One spread constraint, counted.
#[derive(Debug)]
struct SpreadCounts<'a> {
    constraint: &'a TopologySpreadConstraint,
    /// Matching instances per domain (eligible nodes only); absent is 0.
    counts: HashMap<&'a str, u64>,
    /// The fewest matching instances of an eligible domain; `None` when no
    /// node is eligible.
    fewest: Option<u64>,
    /// 1 if the incoming instance matches the selector itself.
    self_match: u64,
}

impl SpreadCounts<'_> {
    fn count(&self, value: LabelValue<'_>) -> Option<u64> {
        match value {
            LabelValue::Absent => None,
            LabelValue::Is(value) => Some(self.counts.get(value).copied().unwrap_or(0)),
            LabelValue::Unnamed => Some(0),
        }
    }
}

/// A request's rules, ready to judge nodes.
#[derive(Debug)]
pub(super) struct RequestRules<'a> {
    req: &'a InstanceRequest,
    knobs: Knobs,
    /// Nodes a class's generic node does not stand for.
    pub(super) exceptions: HashSet<&'a str>,
    /// A rule no generic node can answer (`Gt`/`Lt` on a per-node label or
    /// the name): every node must be judged on its own.
    pub(super) judge_every_node: bool,
    instance: InstanceRules<'a>,
    spread_filters: Vec<SpreadCounts<'a>>,
    spread_scorers: Vec<SpreadCounts<'a>>,
}

impl<'a> RequestRules<'a> {
    /// Counts what `req` needs from `snapshot`'s books.
    pub(super) fn new(snapshot: &'a ClusterSnapshot, req: &'a InstanceRequest) -> Self {
        let knobs = snapshot.knobs;
        let mut rules = Self {
            req,
            knobs,
            exceptions: HashSet::default(),
            judge_every_node: false,
            instance: InstanceRules::default(),
            spread_filters: Vec::new(),
            spread_scorers: Vec::new(),
        };
        rules.note_node_label_rules(snapshot);
        // Spread eligibility reads only the node selector and affinity, whose
        // exceptions are known by now.
        if knobs.topology_spread {
            rules.spread_filters =
                rules.count_spread(snapshot, WhenUnsatisfiable::DoNotSchedule, true);
        }
        if knobs.topology_spread_weight != 0 {
            rules.spread_scorers =
                rules.count_spread(snapshot, WhenUnsatisfiable::ScheduleAnyway, false);
        }
        rules.instance = InstanceRules::new(snapshot, req, knobs);
        let counted = rules.spread_filters.iter().chain(&rules.spread_scorers);
        let spread_domains = counted.flat_map(|spread| {
            let key = spread.constraint.topology_key.as_str();
            spread.counts.keys().map(move |value| (key, *value))
        });
        for (key, value) in rules.instance.named_domains().chain(spread_domains) {
            note_value(&mut rules.exceptions, snapshot, key, value);
        }
        rules
    }

    /// Notes the exceptions of the node selector and node affinity.
    fn note_node_label_rules(&mut self, snapshot: &'a ClusterSnapshot) {
        let req = self.req;
        for (key, value) in &req.node_selector {
            note_value(&mut self.exceptions, snapshot, key, value);
        }
        let terms = req
            .required_affinity
            .iter()
            .chain(req.preferred_affinity.iter().map(|term| &term.preference));
        for term in terms {
            self.note_term(snapshot, term);
        }
    }

    fn note_term(&mut self, snapshot: &'a ClusterSnapshot, term: &'a NodeSelectorTerm) {
        let numeric = |operator| {
            matches!(
                operator,
                NodeSelectorOperator::Gt | NodeSelectorOperator::Lt
            )
        };
        for requirement in &term.match_expressions {
            if !snapshot.per_node_label_keys.contains(&requirement.key) {
                continue;
            }
            if numeric(requirement.operator) {
                self.judge_every_node = true;
            }
            for value in &requirement.values {
                note_value(&mut self.exceptions, snapshot, &requirement.key, value);
            }
        }
        for requirement in &term.match_fields {
            if requirement.key != NODE_NAME_FIELD {
                continue;
            }
            if numeric(requirement.operator) {
                self.judge_every_node = true;
            }
            for name in &requirement.values {
                if let Some((name, _)) = snapshot.nodes.get_key_value(name.as_str()) {
                    self.exceptions.insert(name);
                }
            }
        }
    }

    /// Whether the node passes the node selector and required node affinity
    /// and has every one of `keys`: the nodes whose domains and instances
    /// topology spread counts.
    fn spread_eligible(&self, node: &NodeFacts<'_>, keys: &[&str]) -> bool {
        node_selector_matches(self.req, node)
            && required_node_affinity_matches(self.req, node)
            && keys.iter().all(|key| node.label(key) != LabelValue::Absent)
    }

    /// Counts the request's spread constraints of `kind`; `with_fewest` also
    /// finds each one's emptiest eligible domain (the filter needs it).
    fn count_spread(
        &self,
        snapshot: &'a ClusterSnapshot,
        kind: WhenUnsatisfiable,
        with_fewest: bool,
    ) -> Vec<SpreadCounts<'a>> {
        let req = self.req;
        let constraints: Vec<&'a TopologySpreadConstraint> = req
            .topology_spread
            .iter()
            .filter(|constraint| constraint.when_unsatisfiable == kind)
            .collect();
        let keys: Vec<&str> = constraints
            .iter()
            .map(|constraint| constraint.topology_key.as_str())
            .collect();
        let eligible = |node: &NodeState| self.spread_eligible(&node.facts(), &keys);
        constraints
            .into_iter()
            .map(|constraint| {
                let key = constraint.topology_key.as_str();
                let mut counts: HashMap<&'a str, u64> = HashMap::default();
                let selected = snapshot.instances.nodes_of(
                    |namespace| namespace == req.namespace,
                    |_, labels| constraint.counts(labels),
                );
                for node_counts in selected {
                    for (name, count) in node_counts {
                        let Some(node) = snapshot.nodes.get(name) else {
                            continue;
                        };
                        if let Some(value) = node.info.labels.get(key)
                            && eligible(node)
                        {
                            *counts.entry(value.as_str()).or_default() += *count as u64;
                        }
                    }
                }
                let fewest = if !with_fewest {
                    None
                } else if self.has_empty_eligible_domain(snapshot, key, &counts, &keys) {
                    Some(0)
                } else {
                    counts.values().min().copied()
                };
                SpreadCounts {
                    constraint,
                    counts,
                    fewest,
                    self_match: u64::from(constraint.counts(&req.labels)),
                }
            })
            .collect()
    }

    /// Whether an eligible node's domain of `key` runs no counted instance.
    fn has_empty_eligible_domain(
        &self,
        snapshot: &'a ClusterSnapshot,
        key: &str,
        counts: &HashMap<&'a str, u64>,
        keys: &[&str],
    ) -> bool {
        let empty = |node: &NodeState| {
            node.info
                .labels
                .get(key)
                .is_some_and(|value| !counts.contains_key(value.as_str()))
        };
        snapshot.classes.iter().any(|(id, class)| {
            if class
                .template
                .labels
                .get(key)
                .is_some_and(|value| counts.contains_key(value.as_str()))
            {
                return false;
            }
            self.class_has_member(snapshot, *id, class, keys, &empty)
        })
    }

    /// Whether `class` has a spread-eligible member that passes `wanted`,
    /// judging one by one only the members the generic node does not
    /// stand for.
    fn class_has_member(
        &self,
        snapshot: &'a ClusterSnapshot,
        id: ClassId,
        class: &ShapeClass,
        keys: &[&str],
        wanted: &dyn Fn(&NodeState) -> bool,
    ) -> bool {
        let eligible = |node: &NodeState| self.spread_eligible(&node.facts(), keys);
        let member = |name: &str| snapshot.nodes.get(name);
        if self.judge_every_node {
            return class
                .members
                .iter()
                .filter_map(|name| member(name))
                .any(|node| wanted(node) && eligible(node));
        }
        if self.spread_eligible(&class.generic_facts(), keys) {
            class
                .members
                .iter()
                .filter_map(|name| member(name))
                .any(|node| {
                    wanted(node) && (!self.exceptions.contains(&*node.name) || eligible(node))
                })
        } else {
            self.exceptions
                .iter()
                .filter_map(|name| member(name))
                .any(|node| node.class == id && wanted(node) && eligible(node))
        }
    }

    /// Why the node selector or required node affinity refuses the node.
    pub(super) fn label_refusal(&self, node: &NodeFacts<'_>) -> Option<UnfitReason> {
        let refused = (self.knobs.node_selector && !node_selector_matches(self.req, node))
            || (self.knobs.node_affinity && !required_node_affinity_matches(self.req, node));
        refused.then_some(UnfitReason::NodeAffinityMismatch)
    }

    /// Why inter-instance affinity or topology spread refuses the node.
    pub(super) fn instance_refusal(&self, node: &NodeFacts<'_>) -> Option<UnfitReason> {
        if self.knobs.instance_affinity
            && let Some(reason) = self.instance.refusal(node)
        {
            return Some(reason);
        }
        if !self.knobs.topology_spread {
            return None;
        }
        self.spread_filters.iter().find_map(|spread| {
            let Some(count) = spread.count(node.label(&spread.constraint.topology_key)) else {
                return Some(UnfitReason::TopologySpreadMissingLabel);
            };
            let skew = count
                .saturating_add(spread.self_match)
                .saturating_sub(spread.fewest?);
            (skew > u64::from(spread.constraint.max_skew))
                .then_some(UnfitReason::TopologySpreadMismatch)
        })
    }

    /// The node's scores if every rule admits it.
    pub(super) fn admit(&self, node: &NodeFacts<'_>) -> Option<RuleScores> {
        if self.label_refusal(node).is_some() || self.instance_refusal(node).is_some() {
            return None;
        }
        let spread = self.spread_scorers.iter().try_fold(0i64, |total, spread| {
            let count = spread.count(node.label(&spread.constraint.topology_key))?;
            Some(total.saturating_add(i64::try_from(count).unwrap_or(i64::MAX)))
        });
        Some(RuleScores {
            weighted: self
                .knobs
                .node_affinity_weight
                .saturating_mul(preferred_node_affinity_score(self.req, node)),
            instance_affinity: self.instance.preferred_score(node),
            spread: if self.spread_scorers.is_empty() {
                Some(0)
            } else {
                spread
            },
        })
    }
}

/// Makes the nodes with `value` under `key` `exceptions`, if `key` is
/// per-node (a class-wide key is answered by the generic node).
fn note_value<'a>(
    exceptions: &mut HashSet<&'a str>,
    snapshot: &'a ClusterSnapshot,
    key: &str,
    value: &str,
) {
    let nodes = snapshot
        .per_node_values
        .get(key)
        .and_then(|values| values.get(value));
    exceptions.extend(nodes.into_iter().flatten().map(|node| &**node));
}

impl<'a> InstanceRules<'a> {
    /// Every (topology key, domain) a rule names.
    fn named_domains(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        let sets = self
            .affinity
            .iter()
            .map(|(key, domains)| (*key, domains))
            .chain(
                self.anti_affinity
                    .iter()
                    .map(|(key, domains)| (*key, domains)),
            )
            .chain(
                self.existing_anti_affinity
                    .iter()
                    .map(|(key, domains)| (*key, domains)),
            )
            .flat_map(|(key, domains)| domains.iter().map(move |value| (key, *value)));
        let scored = self
            .preferred
            .iter()
            .flat_map(|(key, scores)| scores.keys().map(move |value| (*key, *value)));
        sets.chain(scored)
    }

    fn new(snapshot: &'a ClusterSnapshot, req: &'a InstanceRequest, knobs: Knobs) -> Self {
        let book = &snapshot.instances;
        let owner = req.namespace.as_str();
        let domain = |node: &str, key: &'a str| -> Option<&'a str> {
            snapshot
                .nodes
                .get(node)?
                .info
                .labels
                .get(key)
                .map(String::as_str)
        };
        let mut rules = Self::default();
        if knobs.instance_affinity {
            let terms = &req.required_instance_affinity;
            if !terms.is_empty() {
                let mut domains: Vec<Domains<'a>> = vec![HashSet::default(); terms.len()];
                let selected = book.nodes_of(
                    |namespace| {
                        terms
                            .iter()
                            .all(|term| term.namespace_selected(owner, namespace))
                    },
                    |namespace, labels| {
                        terms
                            .iter()
                            .all(|term| term.selects(owner, namespace, labels))
                    },
                );
                for nodes in selected {
                    for node in nodes.keys() {
                        for (term, domains) in terms.iter().zip(&mut domains) {
                            domains.extend(domain(node, &term.topology_key));
                        }
                    }
                }
                rules.affinity_self_satisfied = domains.iter().all(HashSet::is_empty)
                    && terms
                        .iter()
                        .all(|term| term.selects(owner, owner, &req.labels));
                rules.affinity = terms
                    .iter()
                    .map(|term| term.topology_key.as_str())
                    .zip(domains)
                    .collect();
            }
            for term in &req.required_instance_anti_affinity {
                let key = term.topology_key.as_str();
                for nodes in book.selected_by(owner, term) {
                    let domains = nodes.keys().filter_map(|node| domain(node, key));
                    rules.anti_affinity.entry(key).or_default().extend(domains);
                }
            }
            for (held, nodes) in book.held_anti_affinity() {
                if !held.term.selects(&held.owner_namespace, owner, &req.labels) {
                    continue;
                }
                let key = held.term.topology_key.as_str();
                let domains = nodes.keys().filter_map(|node| domain(node, key));
                rules
                    .existing_anti_affinity
                    .entry(key)
                    .or_default()
                    .extend(domains);
            }
        }
        if knobs.instance_affinity_weight != 0 {
            let attracting = req.preferred_instance_affinity.iter().map(|term| (1, term));
            let repelling = req
                .preferred_instance_anti_affinity
                .iter()
                .map(|term| (-1, term));
            for (sign, weighted) in attracting.chain(repelling) {
                let key = weighted.term.topology_key.as_str();
                for nodes in book.selected_by(owner, &weighted.term) {
                    for (node, count) in nodes {
                        let Some(value) = domain(node, key) else {
                            continue;
                        };
                        let count = i64::try_from(*count).unwrap_or(i64::MAX);
                        let score = rules
                            .preferred
                            .entry(key)
                            .or_default()
                            .entry(value)
                            .or_default();
                        *score = score.saturating_add(
                            weighted.weight.saturating_mul(count).saturating_mul(sign),
                        );
                    }
                }
            }
        }
        rules
    }

    /// Why the required terms, the request's or the accounted instances',
    /// refuse the node (Kubernetes' order).
    fn refusal(&self, node: &NodeFacts<'_>) -> Option<UnfitReason> {
        if !self.affinity.is_empty() {
            let mut selected_in_every_domain = true;
            for (key, domains) in &self.affinity {
                match node.label(key) {
                    LabelValue::Absent => return Some(UnfitReason::InstanceAffinityMismatch),
                    LabelValue::Is(value) if domains.contains(value) => {}
                    _ => selected_in_every_domain = false,
                }
            }
            if !selected_in_every_domain && !self.affinity_self_satisfied {
                return Some(UnfitReason::InstanceAffinityMismatch);
            }
        }
        let in_domains = |domains: &HashMap<&str, Domains<'_>>| {
            domains.iter().any(|(key, values)| {
                matches!(node.label(key), LabelValue::Is(value) if values.contains(value))
            })
        };
        if in_domains(&self.anti_affinity) {
            return Some(UnfitReason::InstanceAntiAffinityMismatch);
        }
        in_domains(&self.existing_anti_affinity)
            .then_some(UnfitReason::ExistingAntiAffinityMismatch)
    }

    /// The preferred terms' raw score of the node.
    fn preferred_score(&self, node: &NodeFacts<'_>) -> i64 {
        self.preferred
            .iter()
            .filter_map(|(key, scores)| match node.label(key) {
                LabelValue::Is(value) => scores.get(value).copied(),
                _ => None,
            })
            .fold(0, i64::saturating_add)
    }
}

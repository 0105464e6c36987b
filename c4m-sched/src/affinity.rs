//! Node affinity: label and field expressions a node must (or should)
//! match, with Kubernetes' semantics.

use std::collections::BTreeMap;

use crate::labels::{LabelValue, NodeFacts, operator_matches};

/// The one node field a `matchFields` requirement may name: the node's name
/// (DaemonSet instances pin their node with it).
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// How a [`NodeSelectorRequirement`] compares a label with its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeSelectorOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label is an integer greater than the single value.
    Gt,
    /// The label is an integer less than the single value.
    Lt,
}

/// One condition on one node label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the label is compared with `values`.
    pub operator: NodeSelectorOperator,
    /// The values for `In`/`NotIn`, exactly one integer for `Gt`/`Lt`,
    /// unused for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

impl NodeSelectorRequirement {
    /// A requirement on `key` (a label, or [`NODE_NAME_FIELD`] in
    /// `match_fields`).
    pub fn new<V: Into<String>>(
        key: impl Into<String>,
        operator: NodeSelectorOperator,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        Self {
            key: key.into(),
            operator,
            values: values.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `labels` satisfy this requirement. A `Gt`/`Lt` whose value or
    /// label is not a single integer matches nothing, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_value(LabelValue::of(labels, &self.key))
    }

    fn matches_value(&self, value: LabelValue<'_>) -> bool {
        operator_matches(self.operator, &self.values, value)
    }

    /// As a `matchFields` requirement: whether the node's field matches. Only
    /// [`NODE_NAME_FIELD`] exists; a requirement on another field matches no
    /// node (Kubernetes rejects such terms).
    fn matches_field(&self, node: &NodeFacts<'_>) -> bool {
        self.key == NODE_NAME_FIELD && self.matches_value(node.name())
    }
}

/// Requirements that must all hold, on labels and on fields. A term with
/// neither matches no node, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeSelectorTerm {
    /// Requirements on node labels, ANDed.
    pub match_expressions: Vec<NodeSelectorRequirement>,
    /// Requirements on node fields, ANDed with the label ones: `key` is
    /// [`NODE_NAME_FIELD`], the operator `In` or `NotIn`.
    pub match_fields: Vec<NodeSelectorRequirement>,
}

impl NodeSelectorTerm {
    /// Whether the node `name` with `labels` satisfies every requirement
    /// (and there is at least one).
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.matches_facts(&NodeFacts::node(name, labels))
    }

    /// [`NodeSelectorTerm::matches`] on a real or generic node.
    pub(crate) fn matches_facts(&self, node: &NodeFacts<'_>) -> bool {
        !(self.match_expressions.is_empty() && self.match_fields.is_empty())
            && self
                .match_expressions
                .iter()
                .all(|requirement| requirement.matches_value(node.label(&requirement.key)))
            && self
                .match_fields
                .iter()
                .all(|requirement| requirement.matches_field(node))
    }
}

/// A soft node affinity term: nodes matching it score `weight` more.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PreferredSchedulingTerm {
    /// Added to the score of matching nodes (Kubernetes allows 1 to 100).
    pub weight: i64,
    /// The term a node should match.
    pub preference: NodeSelectorTerm,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::labels::tests::labels;

    fn requirement(
        key: &str,
        operator: NodeSelectorOperator,
        values: &[&str],
    ) -> NodeSelectorRequirement {
        NodeSelectorRequirement::new(key, operator, values.iter().copied())
    }

    #[test]
    fn each_operator_matches_as_in_kubernetes() {
        use NodeSelectorOperator::*;
        let node = labels(&[("zone", "a"), ("cores", "16")]);
        let empty = labels(&[]);
        let cases = [
            (requirement("zone", In, &["a", "b"]), true, false),
            (requirement("zone", In, &["b"]), false, false),
            (requirement("zone", NotIn, &["b"]), true, true),
            (requirement("zone", NotIn, &["a"]), false, true),
            (requirement("zone", Exists, &[]), true, false),
            (requirement("zone", DoesNotExist, &[]), false, true),
            (requirement("cores", Gt, &["8"]), true, false),
            (requirement("cores", Gt, &["16"]), false, false),
            (requirement("cores", Lt, &["32"]), true, false),
            (requirement("cores", Lt, &["16"]), false, false),
            (requirement("zone", Gt, &["1"]), false, false),
            (requirement("cores", Gt, &["1", "2"]), false, false),
            (requirement("cores", Lt, &["x"]), false, false),
        ];
        for (requirement, on_node, on_empty) in cases {
            assert_eq!(
                requirement.matches(&node),
                on_node,
                "{requirement:?} on node"
            );
            assert_eq!(
                requirement.matches(&empty),
                on_empty,
                "{requirement:?} on no labels"
            );
        }
    }

    #[test]
    fn a_term_ands_its_requirements_and_an_empty_term_matches_nothing() {
        use NodeSelectorOperator::*;
        let node = labels(&[("zone", "a"), ("disk", "ssd")]);
        let both = NodeSelectorTerm {
            match_expressions: vec![
                requirement("zone", In, &["a"]),
                requirement("disk", Exists, &[]),
            ],
            ..NodeSelectorTerm::default()
        };
        assert!(both.matches("n", &node));
        let one_fails = NodeSelectorTerm {
            match_expressions: vec![
                requirement("zone", In, &["a"]),
                requirement("disk", DoesNotExist, &[]),
            ],
            ..NodeSelectorTerm::default()
        };
        assert!(!one_fails.matches("n", &node));
        assert!(!NodeSelectorTerm::default().matches("n", &node));
    }

    #[test]
    fn match_fields_pin_the_node_name() {
        use NodeSelectorOperator::*;
        let node = labels(&[("zone", "a")]);
        let pinned = NodeSelectorTerm {
            match_fields: vec![requirement(NODE_NAME_FIELD, In, &["n1"])],
            ..NodeSelectorTerm::default()
        };
        assert!(pinned.matches("n1", &node));
        assert!(!pinned.matches("n2", &node));
        let mut both = pinned.clone();
        both.match_expressions = vec![requirement("zone", In, &["b"])];
        assert!(!both.matches("n1", &node), "fields AND labels");
        let not_n1 = NodeSelectorTerm {
            match_fields: vec![requirement(NODE_NAME_FIELD, NotIn, &["n1"])],
            ..NodeSelectorTerm::default()
        };
        assert!(!not_n1.matches("n1", &node) && not_n1.matches("n2", &node));
        let other_field = NodeSelectorTerm {
            match_fields: vec![requirement("metadata.uid", NotIn, &["x"])],
            ..NodeSelectorTerm::default()
        };
        assert!(!other_field.matches("n1", &node));
    }
}

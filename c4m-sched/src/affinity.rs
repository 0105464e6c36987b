//! Node affinity: label expressions a node must (or should) match, with
//! Kubernetes' semantics.

use std::collections::BTreeMap;

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
    /// Whether `labels` satisfy this requirement. A `Gt`/`Lt` whose value or
    /// label is not a single integer matches nothing, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let label = labels.get(&self.key);
        match self.operator {
            NodeSelectorOperator::In => label.is_some_and(|value| self.values.contains(value)),
            NodeSelectorOperator::NotIn => label.is_none_or(|value| !self.values.contains(value)),
            NodeSelectorOperator::Exists => label.is_some(),
            NodeSelectorOperator::DoesNotExist => label.is_none(),
            NodeSelectorOperator::Gt => self.compare_integers(label).is_some_and(|(l, v)| l > v),
            NodeSelectorOperator::Lt => self.compare_integers(label).is_some_and(|(l, v)| l < v),
        }
    }

    /// The label and the single value as integers, if both are.
    fn compare_integers(&self, label: Option<&String>) -> Option<(i64, i64)> {
        let [value] = self.values.as_slice() else {
            return None;
        };
        Some((label?.parse().ok()?, value.parse().ok()?))
    }
}

/// Requirements that must all hold. An empty term matches no node, as in
/// Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeSelectorTerm {
    /// The requirements, ANDed.
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

impl NodeSelectorTerm {
    /// Whether `labels` satisfy every requirement (and there is at least one).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.match_expressions.is_empty()
            && self
                .match_expressions
                .iter()
                .all(|requirement| requirement.matches(labels))
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

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn requirement(
        key: &str,
        operator: NodeSelectorOperator,
        values: &[&str],
    ) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
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
        };
        assert!(both.matches(&node));
        let one_fails = NodeSelectorTerm {
            match_expressions: vec![
                requirement("zone", In, &["a"]),
                requirement("disk", DoesNotExist, &[]),
            ],
        };
        assert!(!one_fails.matches(&node));
        assert!(!NodeSelectorTerm::default().matches(&node));
    }
}

//! Label matching shared by node affinity, instance label selectors and
//! topology domains.
//!
//! Rules read a node through [`NodeFacts`], which answers for a real node
//! and for a class's *generic* node alike: the generic node stands for every
//! member whose per-node labels (hostname) carry a value the request never
//! names, so it reports those labels as [`LabelValue::Unnamed`].

use std::collections::{BTreeMap, BTreeSet};

use crate::affinity::NodeSelectorOperator;

/// What a node has under one label key (or as its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LabelValue<'a> {
    /// No such label.
    Absent,
    /// This value.
    Is(&'a str),
    /// Some value that no rule of the request names: it is in no value list
    /// and no topology domain the request counts.
    Unnamed,
}

impl<'a> LabelValue<'a> {
    /// The value of `key` in `labels`.
    pub(crate) fn of(labels: &'a BTreeMap<String, String>, key: &str) -> Self {
        labels
            .get(key)
            .map_or(Self::Absent, |value| Self::Is(value))
    }
}

/// A node's name and labels as the placement rules read them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeFacts<'a> {
    /// `None` for a class's generic node.
    name: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
    /// For a generic node: the per-node label keys its members carry.
    unnamed_keys: Option<&'a BTreeSet<String>>,
}

impl<'a> NodeFacts<'a> {
    /// A real node.
    pub(crate) fn node(name: &'a str, labels: &'a BTreeMap<String, String>) -> Self {
        Self {
            name: Some(name),
            labels,
            unnamed_keys: None,
        }
    }

    /// The generic node of a class: its shared `labels`, and the per-node
    /// keys its members carry with values the request does not name.
    pub(crate) fn generic(
        labels: &'a BTreeMap<String, String>,
        unnamed_keys: &'a BTreeSet<String>,
    ) -> Self {
        Self {
            name: None,
            labels,
            unnamed_keys: Some(unnamed_keys),
        }
    }

    /// The node's value under `key`.
    pub(crate) fn label(&self, key: &str) -> LabelValue<'a> {
        match LabelValue::of(self.labels, key) {
            LabelValue::Absent if self.unnamed_keys.is_some_and(|keys| keys.contains(key)) => {
                LabelValue::Unnamed
            }
            value => value,
        }
    }

    /// The node's name as a field value (`metadata.name`).
    pub(crate) fn name(&self) -> LabelValue<'a> {
        self.name.map_or(LabelValue::Unnamed, LabelValue::Is)
    }
}

/// Whether `value` satisfies `operator` with `values`, by Kubernetes' rules.
/// An [`LabelValue::Unnamed`] value is present and equal to none of
/// `values`; `Gt`/`Lt` need a known integer, so an unnamed value fails them.
pub(crate) fn operator_matches(
    operator: NodeSelectorOperator,
    values: &[String],
    value: LabelValue<'_>,
) -> bool {
    let listed = |value: &str| values.iter().any(|listed| listed == value);
    let compare = |value: LabelValue<'_>| -> Option<(i64, i64)> {
        let ([bound], LabelValue::Is(value)) = (values, value) else {
            return None;
        };
        Some((value.parse().ok()?, bound.parse().ok()?))
    };
    match operator {
        NodeSelectorOperator::In => matches!(value, LabelValue::Is(value) if listed(value)),
        NodeSelectorOperator::NotIn => !matches!(value, LabelValue::Is(value) if listed(value)),
        NodeSelectorOperator::Exists => value != LabelValue::Absent,
        NodeSelectorOperator::DoesNotExist => value == LabelValue::Absent,
        NodeSelectorOperator::Gt => compare(value).is_some_and(|(value, bound)| value > bound),
        NodeSelectorOperator::Lt => compare(value).is_some_and(|(value, bound)| value < bound),
    }
}

/// How a [`LabelSelectorRequirement`] compares an instance label with its
/// values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LabelSelectorOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl From<LabelSelectorOperator> for NodeSelectorOperator {
    fn from(operator: LabelSelectorOperator) -> Self {
        match operator {
            LabelSelectorOperator::In => Self::In,
            LabelSelectorOperator::NotIn => Self::NotIn,
            LabelSelectorOperator::Exists => Self::Exists,
            LabelSelectorOperator::DoesNotExist => Self::DoesNotExist,
        }
    }
}

/// One condition on one instance label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the label is compared with `values`.
    pub operator: LabelSelectorOperator,
    /// The values for `In`/`NotIn`; unused for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

/// A Kubernetes label selector over instances: every `match_labels` pair and
/// every expression must hold. An empty selector matches every instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSelector {
    /// Labels the instance must carry with exactly these values.
    pub match_labels: BTreeMap<String, String>,
    /// Requirements, ANDed with `match_labels`.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether an instance with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|requirement| {
                operator_matches(
                    requirement.operator.into(),
                    &requirement.values,
                    LabelValue::of(labels, &requirement.key),
                )
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Labels from `(key, value)` pairs.
    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_and_their_labels_and_expressions() {
        use LabelSelectorOperator::*;
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let expression = |key: &str, operator, values: &[&str]| LabelSelectorRequirement {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        };
        assert!(LabelSelector::default().matches(&web));
        assert!(LabelSelector::default().matches(&labels(&[])));
        let selector = |match_labels: &[(&str, &str)], match_expressions| LabelSelector {
            match_labels: labels(match_labels),
            match_expressions,
        };
        assert!(selector(&[("app", "web")], vec![]).matches(&web));
        assert!(!selector(&[("app", "db")], vec![]).matches(&web));
        let cases = [
            (expression("app", In, &["web", "db"]), true),
            (expression("app", NotIn, &["web"]), false),
            (expression("zone", NotIn, &["a"]), true),
            (expression("tier", Exists, &[]), true),
            (expression("tier", DoesNotExist, &[]), false),
            (expression("zone", DoesNotExist, &[]), true),
        ];
        for (requirement, expected) in cases {
            let selected = selector(&[("app", "web")], vec![requirement.clone()]);
            assert_eq!(selected.matches(&web), expected, "{requirement:?}");
        }
    }

    #[test]
    fn an_unnamed_value_is_present_and_in_no_list() {
        use NodeSelectorOperator::*;
        let values = ["a".to_owned()];
        let unnamed = LabelValue::Unnamed;
        assert!(!operator_matches(In, &values, unnamed));
        assert!(operator_matches(NotIn, &values, unnamed));
        assert!(operator_matches(Exists, &values, unnamed));
        assert!(!operator_matches(DoesNotExist, &values, unnamed));
        assert!(!operator_matches(Gt, &["1".to_owned()], unnamed));
        let keys = BTreeSet::from(["host".to_owned()]);
        let shared = labels(&[("zone", "a")]);
        let generic = NodeFacts::generic(&shared, &keys);
        assert_eq!(generic.label("host"), LabelValue::Unnamed);
        assert_eq!(generic.label("zone"), LabelValue::Is("a"));
        assert_eq!(generic.label("disk"), LabelValue::Absent);
        assert_eq!(generic.name(), LabelValue::Unnamed);
        assert_eq!(NodeFacts::node("n", &shared).name(), LabelValue::Is("n"));
    }
}

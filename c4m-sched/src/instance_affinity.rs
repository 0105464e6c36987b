//! Inter-instance affinity, anti-affinity and topology spread: rules on
//! the instances already placed in a node's topology domain, with
//! Kubernetes' `podAffinity`, `podAntiAffinity` and
//! `topologySpreadConstraints` semantics.

use std::collections::BTreeMap;

use crate::labels::LabelSelector;

/// The label every node carries with its own name (the agent sets it);
/// per-node by default (see [`crate::ClusterSnapshot::set_per_node_label_keys`]).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A set of instances (by label selector and namespace) and a topology key:
/// the term holds on a node when the node's domain (the nodes sharing its
/// value of `topology_key`) runs such an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceAffinityTerm {
    /// The instances the term is about; `None` selects none (a Kubernetes
    /// nil selector), an empty selector selects all.
    pub label_selector: Option<LabelSelector>,
    /// Namespaces of the selected instances; empty means the namespace of
    /// the instance that states the term, unless `all_namespaces`.
    pub namespaces: Vec<String>,
    /// Every namespace (a Kubernetes empty `namespaceSelector`). A
    /// `namespaceSelector` with labels is resolved by the caller into
    /// `namespaces`.
    pub all_namespaces: bool,
    /// The node label whose values are the topology domains (hostname,
    /// zone, ...). A node without it is in no domain.
    pub topology_key: String,
}

impl InstanceAffinityTerm {
    /// Whether this term, stated by an instance of `owner_namespace`,
    /// selects an instance of `namespace` with `labels`.
    pub fn selects(
        &self,
        owner_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        self.namespace_selected(owner_namespace, namespace)
            && self
                .label_selector
                .as_ref()
                .is_some_and(|selector| selector.matches(labels))
    }

    /// Whether the term, stated in `owner_namespace`, covers `namespace`.
    pub(crate) fn namespace_selected(&self, owner_namespace: &str, namespace: &str) -> bool {
        self.all_namespaces
            || if self.namespaces.is_empty() {
                namespace == owner_namespace
            } else {
                self.namespaces.iter().any(|listed| listed == namespace)
            }
    }

    /// Whether the namespace it was stated in no longer matters.
    pub(crate) fn names_its_namespaces(&self) -> bool {
        self.all_namespaces || !self.namespaces.is_empty()
    }
}

/// A preferred (soft) term: nodes whose domain runs selected instances gain
/// (affinity) or lose (anti-affinity) `weight` per such instance, before
/// normalisation (see [`crate::ClusterSnapshot`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WeightedInstanceAffinityTerm {
    /// 1 to 100 in Kubernetes.
    pub weight: i64,
    /// The term.
    pub term: InstanceAffinityTerm,
}

/// What a topology spread constraint does where it cannot be met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WhenUnsatisfiable {
    /// A filter: a node where the skew would exceed `max_skew`, or without
    /// the topology key, does not fit.
    #[default]
    DoNotSchedule,
    /// A scorer: nodes whose domain runs fewer matching instances score
    /// higher.
    ScheduleAnyway,
}

/// Spread matching instances evenly over the domains of a topology key.
///
/// Domains and counts follow Kubernetes (`nodeAffinityPolicy: Honor`,
/// `nodeTaintsPolicy: Ignore`): only nodes that pass the instance's node
/// selector and required node affinity and carry every topology key of the
/// instance's constraints of the same kind count, and only instances of the
/// instance's own namespace that the selector matches. `minDomains` and
/// `matchLabelKeys` are not modelled (the caller can fold the latter into
/// the selector).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopologySpreadConstraint {
    /// How many more matching instances a domain may have than the emptiest
    /// eligible one, counting the incoming instance where it matches.
    pub max_skew: u32,
    /// The node label whose values are the domains.
    pub topology_key: String,
    /// Filter or scorer.
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// The instances counted; `None` counts none.
    pub label_selector: Option<LabelSelector>,
}

impl TopologySpreadConstraint {
    /// Whether an instance of `labels` counts (its namespace is checked by
    /// the caller: only the constrained instance's own).
    pub(crate) fn counts(&self, labels: &BTreeMap<String, String>) -> bool {
        self.label_selector
            .as_ref()
            .is_some_and(|selector| selector.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> BTreeMap<String, String> {
        crate::labels::tests::labels(&[("app", name)])
    }

    fn selecting(app_name: &str) -> InstanceAffinityTerm {
        InstanceAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: app(app_name),
                ..LabelSelector::default()
            }),
            topology_key: HOSTNAME_LABEL.to_owned(),
            ..InstanceAffinityTerm::default()
        }
    }

    #[test]
    fn terms_select_by_namespace_then_labels() {
        let term = selecting("web");
        assert!(term.selects("prod", "prod", &app("web")));
        assert!(
            !term.selects("prod", "dev", &app("web")),
            "own namespace only"
        );
        assert!(!term.selects("prod", "prod", &app("db")));
        let listed = InstanceAffinityTerm {
            namespaces: vec!["dev".to_owned()],
            ..term.clone()
        };
        assert!(listed.selects("prod", "dev", &app("web")));
        assert!(!listed.selects("prod", "prod", &app("web")));
        let everywhere = InstanceAffinityTerm {
            all_namespaces: true,
            ..term.clone()
        };
        assert!(everywhere.selects("prod", "any", &app("web")));
        let nil = InstanceAffinityTerm {
            label_selector: None,
            ..term
        };
        assert!(
            !nil.selects("prod", "prod", &app("web")),
            "nil selects none"
        );
        let all = InstanceAffinityTerm {
            label_selector: Some(LabelSelector::default()),
            ..nil
        };
        assert!(all.selects("prod", "prod", &BTreeMap::new()));
    }
}

//! The scheduler's tunable policy: which built-in plugins run, how much
//! each scorer weighs, the default strategy, and how many feasible nodes a
//! placement scores. The control plane serves it over HTTP and changes it
//! while the scheduler runs; [`Policy::validate`] decides whether a policy
//! may be taken, and a rejected one changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::Strategy;

/// Filter plugin names, Kubernetes style.
pub mod filter_names {
    /// Node selector (`spec.nodeSelector`).
    pub const NODE_SELECTOR: &str = "NodeSelector";
    /// Required node affinity.
    pub const NODE_AFFINITY: &str = "NodeAffinity";
    /// `NoSchedule`/`NoExecute` taints against tolerations.
    pub const TAINT_TOLERATION: &str = "TaintToleration";
    /// The node offers the instance's driver. Mandatory.
    pub const DRIVER: &str = "Driver";
    /// Resources fit. Mandatory: disabling it would over-commit nodes.
    pub const NODE_RESOURCES_FIT: &str = "NodeResourcesFit";
    /// Host ports free. Mandatory: disabling it would make binds fail.
    pub const NODE_PORTS: &str = "NodePorts";
    /// Required inter-instance affinity and anti-affinity.
    pub const INTER_INSTANCE_AFFINITY: &str = "InterInstanceAffinity";
    /// Topology spread constraints with `whenUnsatisfiable: DoNotSchedule`.
    pub const TOPOLOGY_SPREAD: &str = "TopologySpread";
}

/// Scorer plugin names, Kubernetes style.
pub mod scorer_names {
    /// The strategy's fit score (best fit or spread).
    pub const FIT: &str = "Fit";
    /// Preferred node affinity.
    pub const NODE_AFFINITY: &str = "NodeAffinity";
    /// `PreferNoSchedule` taints.
    pub const TAINT_TOLERATION: &str = "TaintToleration";
    /// Preferred inter-instance affinity and anti-affinity.
    pub const INTER_INSTANCE_AFFINITY: &str = "InterInstanceAffinity";
    /// Spread across topology domains (zones, nodes).
    pub const TOPOLOGY_SPREAD: &str = "TopologySpread";
}

/// Every built-in filter name.
pub const FILTERS: [&str; 8] = [
    filter_names::NODE_SELECTOR,
    filter_names::NODE_AFFINITY,
    filter_names::TAINT_TOLERATION,
    filter_names::DRIVER,
    filter_names::NODE_RESOURCES_FIT,
    filter_names::NODE_PORTS,
    filter_names::INTER_INSTANCE_AFFINITY,
    filter_names::TOPOLOGY_SPREAD,
];

/// Filters that cannot be disabled: without them a placement could
/// over-commit a node or land where it cannot run.
pub const MANDATORY_FILTERS: [&str; 3] = [
    filter_names::DRIVER,
    filter_names::NODE_RESOURCES_FIT,
    filter_names::NODE_PORTS,
];

/// Every built-in scorer name.
pub const SCORERS: [&str; 5] = [
    scorer_names::FIT,
    scorer_names::NODE_AFFINITY,
    scorer_names::TAINT_TOLERATION,
    scorer_names::INTER_INSTANCE_AFFINITY,
    scorer_names::TOPOLOGY_SPREAD,
];

/// The largest weight a scorer may have.
pub const MAX_WEIGHT: i64 = 100;

/// The scheduler policy. Serialized in camelCase, e.g.
/// `{"defaultStrategy":"spread","weights":{"Fit":2},"disabledFilters":["TaintToleration"],"disabledScorers":[],"percentageOfNodesToScore":50}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// The strategy of instances that do not choose one.
    #[serde(default)]
    pub default_strategy: Strategy,
    /// Weight of each built-in scorer by name (0 to [`MAX_WEIGHT`]); a
    /// scorer not named weighs 1.
    #[serde(default)]
    pub weights: BTreeMap<String, i64>,
    /// Built-in filters switched off (never a mandatory one).
    #[serde(default)]
    pub disabled_filters: BTreeSet<String>,
    /// Built-in scorers switched off.
    #[serde(default)]
    pub disabled_scorers: BTreeSet<String>,
    /// How many of the feasible nodes a placement scores, in percent (1 to
    /// 100): it stops looking once it has found that share, as
    /// kube-scheduler's `percentageOfNodesToScore` does. 100 scores all.
    #[serde(default = "all_nodes")]
    pub percentage_of_nodes_to_score: u8,
}

fn all_nodes() -> u8 {
    100
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_strategy: Strategy::default(),
            weights: BTreeMap::new(),
            disabled_filters: BTreeSet::new(),
            disabled_scorers: BTreeSet::new(),
            percentage_of_nodes_to_score: all_nodes(),
        }
    }
}

/// Why a policy was rejected; the field path says where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A name that is not a built-in plugin of that kind.
    #[error("{field}: unknown plugin {name:?} (known: {known})")]
    UnknownPlugin {
        /// Where the name appeared, e.g. `weights.Fti`.
        field: String,
        /// The name given.
        name: String,
        /// The names that would have been accepted, comma separated.
        known: String,
    },
    /// A mandatory filter was disabled.
    #[error(
        "disabledFilters: {name} cannot be disabled: nodes could be over-committed or unable to run the instance"
    )]
    MandatoryFilter {
        /// The filter's name.
        name: String,
    },
    /// A weight outside 0 to [`MAX_WEIGHT`].
    #[error("weights.{name}: {weight} is out of range 0 to {MAX_WEIGHT}")]
    WeightOutOfRange {
        /// The scorer's name.
        name: String,
        /// The weight given.
        weight: i64,
    },
    /// A percentage outside 1 to 100.
    #[error("percentageOfNodesToScore: {0} is out of range 1 to 100")]
    Percentage(u8),
}

impl Policy {
    /// Checks every field; the first problem found is the error.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let unknown = |field: &str, name: &str, known: &[&str]| PolicyError::UnknownPlugin {
            field: field.to_string(),
            name: name.to_string(),
            known: known.join(", "),
        };
        for (name, weight) in &self.weights {
            if !SCORERS.contains(&name.as_str()) {
                return Err(unknown(&format!("weights.{name}"), name, &SCORERS));
            }
            if !(0..=MAX_WEIGHT).contains(weight) {
                return Err(PolicyError::WeightOutOfRange {
                    name: name.clone(),
                    weight: *weight,
                });
            }
        }
        for name in &self.disabled_filters {
            if !FILTERS.contains(&name.as_str()) {
                return Err(unknown("disabledFilters", name, &FILTERS));
            }
            if MANDATORY_FILTERS.contains(&name.as_str()) {
                return Err(PolicyError::MandatoryFilter { name: name.clone() });
            }
        }
        for name in &self.disabled_scorers {
            if !SCORERS.contains(&name.as_str()) {
                return Err(unknown("disabledScorers", name, &SCORERS));
            }
        }
        if !(1..=100).contains(&self.percentage_of_nodes_to_score) {
            return Err(PolicyError::Percentage(self.percentage_of_nodes_to_score));
        }
        Ok(())
    }

    /// The weight of the built-in scorer `name`: 0 when disabled, 1 when not
    /// named in [`Policy::weights`].
    pub fn weight(&self, name: &str) -> i64 {
        if self.disabled_scorers.contains(name) {
            return 0;
        }
        self.weights.get(name).copied().unwrap_or(1)
    }

    /// Whether the built-in filter `name` runs.
    pub fn filter_enabled(&self, name: &str) -> bool {
        !self.disabled_filters.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_valid_and_weighs_everything_once() {
        let policy = Policy::default();
        assert_eq!(policy.validate(), Ok(()));
        assert!(SCORERS.iter().all(|name| policy.weight(name) == 1));
        assert!(FILTERS.iter().all(|name| policy.filter_enabled(name)));
    }

    #[test]
    fn bad_policies_name_the_field() {
        let mut policy = Policy::default();
        policy.weights.insert("Fti".into(), 2);
        assert!(
            policy
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("weights.Fti: unknown plugin")
        );

        let mut policy = Policy::default();
        policy.weights.insert("Fit".into(), 101);
        assert_eq!(
            policy.validate().unwrap_err().to_string(),
            "weights.Fit: 101 is out of range 0 to 100"
        );

        let mut policy = Policy::default();
        policy.disabled_filters.insert("NodeResourcesFit".into());
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::MandatoryFilter { .. })
        ));

        let policy = Policy {
            percentage_of_nodes_to_score: 0,
            ..Policy::default()
        };
        assert_eq!(policy.validate(), Err(PolicyError::Percentage(0)));
    }

    #[test]
    fn policies_round_trip_through_json_and_reject_unknown_fields() {
        let json = r#"{"defaultStrategy":"spread","weights":{"Fit":2},"disabledScorers":["TaintToleration"],"percentageOfNodesToScore":50}"#;
        let policy: Policy = serde_json::from_str(json).unwrap();
        assert_eq!(policy.default_strategy, Strategy::Spread);
        assert_eq!(policy.weight("Fit"), 2);
        assert_eq!(policy.weight("TaintToleration"), 0);
        let again: Policy = serde_json::from_str(&serde_json::to_string(&policy).unwrap()).unwrap();
        assert_eq!(again, policy);
        assert!(serde_json::from_str::<Policy>(r#"{"weight":{}}"#).is_err());
    }
}

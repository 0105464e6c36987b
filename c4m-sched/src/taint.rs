//! Taints repel instances from nodes unless the instance tolerates them.

/// What a taint does to instances that do not tolerate it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaintEffect {
    /// New instances are not placed on the node.
    NoSchedule,
    /// The node is avoided: its score is lowered, but it still fits.
    PreferNoSchedule,
    /// New instances are not placed on the node (eviction of running ones is
    /// the node lifecycle's business, not the scheduler's).
    NoExecute,
}

impl TaintEffect {
    /// Whether an untolerated taint with this effect makes a node unfit.
    pub fn forbids_placement(self) -> bool {
        matches!(self, Self::NoSchedule | Self::NoExecute)
    }
}

/// A taint on a node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// What the taint does.
    pub effect: TaintEffect,
}

/// How a toleration compares its value with a taint's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TolerationOperator {
    /// The values must be equal (the Kubernetes default).
    #[default]
    Equal,
    /// Any value; with an empty key, any taint at all.
    Exists,
}

/// An instance's permission to be placed despite matching taints.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Toleration {
    /// Taint key to match; empty matches every key.
    pub key: String,
    /// How the value is compared.
    pub operator: TolerationOperator,
    /// Value to match with `Equal`.
    pub value: String,
    /// Effect to match; `None` matches every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint`, by Kubernetes' rules.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        self.effect.is_none_or(|effect| effect == taint.effect)
            && (self.key.is_empty() || self.key == taint.key)
            && match self.operator {
                TolerationOperator::Equal => self.value == taint.value,
                TolerationOperator::Exists => true,
            }
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub(crate) fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|toleration| toleration.tolerates(taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.to_owned(),
            value: value.to_owned(),
            effect,
        }
    }

    fn toleration(
        key: &str,
        operator: TolerationOperator,
        value: &str,
        effect: Option<TaintEffect>,
    ) -> Toleration {
        Toleration {
            key: key.to_owned(),
            operator,
            value: value.to_owned(),
            effect,
        }
    }

    #[test]
    fn toleration_matching_follows_kubernetes() {
        use TaintEffect::*;
        use TolerationOperator::*;
        let db = taint("dedicated", "db", NoSchedule);
        let cases = [
            (toleration("dedicated", Equal, "db", None), true),
            (toleration("dedicated", Equal, "db", Some(NoSchedule)), true),
            (toleration("dedicated", Equal, "db", Some(NoExecute)), false),
            (toleration("dedicated", Equal, "web", None), false),
            (toleration("dedicated", Exists, "", None), true),
            (toleration("other", Exists, "", None), false),
            (toleration("", Exists, "", None), true),
            (toleration("", Exists, "", Some(PreferNoSchedule)), false),
        ];
        for (toleration, expected) in cases {
            assert_eq!(toleration.tolerates(&db), expected, "{toleration:?}");
        }
        assert!(NoSchedule.forbids_placement() && NoExecute.forbids_placement());
        assert!(!PreferNoSchedule.forbids_placement());
    }
}

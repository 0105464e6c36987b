//! The built-in scorers. Each counts with weight 1: the strategy's fit
//! score (0 to [`MAX_NODE_SCORE`]), plus the weights of the matching
//! preferred affinity terms, minus [`MAX_NODE_SCORE`] per untolerated
//! `PreferNoSchedule` taint. Equal totals go to the exactly tighter
//! (best fit) or looser (spread) node, then to the smallest name.

use crate::fit::{Leftover, Scale};
use crate::labels::NodeFacts;
use crate::model::{InstanceRequest, Strategy};
use crate::pipeline::{NodeView, Scope, Scorer};
use crate::policy::scorer_names;
use crate::taint::{TaintEffect, tolerated};

/// The highest score of the fit scorers, and the penalty per untolerated
/// `PreferNoSchedule` taint (the Kubernetes scale).
pub const MAX_NODE_SCORE: i64 = 100;

/// The fit score of `strategy` for a node left with `leftover`.
pub(crate) fn fit_score(strategy: Strategy, leftover: &Leftover) -> i64 {
    match strategy {
        Strategy::BestFit => MAX_NODE_SCORE - leftover.score(),
        Strategy::Spread => leftover.score(),
    }
}

/// The fit score of `strategy` on `node`, from its free CPU and memory after
/// `req`. A node that does not fit (scorers only see fitting ones) scores 0.
fn node_fit_score(strategy: Strategy, req: &InstanceRequest, node: &NodeView<'_>) -> i64 {
    let allocatable = &node.info.allocatable;
    Leftover::after(
        allocatable.cpu_millis.saturating_sub(node.used.cpu_millis),
        allocatable
            .memory_bytes
            .saturating_sub(node.used.memory_bytes),
        req,
        Scale::of(allocatable),
    )
    .map_or(0, |leftover| fit_score(strategy, &leftover))
}

impl Strategy {
    /// The scorer that ranks fitting nodes for this strategy.
    pub fn scorer(self) -> &'static dyn Scorer {
        match self {
            Self::BestFit => &BestFit,
            Self::Spread => &Spread,
        }
    }
}

/// Packs nodes: the less CPU and memory a node has left after the
/// placement (relative to its allocatable), the higher the score.
#[derive(Clone, Copy, Debug, Default)]
pub struct BestFit;

impl BestFit {
    /// The plugin's name in a [`crate::Policy`] (shared with [`Spread`]).
    pub const NAME: &str = scorer_names::FIT;
}

impl Scorer for BestFit {
    fn score(&self, req: &InstanceRequest, node: &NodeView<'_>) -> i64 {
        node_fit_score(Strategy::BestFit, req, node)
    }
}

/// Spreads instances (least allocated): the more CPU and memory a node has
/// left after the placement, the higher the score.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread;

impl Spread {
    /// The plugin's name in a [`crate::Policy`] (shared with [`BestFit`]).
    pub const NAME: &str = scorer_names::FIT;
}

impl Scorer for Spread {
    fn score(&self, req: &InstanceRequest, node: &NodeView<'_>) -> i64 {
        node_fit_score(Strategy::Spread, req, node)
    }
}

/// The sum of the weights of `req`'s preferred node affinity terms that
/// `node` matches.
pub(crate) fn preferred_node_affinity_score(req: &InstanceRequest, node: &NodeFacts<'_>) -> i64 {
    req.preferred_affinity
        .iter()
        .filter(|term| term.preference.matches_facts(node))
        .fold(0, |sum: i64, term| sum.saturating_add(term.weight))
}

/// The sum of the weights of the instance's preferred node affinity terms
/// that the node matches.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreferredNodeAffinity;

impl PreferredNodeAffinity {
    /// The plugin's name in a [`crate::Policy`].
    pub const NAME: &str = scorer_names::NODE_AFFINITY;
}

impl Scorer for PreferredNodeAffinity {
    /// [`Scope::Node`]: terms may name per-node labels or the node's name.
    /// The snapshot still scores it once per class unless they do.
    fn scope(&self) -> Scope {
        Scope::Node
    }

    fn score(&self, req: &InstanceRequest, node: &NodeView<'_>) -> i64 {
        preferred_node_affinity_score(req, &node.facts())
    }
}

/// Minus [`MAX_NODE_SCORE`] for each `PreferNoSchedule` taint of the node
/// the instance does not tolerate.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreferNoScheduleTaints;

impl PreferNoScheduleTaints {
    /// The plugin's name in a [`crate::Policy`].
    pub const NAME: &str = scorer_names::TAINT_TOLERATION;
}

impl Scorer for PreferNoScheduleTaints {
    fn scope(&self) -> Scope {
        Scope::Class
    }

    fn score(&self, req: &InstanceRequest, node: &NodeView<'_>) -> i64 {
        let untolerated = node
            .info
            .taints
            .iter()
            .filter(|taint| {
                taint.effect == TaintEffect::PreferNoSchedule && !tolerated(&req.tolerations, taint)
            })
            .count();
        i64::try_from(untolerated)
            .unwrap_or(i64::MAX)
            .saturating_mul(-MAX_NODE_SCORE)
    }
}

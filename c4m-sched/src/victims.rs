//! The cheapest set of victims on one node, by exact branch and bound.
//!
//! A node's problem is a list of amounts still to free (one per resource
//! dimension the preemptor is short of) and the instances that may be
//! evicted, sorted by priority. The search tries victim counts from a lower
//! bound upwards; for a count it walks combinations in priority order and
//! prunes on the cost lower bound (the cheapest completion by priority) and
//! on feasibility (the largest amount left in a dimension times the victims
//! still to pick must cover what is missing).

use std::cmp::Ordering;

/// How far a node's search may go before the node is given up on: a
/// pathological mix of sizes must not stall a scheduling cycle.
const SEARCH_STEPS: u64 = 1 << 18;

/// What a victim set costs; the derived order is the preference order:
/// fewer victims, then a lower highest priority, then a lower priority sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct VictimCost {
    pub(crate) count: usize,
    pub(crate) max_priority: i32,
    pub(crate) priority_sum: i64,
}

/// An instance that may be evicted.
#[derive(Debug)]
pub(crate) struct Evictable {
    pub(crate) priority: i32,
    /// What evicting it frees, per dimension of [`NodeProblem::deficits`].
    pub(crate) freed: Vec<u128>,
    /// Index into [`NodeProblem::allowances`].
    pub(crate) budget: Option<usize>,
    /// Holds a host port the preemptor needs: evicted whatever it costs.
    pub(crate) mandatory: bool,
}

/// What one node must free and what it may evict to do so.
#[derive(Debug, Default)]
pub(crate) struct NodeProblem {
    /// Amounts still to free, one per dimension the preemptor is short of.
    pub(crate) deficits: Vec<u128>,
    /// Sorted by ascending priority.
    pub(crate) evictable: Vec<Evictable>,
    /// How many more members each disruption budget lets go.
    pub(crate) allowances: Vec<u64>,
}

/// The cheapest feasible victim set strictly cheaper than `bound`, as
/// indices into `problem.evictable` in ascending order; `None` if there is
/// none (or the search ran out of steps). Equal costs go to the combination
/// met first in priority order.
pub(crate) fn cheapest_victims(
    problem: &NodeProblem,
    bound: Option<VictimCost>,
) -> Option<(VictimCost, Vec<usize>)> {
    let mut deficits = problem.deficits.clone();
    let mut allowances = problem.allowances.clone();
    let mut mandatory = Vec::new();
    let (mut max_priority, mut priority_sum) = (i32::MIN, 0i64);
    for (index, victim) in problem.evictable.iter().enumerate() {
        if victim.mandatory {
            if let Some(budget) = victim.budget {
                allowances[budget] = allowances[budget].checked_sub(1)?;
            }
            subtract(&mut deficits, &victim.freed);
            mandatory.push(index);
            max_priority = max_priority.max(victim.priority);
            priority_sum += i64::from(victim.priority);
        }
    }
    let optional: Vec<usize> = (0..problem.evictable.len())
        .filter(|&index| {
            let victim = &problem.evictable[index];
            !victim.mandatory && victim.budget.is_none_or(|budget| allowances[budget] > 0)
        })
        .collect();
    let fewest = fewest_extra(problem, &optional, &deficits)?;
    let mut search = Search::new(problem, &optional, allowances);
    for extra in fewest..=optional.len() {
        let count = mandatory.len() + extra;
        let to_beat = match bound {
            Some(bound) if count > bound.count => return None,
            Some(bound) if count == bound.count => Some((bound.max_priority, bound.priority_sum)),
            _ => None,
        };
        search.to_beat = to_beat;
        search.visit(0, extra, &deficits, max_priority, priority_sum)?;
        if let Some(picked) = search.found.take() {
            let (max_priority, priority_sum) = search.to_beat?;
            let mut victims = mandatory;
            victims.extend(picked.iter().map(|&position| optional[position]));
            victims.sort_unstable();
            let cost = VictimCost {
                count,
                max_priority,
                priority_sum,
            };
            return Some((cost, victims));
        }
    }
    None
}

/// `deficits -= freed`, stopping at zero.
fn subtract(deficits: &mut [u128], freed: &[u128]) {
    for (deficit, amount) in deficits.iter_mut().zip(freed) {
        *deficit = deficit.saturating_sub(*amount);
    }
}

/// The fewest optional victims that could cover every deficit, each
/// dimension on its own with its largest amounts; `None` if even all of them
/// cannot.
fn fewest_extra(problem: &NodeProblem, optional: &[usize], deficits: &[u128]) -> Option<usize> {
    let mut fewest = 0;
    for (dimension, &deficit) in deficits.iter().enumerate() {
        if deficit == 0 {
            continue;
        }
        let mut amounts: Vec<u128> = optional
            .iter()
            .map(|&index| problem.evictable[index].freed[dimension])
            .collect();
        amounts.sort_unstable_by(|a, b| b.cmp(a));
        let mut freed = 0u128;
        let needed = amounts.iter().position(|amount| {
            freed = freed.saturating_add(*amount);
            freed >= deficit
        })?;
        fewest = fewest.max(needed + 1);
    }
    Some(fewest)
}

/// The depth-first search over combinations of a fixed size.
struct Search<'a> {
    problem: &'a NodeProblem,
    optional: &'a [usize],
    /// `priority_prefix[i]`: the sum of the first `i` optional priorities.
    priority_prefix: Vec<i64>,
    /// `largest_from[i][d]`: the largest amount of dimension `d` among the
    /// optional victims from position `i` on.
    largest_from: Vec<Vec<u128>>,
    allowances: Vec<u64>,
    steps_left: u64,
    picked: Vec<usize>,
    /// The (highest priority, priority sum) a result must be strictly below.
    to_beat: Option<(i32, i64)>,
    found: Option<Vec<usize>>,
}

impl<'a> Search<'a> {
    fn new(problem: &'a NodeProblem, optional: &'a [usize], allowances: Vec<u64>) -> Self {
        let priority = |position: usize| problem.evictable[optional[position]].priority;
        let mut priority_prefix = vec![0i64; optional.len() + 1];
        for position in 0..optional.len() {
            priority_prefix[position + 1] =
                priority_prefix[position] + i64::from(priority(position));
        }
        let dimensions = problem.deficits.len();
        let mut largest_from = vec![vec![0u128; dimensions]; optional.len() + 1];
        for position in (0..optional.len()).rev() {
            let freed = &problem.evictable[optional[position]].freed;
            largest_from[position] = largest_from[position + 1]
                .iter()
                .zip(freed)
                .map(|(later, here)| (*later).max(*here))
                .collect();
        }
        Self {
            problem,
            optional,
            priority_prefix,
            largest_from,
            allowances,
            steps_left: SEARCH_STEPS,
            picked: Vec::new(),
            to_beat: None,
            found: None,
        }
    }

    fn beats(&self, max_priority: i32, priority_sum: i64) -> bool {
        self.to_beat
            .is_none_or(|to_beat| (max_priority, priority_sum).cmp(&to_beat) == Ordering::Less)
    }

    /// Picks `left` more victims from position `from` on; `None` when out of
    /// steps.
    fn visit(
        &mut self,
        from: usize,
        left: usize,
        deficits: &[u128],
        max_priority: i32,
        priority_sum: i64,
    ) -> Option<()> {
        if left == 0 {
            if deficits.iter().all(|deficit| *deficit == 0)
                && self.beats(max_priority, priority_sum)
            {
                self.to_beat = Some((max_priority, priority_sum));
                self.found = Some(self.picked.clone());
            }
            return Some(());
        }
        let Some(last_start) = self.optional.len().checked_sub(left) else {
            return Some(());
        };
        for position in from..=last_start {
            self.steps_left = self.steps_left.checked_sub(1)?;
            // Both bounds only grow with `position` (priorities ascend,
            // largest amounts shrink), so the first failure ends the loop.
            let cheapest_max = max_priority
                .max(self.problem.evictable[self.optional[position + left - 1]].priority);
            let cheapest_sum = priority_sum + self.priority_prefix[position + left]
                - self.priority_prefix[position];
            if !self.beats(cheapest_max, cheapest_sum) {
                break;
            }
            let scale = left as u128;
            let coverable = deficits
                .iter()
                .zip(&self.largest_from[position])
                .all(|(deficit, largest)| largest.saturating_mul(scale) >= *deficit);
            if !coverable {
                break;
            }
            let victim = &self.problem.evictable[self.optional[position]];
            if let Some(budget) = victim.budget {
                if self.allowances[budget] == 0 {
                    continue;
                }
                self.allowances[budget] -= 1;
            }
            let mut remaining = deficits.to_vec();
            subtract(&mut remaining, &victim.freed);
            self.picked.push(position);
            let outcome = self.visit(
                position + 1,
                left - 1,
                &remaining,
                max_priority.max(victim.priority),
                priority_sum + i64::from(victim.priority),
            );
            self.picked.pop();
            if let Some(budget) = victim.budget {
                self.allowances[budget] += 1;
            }
            outcome?;
        }
        Some(())
    }
}

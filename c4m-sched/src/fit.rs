//! How much of a node is left after a placement, exactly.

use std::cmp::Ordering;

use crate::model::{InstanceRequest, Resources};
use crate::scorers::MAX_NODE_SCORE;
use crate::wide::Wide;

/// The denominators of the leftover fraction. A zero allocatable dimension
/// counts as 1: such a node has nothing free there, so only a zero request
/// fits and that dimension's leftover term is 0 either way.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    cpu: u64,
    memory: u64,
}

impl Scale {
    pub(crate) fn of(allocatable: &Resources) -> Self {
        Self {
            cpu: allocatable.cpu_millis.max(1),
            memory: allocatable.memory_bytes.max(1),
        }
    }

    /// `cpu / self.cpu + memory / self.memory`, times `self.cpu * self.memory`.
    pub(crate) fn numerator(self, cpu: u64, memory: u64) -> Wide {
        Wide::product(cpu, self.memory).add(Wide::product(memory, self.cpu))
    }
}

/// A fitting node's free CPU and memory after placement, relative to its
/// allocatable: `cpu / scale.cpu + memory / scale.memory`, in `[0, 2]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Leftover {
    cpu: u64,
    memory: u64,
    scale: Scale,
}

impl Leftover {
    /// What remains of `free_cpu` and `free_memory` after `req`; `None` if
    /// they do not cover it.
    pub(crate) fn after(
        free_cpu: u64,
        free_memory: u64,
        req: &InstanceRequest,
        scale: Scale,
    ) -> Option<Self> {
        Some(Self {
            cpu: free_cpu.checked_sub(req.cpu_millis)?,
            memory: free_memory.checked_sub(req.memory_bytes)?,
            scale,
        })
    }

    /// Exact comparison by cross-multiplying denominators.
    pub(crate) fn cmp(&self, other: &Self) -> Ordering {
        let lhs = self
            .scale
            .numerator(self.cpu, self.memory)
            .mul_u64(other.scale.cpu)
            .mul_u64(other.scale.memory);
        let rhs = other
            .scale
            .numerator(other.cpu, other.memory)
            .mul_u64(self.scale.cpu)
            .mul_u64(self.scale.memory);
        lhs.cmp(&rhs)
    }

    /// The leftover on `0..=MAX_NODE_SCORE`, rounded down:
    /// `floor(MAX / 2 * (cpu / scale.cpu + memory / scale.memory))`. Rounding
    /// down keeps the order of [`Leftover::cmp`] (never inverts it).
    pub(crate) fn score(&self) -> i64 {
        let half = (MAX_NODE_SCORE / 2) as u128;
        let (cpu_scale, memory_scale) = (u128::from(self.scale.cpu), u128::from(self.scale.memory));
        let (cpu, memory) = (half * u128::from(self.cpu), half * u128::from(self.memory));
        let (cpu_whole, cpu_rest) = (cpu / cpu_scale, cpu % cpu_scale);
        let (memory_whole, memory_rest) = (memory / memory_scale, memory % memory_scale);
        // The two remainders add up to a whole one when
        // cpu_rest / cpu_scale >= 1 - memory_rest / memory_scale.
        let carry = u128::from(cpu_rest * memory_scale >= (memory_scale - memory_rest) * cpu_scale);
        // Free never exceeds allocatable, so the sum is at most MAX.
        i64::try_from(cpu_whole + memory_whole + carry).unwrap_or(MAX_NODE_SCORE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftover(cpu: u64, memory: u64, scale_cpu: u64, scale_memory: u64) -> Leftover {
        Leftover {
            cpu,
            memory,
            scale: Scale {
                cpu: scale_cpu,
                memory: scale_memory,
            },
        }
    }

    #[test]
    fn score_is_the_floor_of_the_exact_sum() {
        assert_eq!(leftover(0, 0, 4, 8).score(), 0);
        assert_eq!(leftover(4, 8, 4, 8).score(), 100);
        assert_eq!(leftover(2, 4, 4, 8).score(), 50);
        // 1/3 + 2/3 = 1 exactly, though each term alone rounds down.
        assert_eq!(leftover(1, 2, 3, 3).score(), 50);
        // 1/3 + 1/3 = 0.666.. -> 33.
        assert_eq!(leftover(1, 1, 3, 3).score(), 33);
        assert_eq!(
            leftover(u64::MAX, u64::MAX, u64::MAX, u64::MAX).score(),
            100
        );
        assert_eq!(leftover(u64::MAX - 1, 0, u64::MAX, u64::MAX).score(), 49);
    }
}

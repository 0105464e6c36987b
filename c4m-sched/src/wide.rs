//! Exact arithmetic for comparing leftover fractions.
//!
//! A leftover is `a / A + b / B` with every quantity a `u64`. Comparing two of
//! them exactly means cross-multiplying, which needs up to four `u64` factors
//! plus a carry (257 bits): more than `u128` holds, hence this small type.

/// An unsigned 320-bit integer: five 64-bit limbs, most significant first,
/// so the derived ordering is the numeric ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Wide([u64; 5]);

impl Wide {
    /// The full product of two `u64`.
    pub(crate) fn product(a: u64, b: u64) -> Self {
        let full = u128::from(a) * u128::from(b);
        Self([0, 0, 0, (full >> 64) as u64, full as u64])
    }

    /// `self + other`; callers stay far below 2^320, so overflow is a bug.
    pub(crate) fn add(self, other: Self) -> Self {
        let mut sum = [0u64; 5];
        let mut carry = false;
        for limb in (0..5).rev() {
            let (partial, carry_a) = self.0[limb].overflowing_add(other.0[limb]);
            let (partial, carry_b) = partial.overflowing_add(u64::from(carry));
            sum[limb] = partial;
            carry = carry_a || carry_b;
        }
        debug_assert!(!carry, "Wide addition overflowed");
        Self(sum)
    }

    /// `self * factor`; callers stay far below 2^320, so overflow is a bug.
    pub(crate) fn mul_u64(self, factor: u64) -> Self {
        let mut product = [0u64; 5];
        let mut carry = 0u128;
        for limb in (0..5).rev() {
            let partial = u128::from(self.0[limb]) * u128::from(factor) + carry;
            product[limb] = partial as u64;
            carry = partial >> 64;
        }
        debug_assert_eq!(carry, 0, "Wide multiplication overflowed");
        Self(product)
    }
}

#[cfg(test)]
mod tests {
    use super::Wide;

    #[test]
    fn product_and_sum_carry_across_limbs() {
        let max = Wide::product(u64::MAX, u64::MAX); // 2^128 - 2^65 + 1
        let twice = max.add(max);
        assert_eq!(twice, max.mul_u64(2));
        assert!(twice > max);
        // (2^64 - 1)^4 needs all of the top limbs.
        let fourth = max.mul_u64(u64::MAX).mul_u64(u64::MAX);
        assert_eq!(fourth.0, [0, u64::MAX - 3, 5, u64::MAX - 3, 1]);
        assert_eq!(fourth.add(fourth), fourth.mul_u64(2));
    }

    #[test]
    fn ordering_is_numeric() {
        assert!(Wide::product(1, 1) < Wide::product(u64::MAX, 2));
        assert!(Wide::product(u64::MAX, u64::MAX) > Wide::product(u64::MAX, u64::MAX - 1));
        assert_eq!(Wide::product(6, 7), Wide::product(21, 2));
        assert_eq!(Wide::default(), Wide::product(0, u64::MAX));
    }
}

//! Deterministic test data, without a random number generator crate: every value is an exact
//! function of a seed and an index, computed with integer arithmetic only (no `sin`, no `exp`),
//! so that every platform produces the same bits.

use half::{bf16, f16};
use qins_format::Dtype;

/// SplitMix64's output function: a well-mixed 64-bit hash of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A weight-like value for element `i` of the tensor with seed `seed`: mixed signs, about one
/// in nine values zero, magnitudes `(1 + k/1024) · 2^e` with `e` in `[-8, 3]`. Every value is
/// exact in f32 and in f16; round it with [`to_dtype`] for bf16.
pub fn weight(seed: u64, i: u64) -> f32 {
    let h = mix(seed.wrapping_mul(0x1_0000_0001) ^ i);
    if h.is_multiple_of(9) {
        return 0.0;
    }
    let frac = ((h >> 8) & 0x3FF) as f32 / 1024.0;
    let exp = ((h >> 20) % 12) as i32 - 8;
    let sign = if (h >> 40) & 1 == 1 { -1.0 } else { 1.0 };
    sign * (1.0 + frac) * pow2(exp)
}

/// `n` values of [`weight`], rounded to `dtype` (F32, F16 or BF16) and back to f32, as the
/// writer receives values of that dtype (§12: "converted to f32 exactly").
pub fn weights(seed: u64, n: usize, dtype: Dtype) -> Vec<f32> {
    (0..n as u64)
        .map(|i| to_dtype(weight(seed, i), dtype))
        .collect()
}

/// `x` rounded to nearest-even in `dtype` (F32, F16 or BF16) and converted back to f32.
///
/// # Panics
/// For a dtype that cannot be encoded.
pub fn to_dtype(x: f32, dtype: Dtype) -> f32 {
    match dtype {
        Dtype::F32 => x,
        Dtype::F16 => f16::from_f32(x).to_f32(),
        Dtype::BF16 => bf16::from_f32(x).to_f32(),
        other => panic!("{other} cannot be encoded"),
    }
}

/// `2^e` for `e` in the normal range of f32, exactly.
pub fn pow2(e: i32) -> f32 {
    assert!((-126..=127).contains(&e), "2^{e} is not a normal f32");
    f32::from_bits(((e + 127) as u32) << 23)
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of f32 bit patterns.
pub fn f32_bits_bytes(bits: &[u32]) -> Vec<u8> {
    bits.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_exact_and_varied() {
        let v = weights(7, 1000, Dtype::F32);
        assert!(v.contains(&0.0));
        assert!(v.iter().any(|&x| x < 0.0));
        assert!(v.iter().any(|&x| x > 4.0));
        assert!(v.iter().all(|&x| f16::from_f32(x).to_f32() == x));
        assert_eq!(pow2(-3), 0.125);
        assert_eq!(pow2(0), 1.0);
    }
}

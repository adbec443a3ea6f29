//! The dtype registry (§13.1).

use std::fmt;
use std::str::FromStr;

macro_rules! dtypes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $bits:literal;)*) => {
        /// A tensor element type, with its registry code (§13.1). The names are safetensors'.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(non_camel_case_types)]
        pub enum Dtype {
            $($(#[$doc])* $variant,)*
        }

        impl Dtype {
            /// Every dtype of the registry, in code order.
            pub const ALL: &'static [Dtype] = &[$(Dtype::$variant,)*];

            /// The registry code stored in a tensor record.
            pub const fn code(self) -> u8 {
                match self { $(Dtype::$variant => $code,)* }
            }

            /// The dtype with registry code `code`, or `None` for an unknown code.
            pub const fn from_code(code: u8) -> Option<Dtype> {
                match code { $($code => Some(Dtype::$variant),)* _ => None }
            }

            /// The storage size of one element in bits.
            pub const fn bits(self) -> u32 {
                match self { $(Dtype::$variant => $bits,)* }
            }

            /// The safetensors name, e.g. `"BF16"`.
            pub const fn name(self) -> &'static str {
                match self { $(Dtype::$variant => $name,)* }
            }
        }

        impl FromStr for Dtype {
            type Err = UnknownDtypeName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Dtype::$variant),)*
                    _ => Err(UnknownDtypeName(s.to_string())),
                }
            }
        }
    };
}

dtypes! {
    /// Boolean, one byte.
    BOOL = 1, "BOOL", 8;
    /// Unsigned 8-bit integer.
    U8 = 2, "U8", 8;
    /// Signed 8-bit integer.
    I8 = 3, "I8", 8;
    /// Signed 16-bit integer.
    I16 = 4, "I16", 16;
    /// Unsigned 16-bit integer.
    U16 = 5, "U16", 16;
    /// Signed 32-bit integer.
    I32 = 6, "I32", 32;
    /// Unsigned 32-bit integer.
    U32 = 7, "U32", 32;
    /// Signed 64-bit integer.
    I64 = 8, "I64", 64;
    /// Unsigned 64-bit integer.
    U64 = 9, "U64", 64;
    /// IEEE half precision.
    F16 = 10, "F16", 16;
    /// bfloat16.
    BF16 = 11, "BF16", 16;
    /// IEEE single precision.
    F32 = 12, "F32", 32;
    /// IEEE double precision.
    F64 = 13, "F64", 64;
    /// 8-bit float, 5 exponent bits.
    F8_E5M2 = 14, "F8_E5M2", 8;
    /// 8-bit float, 4 exponent bits.
    F8_E4M3 = 15, "F8_E4M3", 8;
    /// 8-bit exponent-only float (MX scales).
    F8_E8M0 = 16, "F8_E8M0", 8;
    /// 8-bit float, 4 exponent bits, finite, no negative zero.
    F8_E4M3FNUZ = 17, "F8_E4M3FNUZ", 8;
    /// 8-bit float, 5 exponent bits, finite, no negative zero.
    F8_E5M2FNUZ = 18, "F8_E5M2FNUZ", 8;
    /// 4-bit float (E2M1), two per byte.
    F4 = 19, "F4", 4;
    /// 6-bit float, 2 exponent bits.
    F6_E2M3 = 20, "F6_E2M3", 6;
    /// 6-bit float, 3 exponent bits.
    F6_E3M2 = 21, "F6_E3M2", 6;
    /// Complex of two f32.
    C64 = 22, "C64", 64;
}

impl Dtype {
    /// Whether tensors of this dtype can be encoded (§13.2): F16, BF16, F32.
    pub const fn is_encodable(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32)
    }

    /// Whether this is a floating-point dtype (of any width).
    pub const fn is_float(self) -> bool {
        !matches!(
            self,
            Dtype::BOOL
                | Dtype::U8
                | Dtype::I8
                | Dtype::I16
                | Dtype::U16
                | Dtype::I32
                | Dtype::U32
                | Dtype::I64
                | Dtype::U64
        )
    }

    /// Converts little-endian elements of an encodable dtype to f32 (exact for F16 and BF16).
    /// Returns `None` for any other dtype or when `bytes` is not a whole number of elements or
    /// does not match `out`'s length.
    pub fn to_f32(self, bytes: &[u8], out: &mut [f32]) -> Option<()> {
        let size = (self.bits() / 8) as usize;
        if !self.is_encodable() || bytes.len() != out.len().checked_mul(size)? {
            return None;
        }
        let chunks = bytes.chunks_exact(size);
        match self {
            Dtype::F32 => chunks
                .zip(out)
                .for_each(|(b, o)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Dtype::BF16 => chunks
                .zip(out)
                .for_each(|(b, o)| *o = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            Dtype::F16 => chunks
                .zip(out)
                .for_each(|(b, o)| *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            _ => return None,
        }
        Some(())
    }
}

/// bfloat16 bits to f32, exactly: the conversion of [`Dtype::to_f32`] and of the encoders.
pub(crate) fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// float16 bits to f32, exactly: the conversion of [`Dtype::to_f32`] and of the encoders, bit
/// for bit `half`'s (a test compares all 2^16 patterns). Without a branch, so that the loops
/// over a chunk vectorise (`half`'s software conversion, used before, made every F16 pass
/// 1.5–2× slower than the BF16 one): the magnitude's bits moved into an f32's place are the
/// value times 2^-112, an f32 (subnormal for an F16 subnormal) that the multiplication by 2^112
/// makes exact; infinities and NaNs (quieted, as `half` does) are put together from the bits.
#[inline]
pub(crate) fn f16_to_f32(b: u16) -> f32 {
    let b = u32::from(b);
    let (sign, m) = ((b & 0x8000) << 16, b & 0x7FFF);
    let finite = (f32::from_bits(m << 13) * f32::from_bits(0x7780_0000)).to_bits();
    let special = (m << 13) | 0x7F80_0000 | if m > 0x7C00 { 0x0040_0000 } else { 0 };
    f32::from_bits(sign | if m >= 0x7C00 { special } else { finite })
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dtype name that is not in the registry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype name {0:?}")]
pub struct UnknownDtypeName(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_to_f32_equals_half_on_every_pattern() {
        for b in 0..=u16::MAX {
            let want = half::f16::from_bits(b).to_f32();
            assert_eq!(f16_to_f32(b).to_bits(), want.to_bits(), "{b:#06x}");
        }
    }

    #[test]
    fn codes_round_trip_and_are_dense() {
        for (i, d) in Dtype::ALL.iter().enumerate() {
            assert_eq!(usize::from(d.code()), i + 1);
            assert_eq!(Dtype::from_code(d.code()), Some(*d));
            assert_eq!(d.name().parse::<Dtype>(), Ok(*d));
        }
        assert_eq!(Dtype::from_code(0), None);
        assert_eq!(Dtype::from_code(23), None);
        assert!("f32".parse::<Dtype>().is_err());
    }

    #[test]
    fn to_f32_is_exact_for_half_types() {
        let bf = half::bf16::from_f32(-1.5).to_bits().to_le_bytes();
        let h = half::f16::from_f32(0.099975586).to_bits().to_le_bytes();
        let mut out = [0f32; 1];
        Dtype::BF16.to_f32(&bf, &mut out).unwrap();
        assert_eq!(out[0], -1.5);
        Dtype::F16.to_f32(&h, &mut out).unwrap();
        assert_eq!(out[0], 0.099975586);
        assert_eq!(Dtype::I32.to_f32(&[0; 4], &mut out), None);
        assert_eq!(Dtype::F32.to_f32(&[0; 3], &mut out), None);
    }
}

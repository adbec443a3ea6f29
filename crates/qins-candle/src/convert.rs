//! Filling a candle tensor's buffer: from a `.qins` encoded tensor by the decode rule, or from
//! a raw tensor's bytes (a `.qins` raw tensor and a safetensors tensor alike) by a dtype
//! conversion. Each value is written once, into the vector that becomes the tensor's storage;
//! large tensors are filled in parallel, in chunks, by rayon.

use std::convert::Infallible;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use qins_format::Dtype;
use qins_read::{DecodeError, TensorView};
use rayon::prelude::*;

use crate::LoadError;

/// Elements per parallel chunk: 256 KiB of f32, large enough that a chunk's scheduling cost is
/// noise, small enough that a 10 M-element tensor splits into 40 pieces for 2–64 cores.
pub(crate) const CHUNK: usize = 1 << 16;

/// Fills `out` by `fill(first_element, chunk)`, in parallel chunks when `out` is large.
pub(crate) fn par_fill<T: Send, E: Send>(
    out: &mut [T],
    fill: impl Fn(usize, &mut [T]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    if out.len() <= 2 * CHUNK {
        return fill(0, out);
    }
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .try_for_each(|(i, chunk)| fill(i * CHUNK, chunk))
}

/// Element types a tensor is decoded into directly.
pub(crate) trait Float: candle_core::WithDType + Copy + Default + Send + Sync {
    /// From an f32 value, rounded to nearest even.
    fn from_f32(x: f32) -> Self;
    /// From bfloat16 bits, exactly where the type can hold them.
    fn from_bf16_bits(b: u16) -> Self;
    /// Decodes elements `first..first + out.len()` of encoded tensor `t` (§11.4).
    fn decode(t: &TensorView<'_>, first: u64, out: &mut [Self]) -> Result<(), DecodeError>;
}

impl Float for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
    fn from_bf16_bits(b: u16) -> Self {
        f32::from_bits(u32::from(b) << 16)
    }
    fn decode(t: &TensorView<'_>, first: u64, out: &mut [Self]) -> Result<(), DecodeError> {
        t.decode_f32(first, out)
    }
}

impl Float for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn from_bf16_bits(b: u16) -> Self {
        bf16::from_bits(b)
    }
    fn decode(t: &TensorView<'_>, first: u64, out: &mut [Self]) -> Result<(), DecodeError> {
        t.decode_bf16(first, out)
    }
}

impl Float for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn from_bf16_bits(b: u16) -> Self {
        f16::from_f32(f32::from_bits(u32::from(b) << 16))
    }
    fn decode(t: &TensorView<'_>, first: u64, out: &mut [Self]) -> Result<(), DecodeError> {
        t.decode_f16(first, out)
    }
}

/// Converts a chunk of little-endian `dtype` elements (F32, F16 or BF16) into `out`: exact for
/// a wider or equal target, rounded once to nearest even otherwise.
fn convert_chunk<T: Float>(dtype: Dtype, bytes: &[u8], out: &mut [T]) {
    match dtype {
        Dtype::BF16 => {
            for (b, o) in bytes.chunks_exact(2).zip(out) {
                *o = T::from_bf16_bits(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        _ => {
            // F32 and F16, through f32 (exact for both), in stack-sized pieces.
            let mut tmp = [0f32; 1024];
            let size = (dtype.bits() / 8) as usize;
            for (b, o) in bytes.chunks(1024 * size).zip(out.chunks_mut(1024)) {
                let tmp = &mut tmp[..o.len()];
                dtype
                    .to_f32(b, tmp)
                    .expect("an encodable dtype and matching lengths");
                for (t, o) in tmp.iter().zip(o) {
                    *o = T::from_f32(*t);
                }
            }
        }
    }
}

/// The candle dtype holding a raw tensor's values exactly, where candle has one.
fn candle_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::BOOL | Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F8_E4M3 => DType::F8E4M3,
        // Held, but candle converts it to nothing else (its "dummy" types).
        Dtype::F8_E8M0 => DType::F8E8M0,
        _ => return None,
    })
}

/// Builds the tensor `name` of `want` dtype from raw little-endian `bytes` of `dtype`.
///
/// F32, F16 and BF16 become F32, BF16 or F16 in one pass into the tensor's own buffer; other
/// combinations go through candle's conversion (a copy in the stored dtype, then `to_dtype`).
pub(crate) fn raw_tensor(
    file: &Path,
    name: &str,
    dtype: Dtype,
    bytes: &[u8],
    shape: &[usize],
    want: DType,
    device: &Device,
) -> Result<Tensor, LoadError> {
    fn direct<T: Float>(
        dtype: Dtype,
        bytes: &[u8],
        shape: &[usize],
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let size = (dtype.bits() / 8) as usize;
        let mut out = vec![T::default(); bytes.len() / size];
        let Ok(()) = par_fill::<_, Infallible>(&mut out, |first, chunk| {
            let b = &bytes[first * size..(first + chunk.len()) * size];
            convert_chunk(dtype, b, chunk);
            Ok(())
        });
        Tensor::from_vec(out, shape, device)
    }
    let candle_err = |source: candle_core::Error| LoadError::Candle {
        tensor: name.to_string(),
        file: file.into(),
        source: Box::new(source),
    };
    if dtype.is_encodable() {
        let made = match want {
            DType::F32 => Some(direct::<f32>(dtype, bytes, shape, device)),
            DType::BF16 => Some(direct::<bf16>(dtype, bytes, shape, device)),
            DType::F16 => Some(direct::<f16>(dtype, bytes, shape, device)),
            _ => None,
        };
        if let Some(made) = made {
            return made.map_err(candle_err);
        }
    }
    let stored = candle_dtype(dtype).ok_or_else(|| LoadError::UnsupportedDtype {
        tensor: name.to_string(),
        file: file.into(),
        stored: dtype.name(),
        requested: want.as_str(),
    })?;
    Tensor::from_raw_buffer(bytes, stored, shape, device)
        .and_then(|t| t.to_dtype(want))
        .map_err(candle_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_to_all_targets_is_exact_and_f32_rounds_once() {
        let values = [1.0f32, -2.5, 3.140625, 0.0, -0.0, 65504.0];
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let mut out = vec![0f32; values.len()];
        convert_chunk(Dtype::BF16, &bytes, &mut out);
        assert_eq!(out, values.map(|v| bf16::from_f32(v).to_f32()));

        let f32_bytes: Vec<u8> = [1.0f32 + f32::EPSILON, 0.1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut out = vec![bf16::ZERO; 2];
        convert_chunk(Dtype::F32, &f32_bytes, &mut out);
        assert_eq!(
            out,
            [bf16::from_f32(1.0 + f32::EPSILON), bf16::from_f32(0.1)]
        );
    }

    #[test]
    fn par_fill_covers_every_element_once_in_order() {
        let mut out = vec![0u64; 5 * CHUNK + 17];
        par_fill(&mut out, |first, chunk| {
            for (i, o) in chunk.iter_mut().enumerate() {
                *o += (first + i) as u64;
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as u64));
    }
}

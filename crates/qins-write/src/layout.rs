//! A plan validated against the spec's rules (names, ranks, dtypes, codecs and their row
//! scales, limits) and laid out: every record and every section's offset (§3–§9), before any
//! data is seen.

use std::collections::HashSet;

use qins_format::codec::Codec;
use qins_format::layout::Cursor;
use qins_format::names::{check_asset_name, check_tensor_name, NameProblem};
use qins_format::{
    alignment_is_valid, header_size, limits, section_lengths, AssetRecord, SectionRef, Storage,
    TensorRecord, FLAG_ROW_SCALES, LUT_BYTES, MAX_RANK,
};

use crate::{invalid, Plan, WriteError};

/// A validated plan's header parts and every offset, checksums left at zero.
pub(crate) struct Layout {
    /// One record per tensor, in plan order.
    pub records: Vec<TensorRecord>,
    /// One record per asset, in plan order.
    pub assets: Vec<AssetRecord>,
    /// The string table: tensor names, then asset names.
    pub strings: Vec<u8>,
    /// The metadata object's JSON (empty without metadata).
    pub metadata: Vec<u8>,
    /// The LUT table's section (its CRC still zero).
    pub lut_table: SectionRef,
    /// Size of the header block.
    pub header_size: u64,
    /// Size of the whole file.
    pub file_size: u64,
}

/// Validates a plan and computes every record and offset (§3–§9), checksums left at zero.
pub(crate) fn layout(plan: &Plan) -> Result<Layout, WriteError> {
    if !alignment_is_valid(plan.alignment) {
        return Err(invalid(
            "alignment",
            format!("{} is not a power of two in [64, 1048576]", plan.alignment),
        ));
    }
    if plan.tensors.len() > limits::MAX_TENSORS as usize {
        return Err(invalid(
            "tensors",
            format!(
                "{} tensors, the limit is {}",
                plan.tensors.len(),
                limits::MAX_TENSORS
            ),
        ));
    }
    if plan.assets.len() > limits::MAX_ASSETS as usize {
        return Err(invalid(
            "assets",
            format!(
                "{} assets, the limit is {}",
                plan.assets.len(),
                limits::MAX_ASSETS
            ),
        ));
    }
    let name_err =
        |kind: &str, name: &str, p: NameProblem| invalid(format!("{kind} {name:?}"), p.to_string());
    let mut strings = Vec::new();
    let mut seen = HashSet::new();
    let mut records = Vec::with_capacity(plan.tensors.len());
    let mut lengths = Vec::with_capacity(plan.tensors.len());
    let mut encoded = 0u32;
    for t in &plan.tensors {
        check_tensor_name(t.name.as_bytes()).map_err(|p| name_err("tensor", &t.name, p))?;
        if !seen.insert(t.name.as_str()) {
            return Err(invalid(
                format!("tensor {:?}", t.name),
                "the name is used twice",
            ));
        }
        if t.shape.len() > MAX_RANK {
            return Err(invalid(
                format!("tensor {:?}", t.name),
                format!("rank {} exceeds 8", t.shape.len()),
            ));
        }
        let (codec, flags, lut_index) = match t.storage {
            Storage::Raw => (0, 0, 0),
            Storage::Encoded { codec, row_scales } => {
                if !t.dtype.is_encodable() {
                    return Err(invalid(
                        format!("tensor {:?}", t.name),
                        format!(
                            "dtype {} cannot be encoded (only F16, BF16, F32); keep it raw",
                            t.dtype
                        ),
                    ));
                }
                // §12.3, §12.4: a writer MUST NOT set ROW_SCALES on `lloyd` and MUST set it on
                // `lloyd-rows`; `log` and `linear` may have row scales or not.
                let fixed = match codec {
                    Codec::Lloyd => Some(false),
                    Codec::LloydRows => Some(true),
                    Codec::Log | Codec::Linear => None,
                };
                if fixed.is_some_and(|needed| needed != row_scales) {
                    return Err(invalid(
                        format!("tensor {:?}", t.name),
                        if row_scales {
                            format!("codec {codec} has no row scales (§12.3); plan it without")
                        } else {
                            format!("codec {codec} needs row scales (§12.4); plan it with them")
                        },
                    ));
                }
                encoded += 1;
                (
                    codec.id(),
                    if row_scales { FLAG_ROW_SCALES } else { 0 },
                    encoded - 1,
                )
            }
        };
        let lens = section_lengths(t.dtype, &t.shape, t.storage).ok_or_else(|| {
            // `None` is an overflow, or sub-byte elements that do not fill whole bytes.
            let why = match qins_format::numel(&t.shape) {
                None => ": its element count overflows 64 bits",
                Some(n)
                    if t.storage == Storage::Raw
                        && n.checked_mul(u64::from(t.dtype.bits())).is_some() =>
                {
                    " has no whole byte size"
                }
                Some(_) => ": its size in bytes overflows 64 bits",
            };
            invalid(
                format!("tensor {:?}", t.name),
                format!("shape {:?} of {}{why}", t.shape, t.dtype),
            )
        })?;
        lengths.push(lens);
        let mut shape = [0u64.into(); MAX_RANK];
        for (s, &d) in shape.iter_mut().zip(&t.shape) {
            *s = d.into();
        }
        records.push(TensorRecord {
            name_offset: (strings.len() as u32).into(),
            name_len: (t.name.len() as u32).into(),
            dtype: t.dtype.code(),
            rank: t.shape.len() as u8,
            codec: codec.into(),
            flags: flags.into(),
            shape,
            param0: 0.0.into(),
            param1: 0.0.into(),
            lut_index: lut_index.into(),
            reserved: 0.into(),
            data: SectionRef::default(),
            signs: SectionRef::default(),
            scales: SectionRef::default(),
        });
        strings.extend_from_slice(t.name.as_bytes());
    }
    let mut seen = HashSet::new();
    let mut assets = Vec::with_capacity(plan.assets.len());
    for a in &plan.assets {
        check_asset_name(a.name.as_bytes()).map_err(|p| name_err("asset", &a.name, p))?;
        if !seen.insert(a.name.as_str()) {
            return Err(invalid(
                format!("asset {:?}", a.name),
                "the name is used twice",
            ));
        }
        assets.push(AssetRecord {
            name_offset: (strings.len() as u32).into(),
            name_len: (a.name.len() as u32).into(),
            data: SectionRef::default(),
        });
        strings.extend_from_slice(a.name.as_bytes());
    }
    let metadata = if plan.metadata.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&plan.metadata).map_err(|e| invalid("metadata", e.to_string()))?
    };
    if metadata.len() > limits::MAX_METADATA as usize {
        return Err(invalid(
            "metadata",
            format!(
                "{} bytes of JSON, the limit is {}",
                metadata.len(),
                limits::MAX_METADATA
            ),
        ));
    }
    let too_big = || {
        invalid(
            "header",
            "the header would exceed the 256 MiB limit; split the model",
        )
    };
    let strings_size = u32::try_from(strings.len()).map_err(|_| too_big())?;
    let hs = header_size(
        records.len() as u32,
        assets.len() as u32,
        strings_size,
        metadata.len() as u32,
    )
    .filter(|&h| h <= limits::MAX_HEADER_SIZE)
    .ok_or_else(too_big)?;
    let overflow = || invalid("layout", "section offsets overflow 64 bits");
    let mut cur = Cursor::new(hs, plan.alignment);
    let lut_len = u64::from(encoded) * LUT_BYTES;
    let lut_table = SectionRef::new(cur.place(lut_len).ok_or_else(overflow)?, lut_len, 0);
    for (rec, lens) in records.iter_mut().zip(&lengths) {
        rec.data = SectionRef::new(cur.place(lens[0]).ok_or_else(overflow)?, lens[0], 0);
        if rec.codec.get() != 0 {
            rec.signs = SectionRef::new(cur.place(lens[1]).ok_or_else(overflow)?, lens[1], 0);
            if rec.flags.get() & FLAG_ROW_SCALES != 0 {
                rec.scales = SectionRef::new(cur.place(lens[2]).ok_or_else(overflow)?, lens[2], 0);
            }
        }
    }
    for (rec, a) in assets.iter_mut().zip(&plan.assets) {
        let len = a.data.len() as u64;
        rec.data = SectionRef::new(cur.place(len).ok_or_else(overflow)?, len, 0);
    }
    Ok(Layout {
        records,
        assets,
        strings,
        metadata,
        lut_table,
        header_size: hs,
        file_size: cur.end(),
    })
}

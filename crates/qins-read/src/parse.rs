//! Validation of a whole file, in the order of §17.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use qins_format::layout::Cursor;
use qins_format::limits::{MAX_ASSETS, MAX_HEADER_SIZE, MAX_METADATA, MAX_TENSORS};
use qins_format::names::{check_asset_name, check_tensor_name};
use qins_format::{
    alignment_is_valid, header_size, section_lengths, AssetRecord, Codec, Dtype, Preamble,
    SectionRef, Storage, TensorRecord, FLAG_ROW_SCALES, KNOWN_REQUIRED_FEATURES,
    KNOWN_TENSOR_FLAGS, LUT_BYTES, MAGIC, MAX_RANK, PREAMBLE_SIZE, TENSOR_RECORD_SIZE,
    VERSION_MAJOR,
};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use zerocopy::FromBytes;

use crate::{AssetInfo, Qins, ReadError, TensorInfo};

fn limit(what: &str, value: u64, limit: u64) -> Result<(), ReadError> {
    if value > limit {
        return Err(ReadError::LimitExceeded {
            what: what.to_string(),
            value,
            limit,
        });
    }
    Ok(())
}

fn reserved(field: impl Into<String>, nonzero: bool) -> Result<(), ReadError> {
    if nonzero {
        return Err(ReadError::ReservedNonZero {
            field: field.into(),
        });
    }
    Ok(())
}

pub(crate) fn parse(data: &[u8]) -> Result<Qins<'_>, ReadError> {
    let actual = data.len() as u64;
    // Step 1: preamble, magic, version, features.
    let Ok((p, _)) = Preamble::read_from_prefix(data) else {
        return Err(ReadError::Truncated {
            what: "the preamble",
            needed: PREAMBLE_SIZE,
            actual,
        });
    };
    if p.magic != MAGIC {
        return Err(ReadError::BadMagic { found: p.magic });
    }
    if p.version_major.get() != VERSION_MAJOR {
        return Err(ReadError::UnsupportedVersion {
            major: p.version_major.get(),
            minor: p.version_minor.get(),
        });
    }
    let unknown = p.required_features.get() & !KNOWN_REQUIRED_FEATURES;
    if unknown != 0 {
        return Err(ReadError::UnsupportedFeature { bits: unknown });
    }

    // Step 2: limits, then header_size against the counts.
    let (tensor_count, asset_count) = (p.tensor_count.get(), p.asset_count.get());
    limit("tensor_count", tensor_count.into(), MAX_TENSORS.into())?;
    limit("asset_count", asset_count.into(), MAX_ASSETS.into())?;
    limit(
        "metadata_size",
        p.metadata_size.get().into(),
        MAX_METADATA.into(),
    )?;
    let hs = p.header_size.get();
    limit("header_size", hs, MAX_HEADER_SIZE)?;
    let computed = header_size(
        tensor_count,
        asset_count,
        p.strings_size.get(),
        p.metadata_size.get(),
    )
    .expect("bounded counts cannot overflow u64");
    if hs != computed {
        return Err(ReadError::HeaderSizeMismatch {
            declared: hs,
            computed,
        });
    }

    // Step 3: the file's length.
    let file_size = p.file_size.get();
    if actual < file_size {
        return Err(ReadError::Truncated {
            what: "file_size",
            needed: file_size,
            actual,
        });
    }
    if actual > file_size {
        return Err(ReadError::TrailingBytes {
            what: "file_size",
            expected: file_size,
            actual,
        });
    }
    if hs > file_size {
        return Err(ReadError::Truncated {
            what: "header_size",
            needed: hs,
            actual,
        });
    }

    // Step 4: the header checksum.
    let header = &data[..hs as usize];
    let (body, crc) = header.split_at(header.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(ReadError::HeaderChecksum { stored, computed });
    }

    // Step 5: reserved fields, alignment.
    reserved(
        "preamble reserved field at offset 60",
        p.reserved0.get() != 0,
    )?;
    reserved(
        "preamble reserved field at offset 88",
        p.reserved1.get() != 0,
    )?;
    reserved("lut_table.reserved", p.lut_table.reserved.get() != 0)?;
    let alignment = p.alignment.get();
    if !alignment_is_valid(alignment) {
        return Err(ReadError::BadAlignment { alignment });
    }

    // The header's parts; all in bounds since header_size matched the counts.
    let mut at = PREAMBLE_SIZE as usize;
    let mut take = |n: usize| {
        let s = &body[at..at + n];
        at += n;
        s
    };
    let records =
        <[TensorRecord]>::ref_from_bytes(take(tensor_count as usize * TENSOR_RECORD_SIZE as usize))
            .expect("unaligned records of exact size");
    let asset_records = <[AssetRecord]>::ref_from_bytes(take(
        asset_count as usize * qins_format::ASSET_RECORD_SIZE as usize,
    ))
    .expect("unaligned records of exact size");
    let strings = take(p.strings_size.get() as usize);
    let metadata_bytes = take(p.metadata_size.get() as usize);

    let name_of = |what: &dyn Fn() -> String, off: u32, len: u32| -> Result<&[u8], ReadError> {
        let (a, n) = (off as usize, len as usize);
        strings
            .get(a..a.saturating_add(n))
            .ok_or_else(|| ReadError::OutOfBounds {
                section: what(),
                offset: off.into(),
                length: len.into(),
                limit: strings.len() as u64,
            })
    };

    // Step 6: tensor records.
    let mut tensors = Vec::with_capacity(records.len());
    let mut by_name = HashMap::with_capacity(records.len());
    let mut encoded = 0u32;
    for (k, r) in records.iter().enumerate() {
        let raw = name_of(
            &|| format!("tensor record {k} name"),
            r.name_offset.get(),
            r.name_len.get(),
        )?;
        let name = check_tensor_name(raw).map_err(|problem| ReadError::BadName {
            what: format!("tensor record {k}"),
            problem,
        })?;
        if by_name.insert(name, k).is_some() {
            return Err(ReadError::DuplicateName {
                what: format!("tensor {name:?}"),
            });
        }
        let t = || name.to_string();
        let dtype = Dtype::from_code(r.dtype).ok_or(ReadError::UnknownDtype {
            tensor: t(),
            code: r.dtype,
        })?;
        let rank = usize::from(r.rank);
        if rank > MAX_RANK {
            return Err(ReadError::BadShape {
                tensor: t(),
                reason: format!("rank {rank} exceeds 8"),
            });
        }
        if let Some(i) = (rank..MAX_RANK).find(|&i| r.shape[i].get() != 0) {
            return Err(ReadError::BadShape {
                tensor: t(),
                reason: format!("shape[{i}] is set but the rank is {rank}"),
            });
        }
        let shape: Vec<u64> = r.shape[..rank].iter().map(|d| d.get()).collect();
        if qins_format::numel(&shape).is_none() {
            return Err(ReadError::LimitExceeded {
                what: format!("tensor {name:?} element count of {shape:?}"),
                value: u64::MAX,
                limit: u64::MAX,
            });
        }
        let codec_id = r.codec.get();
        let flags = r.flags.get();
        let storage = if codec_id == 0 {
            Storage::Raw
        } else {
            let codec = Codec::from_id(codec_id).ok_or(ReadError::UnknownCodec {
                tensor: t(),
                id: codec_id,
            })?;
            if !dtype.is_encodable() {
                return Err(ReadError::BadDtypeForCodec {
                    tensor: t(),
                    dtype: dtype.name(),
                });
            }
            Storage::Encoded {
                codec,
                row_scales: flags & FLAG_ROW_SCALES != 0,
            }
        };
        reserved(
            format!("tensor {name:?} flags"),
            flags & !KNOWN_TENSOR_FLAGS != 0,
        )?;
        reserved(
            format!("tensor {name:?} reserved field"),
            r.reserved.get() != 0,
        )?;
        for (part, s) in [
            ("data", &r.data),
            ("signs", &r.signs),
            ("scales", &r.scales),
        ] {
            reserved(
                format!("tensor {name:?} {part}.reserved"),
                s.reserved.get() != 0,
            )?;
        }
        let (p0, p1) = (r.param0.get(), r.param1.get());
        match storage {
            Storage::Raw => {
                if flags & FLAG_ROW_SCALES != 0 {
                    return Err(ReadError::FlagMismatch { tensor: t() });
                }
                if p0.to_bits() != 0 || p1.to_bits() != 0 {
                    return Err(ReadError::BadParams {
                        tensor: t(),
                        param0: p0,
                        param1: p1,
                    });
                }
                if r.lut_index.get() != 0 {
                    return Err(ReadError::BadLutIndex {
                        what: format!("tensor {name:?} (raw) lut_index"),
                        expected: 0,
                        found: r.lut_index.get().into(),
                    });
                }
            }
            Storage::Encoded { codec, .. } => {
                if !codec.params_are_valid(p0, p1) {
                    return Err(ReadError::BadParams {
                        tensor: t(),
                        param0: p0,
                        param1: p1,
                    });
                }
                if r.lut_index.get() != encoded {
                    return Err(ReadError::BadLutIndex {
                        what: format!("tensor {name:?} lut_index"),
                        expected: encoded.into(),
                        found: r.lut_index.get().into(),
                    });
                }
                encoded += 1;
            }
        }
        let lens = section_lengths(dtype, &shape, storage).ok_or_else(|| {
            // Either a byte size overflows u64 (§16) or sub-byte elements do not fill
            // whole bytes (§13.1).
            let n = qins_format::numel(&shape).unwrap_or(0);
            match n.checked_mul(u64::from(dtype.bits())) {
                Some(bits) if storage == Storage::Raw => ReadError::SectionSize {
                    section: format!("tensor {name:?} data ({bits} bits, not whole bytes)"),
                    expected: bits.div_ceil(8),
                    found: r.data.length.get(),
                },
                _ => ReadError::LimitExceeded {
                    what: format!("tensor {name:?} byte size of {shape:?} {dtype}"),
                    value: u64::MAX,
                    limit: u64::MAX,
                },
            }
        })?;
        let encoded_here = storage != Storage::Raw;
        let row_scales = matches!(
            storage,
            Storage::Encoded {
                row_scales: true,
                ..
            }
        );
        for (part, s, used, len) in [
            ("data", &r.data, true, lens[0]),
            ("signs", &r.signs, encoded_here, lens[1]),
            ("scales", &r.scales, row_scales, lens[2]),
        ] {
            if used && s.length.get() != len {
                return Err(ReadError::SectionSize {
                    section: format!("tensor {name:?} {part}"),
                    expected: len,
                    found: s.length.get(),
                });
            }
            if !used && !s.is_unused() {
                return Err(ReadError::SectionSize {
                    section: format!("tensor {name:?} {part} (unused, must be all zero)"),
                    expected: 0,
                    found: s.length.get(),
                });
            }
        }
        tensors.push(TensorInfo {
            name,
            record: r,
            dtype,
            shape,
            storage,
        });
    }

    // Step 7: asset records.
    let mut assets = Vec::with_capacity(asset_records.len());
    let mut seen = HashSet::with_capacity(asset_records.len());
    for (k, a) in asset_records.iter().enumerate() {
        let raw = name_of(
            &|| format!("asset record {k} name"),
            a.name_offset.get(),
            a.name_len.get(),
        )?;
        let name = check_asset_name(raw).map_err(|problem| ReadError::BadName {
            what: format!("asset record {k}"),
            problem,
        })?;
        if !seen.insert(name) {
            return Err(ReadError::DuplicateName {
                what: format!("asset {name:?}"),
            });
        }
        reserved(
            format!("asset {name:?} data.reserved"),
            a.data.reserved.get() != 0,
        )?;
        assets.push((name, a.data));
    }

    // Step 8: the LUT table and the canonical layout.
    if p.lut_count.get() != encoded {
        return Err(ReadError::BadLutIndex {
            what: "lut_count".to_string(),
            expected: encoded.into(),
            found: p.lut_count.get().into(),
        });
    }
    let lut_len = u64::from(encoded) * LUT_BYTES;
    if p.lut_table.length.get() != lut_len {
        return Err(ReadError::SectionSize {
            section: "lut table".to_string(),
            expected: lut_len,
            found: p.lut_table.length.get(),
        });
    }
    let mut layout = Layout {
        cursor: Cursor::new(hs, alignment),
        alignment,
        file_size,
    };
    layout.check(&"lut table", &p.lut_table)?;
    for t in &tensors {
        let r = t.record;
        layout.check(&Part(t.name, "data"), &r.data)?;
        if let Storage::Encoded { row_scales, .. } = t.storage {
            layout.check(&Part(t.name, "signs"), &r.signs)?;
            if row_scales {
                layout.check(&Part(t.name, "scales"), &r.scales)?;
            }
        }
    }
    for (name, s) in &assets {
        layout.check(&AssetPart(name), s)?;
    }
    if layout.cursor.end() != file_size {
        return Err(ReadError::TrailingBytes {
            what: "the last section",
            expected: layout.cursor.end(),
            actual: file_size,
        });
    }

    // Step 9: metadata and LUT values.
    let metadata = parse_metadata(metadata_bytes)?;
    let lut_bytes = &data[p.lut_table.offset.get() as usize..][..lut_len as usize];
    let mut luts = Vec::with_capacity(encoded as usize);
    let mut users = tensors.iter().filter(|t| t.storage != Storage::Raw);
    for (j, chunk) in lut_bytes.chunks_exact(LUT_BYTES as usize).enumerate() {
        let user = users.next().map(|t| t.name).unwrap_or_default();
        let mut lut = [0f32; 256];
        for (i, (v, b)) in lut.iter_mut().zip(chunk.chunks_exact(4)).enumerate() {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let ok = if i == 0 {
                v.to_bits() == 0
            } else {
                v.is_finite() && v.is_sign_positive()
            };
            if !ok {
                return Err(ReadError::BadLut {
                    lut: j as u32,
                    tensor: user.to_string(),
                    index: i as u8,
                    value: *v,
                });
            }
        }
        luts.push(lut);
    }

    let assets = assets
        .into_iter()
        .map(|(name, s)| {
            let a = s.offset.get() as usize;
            AssetInfo {
                name,
                data: &data[a..a + s.length.get() as usize],
                crc: s.crc.get(),
                offset: s.offset.get(),
            }
        })
        .collect();
    Ok(Qins {
        data,
        preamble: p,
        tensors,
        assets,
        by_name,
        metadata,
        luts,
    })
}

/// A section's name for messages, built only when an error needs it.
struct Part<'a>(&'a str, &'static str);

impl fmt::Display for Part<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor {:?} {}", self.0, self.1)
    }
}

struct AssetPart<'a>(&'a str);

impl fmt::Display for AssetPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "asset {:?}", self.0)
    }
}

struct Layout {
    cursor: Cursor,
    alignment: u32,
    file_size: u64,
}

impl Layout {
    /// Checks the next used section against the canonical layout (§9.2).
    fn check(&mut self, name: &dyn fmt::Display, s: &SectionRef) -> Result<(), ReadError> {
        let (offset, length) = (s.offset.get(), s.length.get());
        if offset % u64::from(self.alignment) != 0 {
            return Err(ReadError::Misaligned {
                section: name.to_string(),
                offset,
                alignment: self.alignment,
            });
        }
        if s.end().is_none_or(|e| e > self.file_size) {
            return Err(ReadError::OutOfBounds {
                section: name.to_string(),
                offset,
                length,
                limit: self.file_size,
            });
        }
        let previous_end = self.cursor.end();
        if offset < previous_end {
            return Err(ReadError::Overlap {
                section: name.to_string(),
                offset,
                previous_end,
            });
        }
        // In bounds, so no overflow: the file is smaller than u64::MAX.
        let expected = self.cursor.next_offset().unwrap_or(u64::MAX);
        if offset != expected {
            return Err(ReadError::Gap {
                section: name.to_string(),
                offset,
                expected,
            });
        }
        self.cursor.place(length);
        Ok(())
    }
}

/// A JSON object of strings that refuses duplicate keys (§7).
struct StringMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object whose values are strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StringMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(StringMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn parse_metadata(bytes: &[u8]) -> Result<BTreeMap<String, String>, ReadError> {
    if bytes.is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_slice::<StringMap>(bytes)
        .map(|m| m.0)
        .map_err(|e| ReadError::BadMetadata {
            reason: e.to_string(),
        })
}

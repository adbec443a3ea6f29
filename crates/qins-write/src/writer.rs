//! The [`Writer`]: a plan laid out, its tensors' data taken in plan order (`stream.rs`), then
//! the assets, the LUT table and the header written last, with their checksums.

use std::path::Path;

use qins_format::Storage;
use qins_format::{
    AssetRecord, Preamble, SectionRef, TensorRecord, LUT_BYTES, MAGIC, VERSION_MAJOR,
};
use zerocopy::IntoBytes;

use crate::atomic::AtomicFile;
use crate::layout::{layout, Layout};
use crate::stream::Current;
use crate::{Plan, TensorSpec, WriteError, WriteSummary};

/// A `.qins` file being written, as the temporary file `.NAME.XXXXXX.tmp` beside the target
/// `NAME`. Dropping it before [`Writer::finish`] removes the temporary file and leaves the
/// target untouched. A process killed while writing (SIGKILL, a power cut) cannot remove it:
/// the target is still untouched, and the next [`Writer::create`] for the same target removes
/// it. A writer holds a lock on its temporary file, so that only files no running writer owns
/// are removed: those of that name, a minute old, that no process holds locked.
pub struct Writer {
    pub(crate) file: AtomicFile,
    pub(crate) plan: Plan,
    pub(crate) records: Vec<TensorRecord>,
    pub(crate) assets: Vec<AssetRecord>,
    pub(crate) strings: Vec<u8>,
    pub(crate) metadata: Vec<u8>,
    pub(crate) lut_table: SectionRef,
    pub(crate) luts: Vec<u8>,
    pub(crate) file_size: u64,
    pub(crate) header_size: u64,
    pub(crate) next: usize,
    pub(crate) current: Current,
}

impl Writer {
    /// Validates `plan`, computes the layout, and creates a temporary file beside `path`.
    /// With `overwrite` false, an existing `path` is refused now and again at the rename.
    pub fn create(path: &Path, plan: Plan, overwrite: bool) -> Result<Writer, WriteError> {
        if !overwrite && path.exists() {
            return Err(WriteError::Exists { path: path.into() });
        }
        let Layout {
            records,
            assets,
            strings,
            metadata,
            lut_table,
            header_size,
            file_size,
        } = layout(&plan)?;
        let file = AtomicFile::create(path, file_size, overwrite)?;
        let lut_count = lut_table.length.get() / LUT_BYTES;
        Ok(Writer {
            file,
            plan,
            records,
            assets,
            strings,
            metadata,
            lut_table,
            luts: Vec::with_capacity((lut_count * LUT_BYTES) as usize),
            file_size,
            header_size,
            next: 0,
            current: Current::Idle,
        })
    }

    /// Whether the file is synced to disk before it is renamed into place, and in the
    /// background as it grows (the default, `true`). With `false` the file and the rename are
    /// the same, and the process ends sooner, but a crash of the machine (a power cut) can
    /// leave the target empty or partial: for scratch output only.
    pub fn set_sync(&mut self, sync: bool) {
        self.file.set_sync(sync);
    }

    /// The plan being written.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The tensor whose data is expected next, or `None` when every tensor is written.
    pub fn next_tensor(&self) -> Option<&TensorSpec> {
        self.plan.tensors.get(self.next)
    }

    pub(crate) fn misuse(&self, reason: impl Into<String>) -> WriteError {
        WriteError::Misuse {
            tensor: self
                .next_tensor()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            reason: reason.into(),
        }
    }

    /// Writes the assets, the LUT table and the header, flushes, and renames the file into
    /// place. Every tensor must have been written.
    pub fn finish(mut self) -> Result<WriteSummary, WriteError> {
        if self.next < self.plan.tensors.len() || !matches!(self.current, Current::Idle) {
            return Err(self.misuse("finish called before every tensor was written"));
        }
        for (rec, asset) in self.assets.iter_mut().zip(&self.plan.assets) {
            rec.data.crc = crc32fast::hash(&asset.data).into();
        }
        for (rec, asset) in self.assets.iter().zip(&self.plan.assets) {
            self.file.write_at(rec.data.offset.get(), &asset.data)?;
        }
        self.lut_table.crc = crc32fast::hash(&self.luts).into();
        self.file
            .write_at(self.lut_table.offset.get(), &self.luts)?;
        let header = self.header_bytes();
        debug_assert_eq!(header.len() as u64, self.header_size);
        self.file.write_at(0, &header)?;
        let mut summary = self.summary();
        let crc = &header[header.len() - 4..];
        summary.header_crc32 = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        self.file.commit()?;
        Ok(summary)
    }

    fn header_bytes(&self) -> Vec<u8> {
        let preamble = Preamble {
            magic: MAGIC,
            version_major: VERSION_MAJOR.into(),
            // 1 in a shard of a set, 0 otherwise (§15.2).
            version_minor: qins_format::set::minor_version(self.plan.metadata.keys()).into(),
            alignment: self.plan.alignment.into(),
            required_features: 0.into(),
            file_size: self.file_size.into(),
            header_size: self.header_size.into(),
            tensor_count: (self.records.len() as u32).into(),
            asset_count: (self.assets.len() as u32).into(),
            lut_count: ((self.lut_table.length.get() / LUT_BYTES) as u32).into(),
            strings_size: (self.strings.len() as u32).into(),
            metadata_size: (self.metadata.len() as u32).into(),
            reserved0: 0.into(),
            lut_table: self.lut_table,
            reserved1: 0.into(),
        };
        let mut h = Vec::with_capacity(self.header_size as usize);
        h.extend_from_slice(preamble.as_bytes());
        h.extend_from_slice(self.records.as_bytes());
        h.extend_from_slice(self.assets.as_bytes());
        h.extend_from_slice(&self.strings);
        h.extend_from_slice(&self.metadata);
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h
    }

    fn summary(&self) -> WriteSummary {
        let mut s = WriteSummary {
            file_size: self.file_size,
            header_bytes: self.header_size,
            lut_bytes: self.lut_table.length.get(),
            ..WriteSummary::default()
        };
        for (r, t) in self.records.iter().zip(&self.plan.tensors) {
            match t.storage {
                Storage::Raw => s.raw_bytes += r.data.length.get(),
                Storage::Encoded { .. } => {
                    s.code_bytes += r.data.length.get();
                    s.sign_bytes += r.signs.length.get();
                    s.scale_bytes += r.scales.length.get();
                }
            }
        }
        s.asset_bytes = self.assets.iter().map(|a| a.data.length.get()).sum();
        s.padding_bytes = s.file_size
            - s.header_bytes
            - s.lut_bytes
            - s.code_bytes
            - s.sign_bytes
            - s.scale_bytes
            - s.raw_bytes
            - s.asset_bytes;
        s
    }
}

//! A minimal, private reader for the fixed 61-byte Kafka v2 record-batch header.
//!
//! The log only needs the header fields (lengths, offsets, timestamps, CRC); it never looks at
//! records. It is kept here rather than taken from `weir_protocol::record` so that the storage
//! engine builds and is tested independently of the codec crate. All reads are bounds-checked:
//! bytes handed to this module may come from a torn or corrupt file.

/// Size of the v2 batch header, from base offset through record count.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the `batch_length` field's coverage starts (base offset + length field).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Where the CRC-covered region starts (the attributes field).
pub const CRC_COVERED_START: usize = 21;

pub const OFF_BASE_OFFSET: usize = 0;
pub const OFF_BATCH_LENGTH: usize = 8;
pub const OFF_LEADER_EPOCH: usize = 12;
pub const OFF_MAGIC: usize = 16;
pub const OFF_CRC: usize = 17;
pub const OFF_ATTRIBUTES: usize = 21;
pub const OFF_LAST_OFFSET_DELTA: usize = 23;
pub const OFF_BASE_TIMESTAMP: usize = 27;
pub const OFF_MAX_TIMESTAMP: usize = 35;
pub const OFF_RECORD_COUNT: usize = 57;

/// Attribute bit 3: timestamps are LogAppendTime.
pub const ATTR_TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;

/// Header fields of one batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field; the whole batch is `batch_length + 12` bytes.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

impl BatchHeader {
    /// Decodes the header from the start of `b`; `None` if fewer than 61 bytes are present.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < BATCH_HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(b, OFF_BASE_OFFSET)?,
            batch_length: be_i32(b, OFF_BATCH_LENGTH)?,
            partition_leader_epoch: be_i32(b, OFF_LEADER_EPOCH)?,
            magic: *b.get(OFF_MAGIC)? as i8,
            crc: be_i32(b, OFF_CRC)? as u32,
            attributes: be_i16(b, OFF_ATTRIBUTES)?,
            last_offset_delta: be_i32(b, OFF_LAST_OFFSET_DELTA)?,
            base_timestamp: be_i64(b, OFF_BASE_TIMESTAMP)?,
            max_timestamp: be_i64(b, OFF_MAX_TIMESTAMP)?,
            record_count: be_i32(b, OFF_RECORD_COUNT)?,
        })
    }

    /// Total on-disk size of the batch, if the length field is sane (at least a header, at most
    /// `max_batch_bytes`). The check happens before anything is allocated or read on its behalf.
    pub fn total_bytes(&self, max_batch_bytes: usize) -> Option<usize> {
        let len = usize::try_from(self.batch_length).ok()?.checked_add(LOG_OVERHEAD_BYTES)?;
        (BATCH_HEADER_BYTES..=max_batch_bytes).contains(&len).then_some(len)
    }

    /// Structural checks that do not need the payload: magic 2, offsets that fit.
    pub fn is_plausible(&self) -> bool {
        self.magic == 2
            && self.last_offset_delta >= 0
            && self.base_offset >= 0
            && self.base_offset.checked_add(i64::from(self.last_offset_delta)).is_some()
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }
}

/// CRC32C over the covered region (attributes..end) of a complete batch.
pub fn compute_crc(batch: &[u8]) -> Option<u32> {
    Some(crc32c::crc32c(batch.get(CRC_COVERED_START..)?))
}

/// True if `batch` is one complete batch whose stored CRC matches its contents.
pub fn verify_crc(batch: &[u8]) -> bool {
    match (BatchHeader::parse(batch), compute_crc(batch)) {
        (Some(h), Some(crc)) => h.crc == crc,
        _ => false,
    }
}

/// Splits concatenated batches, checking each length against what remains.
/// Returns `None` if the buffer does not consist exactly of whole, plausible v2 batches.
pub fn split_batches(buf: &[u8], max_batch_bytes: usize) -> Option<Vec<(BatchHeader, std::ops::Range<usize>)>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = buf.get(pos..)?;
        let h = BatchHeader::parse(rest)?;
        if !h.is_plausible() {
            return None;
        }
        let len = h.total_bytes(max_batch_bytes)?;
        if len > rest.len() {
            return None;
        }
        out.push((h, pos..pos + len));
        pos += len;
    }
    Some(out)
}

//! Record batch v2 (magic 2): a zero-copy view of the 61-byte batch header,
//! CRC32C checks, in-place rewrites of the fields a broker must change, a
//! splitter for concatenated batches, and the record-level codec.
//!
//! Layout (big-endian, offsets in bytes; KIP-98 / Kafka's DefaultRecordBatch):
//!
//! | off | field                | type |
//! |-----|----------------------|------|
//! |  0  | baseOffset           | i64  |
//! |  8  | batchLength          | i32  | bytes after this field
//! | 12  | partitionLeaderEpoch | i32  |
//! | 16  | magic                | i8   |
//! | 17  | crc                  | u32  | CRC32C of bytes 21..end
//! | 21  | attributes           | i16  |
//! | 23  | lastOffsetDelta      | i32  |
//! | 27  | baseTimestamp        | i64  |
//! | 35  | maxTimestamp         | i64  |
//! | 43  | producerId           | i64  |
//! | 51  | producerEpoch        | i16  |
//! | 53  | baseSequence         | i32  |
//! | 57  | recordsCount         | i32  |
//! | 61  | records...           |      |
//!
//! The CRC deliberately does not cover baseOffset or partitionLeaderEpoch, so a
//! leader can assign offsets and stamp its epoch without recomputing it; any
//! other rewrite must recompute the CRC.
//!
//! This module never panics on hostile bytes and never allocates from a wire
//! length or count before checking it against the bytes that remain.

use bytes::Bytes;

pub use crate::compression::Compression;
use crate::compression::CompressionError;

/// Size of the v2 batch header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batch_length` counts: baseOffset (8) + batchLength (4).
pub const BATCH_OVERHEAD_BYTES: usize = 12;
/// The only record-batch format Weir accepts.
pub const MAGIC_V2: i8 = 2;
/// Smallest legal `batch_length`: a header with no records.
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - BATCH_OVERHEAD_BYTES) as i32;

const BATCH_LENGTH_OFFSET: usize = 8;
const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const RECORDS_COUNT_OFFSET: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
/// KIP-534: baseTimestamp holds the delete horizon (set by compaction).
const ATTR_DELETE_HORIZON: i16 = 0x40;

/// Why a record batch (or a record inside it) was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record batch truncated: need {needed_bytes} bytes, have {available_bytes}")]
    Truncated { needed_bytes: usize, available_bytes: usize },
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    UnsupportedMagic(i8),
    #[error("record batch length {0} is below the minimum of {BATCH_LENGTH_MIN}")]
    BatchLengthTooSmall(i32),
    #[error("record batch claims {batch_bytes} bytes but only {available_bytes} remain")]
    BatchLengthExceedsBuffer { batch_bytes: usize, available_bytes: usize },
    #[error("unknown compression codec id {0} in batch attributes")]
    UnknownCompression(i16),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch header says {header_count} records, found {decoded_count}")]
    RecordCountMismatch { header_count: i32, decoded_count: usize },
    #[error("malformed record: {0}")]
    MalformedRecord(&'static str),
    #[error("invalid record batch field: {0}")]
    InvalidField(&'static str),
    #[error(transparent)]
    Compression(#[from] CompressionError),
}

/// How the timestamps in a batch were assigned (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// The producer's clock; each record carries its own timestamp.
    CreateTime,
    /// The broker's clock at append; consumers use `max_timestamp` for every record.
    LogAppendTime,
}

/// A parsed copy of the 61-byte v2 batch header. Parsing checks the magic, the
/// minimum length and the compression id; it does not check the CRC (see
/// [`verify_crc`]) or that the whole batch is present (see [`BatchHeader::total_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn read_array<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], RecordError> {
    let end = at.saturating_add(N);
    buf.get(at..end)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(RecordError::Truncated { needed_bytes: end, available_bytes: buf.len() })
}

fn write_bytes(buf: &mut [u8], at: usize, value: &[u8]) -> Result<(), RecordError> {
    let available_bytes = buf.len();
    let end = at.saturating_add(value.len());
    buf.get_mut(at..end)
        .ok_or(RecordError::Truncated { needed_bytes: end, available_bytes })?
        .copy_from_slice(value);
    Ok(())
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which needs at least 61 bytes).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, RecordError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(RecordError::Truncated {
                needed_bytes: BATCH_HEADER_BYTES,
                available_bytes: buf.len(),
            });
        }
        // Check magic first: older formats have a different layout, so the other
        // fields would be garbage and their errors misleading.
        let magic = i8::from_be_bytes(read_array(buf, MAGIC_OFFSET)?);
        if magic != MAGIC_V2 {
            return Err(RecordError::UnsupportedMagic(magic));
        }
        let batch_length = i32::from_be_bytes(read_array(buf, BATCH_LENGTH_OFFSET)?);
        if batch_length < BATCH_LENGTH_MIN {
            return Err(RecordError::BatchLengthTooSmall(batch_length));
        }
        let attributes = i16::from_be_bytes(read_array(buf, ATTRIBUTES_OFFSET)?);
        let codec_id = attributes & ATTR_COMPRESSION_MASK;
        if Compression::from_id(codec_id).is_none() {
            return Err(RecordError::UnknownCompression(codec_id));
        }
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(read_array(buf, 0)?),
            batch_length,
            partition_leader_epoch: i32::from_be_bytes(read_array(
                buf,
                PARTITION_LEADER_EPOCH_OFFSET,
            )?),
            magic,
            crc: u32::from_be_bytes(read_array(buf, CRC_OFFSET)?),
            attributes,
            last_offset_delta: i32::from_be_bytes(read_array(buf, LAST_OFFSET_DELTA_OFFSET)?),
            base_timestamp: i64::from_be_bytes(read_array(buf, BASE_TIMESTAMP_OFFSET)?),
            max_timestamp: i64::from_be_bytes(read_array(buf, MAX_TIMESTAMP_OFFSET)?),
            producer_id: i64::from_be_bytes(read_array(buf, PRODUCER_ID_OFFSET)?),
            producer_epoch: i16::from_be_bytes(read_array(buf, PRODUCER_EPOCH_OFFSET)?),
            base_sequence: i32::from_be_bytes(read_array(buf, BASE_SEQUENCE_OFFSET)?),
            record_count: i32::from_be_bytes(read_array(buf, RECORDS_COUNT_OFFSET)?),
        })
    }

    /// Size of the whole batch on the wire: `batch_length` + 12.
    pub fn total_bytes(&self) -> usize {
        // parse() guarantees batch_length >= 49, so the conversion cannot fail;
        // fall back to the minimum for hand-built headers.
        usize::try_from(self.batch_length).unwrap_or(BATCH_LENGTH_MIN as usize)
            + BATCH_OVERHEAD_BYTES
    }

    /// Offset of the last record: `base_offset + last_offset_delta` (saturating,
    /// so a hostile delta cannot overflow).
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// The codec in attributes bits 0..2. `parse` rejects unknown ids; a
    /// hand-built header with an unknown id reads as `None`.
    pub fn compression(&self) -> Compression {
        Compression::from_id(self.attributes & ATTR_COMPRESSION_MASK).unwrap_or(Compression::None)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// KIP-534: when set, `base_timestamp` is the compaction delete horizon.
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & ATTR_DELETE_HORIZON != 0
    }

    /// True when the producer is idempotent (producer id -1 means "none").
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Returns the header and the exact bytes of the batch at the start of `buf`,
/// checking that the whole batch is present.
fn whole_batch(buf: &[u8]) -> Result<(BatchHeader, &[u8]), RecordError> {
    let header = BatchHeader::parse(buf)?;
    let batch_bytes = header.total_bytes();
    let batch = buf.get(..batch_bytes).ok_or(RecordError::BatchLengthExceedsBuffer {
        batch_bytes,
        available_bytes: buf.len(),
    })?;
    Ok((header, batch))
}

/// CRC32C of `batch[21..]`, i.e. from the attributes to the end of the slice.
/// Pass exactly one batch; a slice shorter than 21 bytes hashes as empty.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(ATTRIBUTES_OFFSET..).unwrap_or(&[]))
}

/// Checks the stored CRC of the batch at the start of `batch` against its
/// contents (bytes 21 to `batch_length + 12`). Trailing bytes after the batch
/// are ignored; a truncated batch is an error.
pub fn verify_crc(batch: &[u8]) -> Result<(), RecordError> {
    let (header, batch) = whole_batch(batch)?;
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(RecordError::CrcMismatch { stored: header.crc, computed });
    }
    Ok(())
}

/// Recomputes and stores the CRC of the whole batch at the start of `batch`.
fn rewrite_crc(batch: &mut [u8]) -> Result<(), RecordError> {
    let (_, whole) = whole_batch(batch)?;
    let crc = compute_crc(whole);
    write_bytes(batch, CRC_OFFSET, &crc.to_be_bytes())
}

/// Assigns the batch's base offset. The CRC does not cover it, so this is a
/// 8-byte write. Errors (without writing) if `batch` is shorter than a header.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), RecordError> {
    BatchHeader::parse(batch)?;
    write_bytes(batch, 0, &base_offset.to_be_bytes())
}

/// Stamps the leader epoch; not covered by the CRC.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), RecordError> {
    BatchHeader::parse(batch)?;
    write_bytes(batch, PARTITION_LEADER_EPOCH_OFFSET, &epoch.to_be_bytes())
}

/// Rewrites maxTimestamp and recomputes the CRC. Needs the whole batch.
pub fn set_max_timestamp(batch: &mut [u8], ts_ms: i64) -> Result<(), RecordError> {
    whole_batch(batch)?;
    write_bytes(batch, MAX_TIMESTAMP_OFFSET, &ts_ms.to_be_bytes())?;
    rewrite_crc(batch)
}

/// Applies `log.message.timestamp.type=LogAppendTime`: sets the timestamp-type
/// bit and maxTimestamp to the broker's clock, then recomputes the CRC. Record
/// timestamps are left alone; consumers read `max_timestamp` for every record
/// of a LogAppendTime batch. Needs the whole batch.
pub fn set_log_append_time(batch: &mut [u8], ts_ms: i64) -> Result<(), RecordError> {
    let (header, _) = whole_batch(batch)?;
    let attributes = header.attributes | ATTR_TIMESTAMP_TYPE;
    write_bytes(batch, ATTRIBUTES_OFFSET, &attributes.to_be_bytes())?;
    write_bytes(batch, MAX_TIMESTAMP_OFFSET, &ts_ms.to_be_bytes())?;
    rewrite_crc(batch)
}

/// Iterator returned by [`split_batches`].
#[derive(Debug, Clone)]
pub struct SplitBatches {
    rest: Bytes,
    /// Set after the first error so a corrupt buffer yields exactly one error.
    failed: bool,
}

impl Iterator for SplitBatches {
    type Item = Result<Bytes, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = next_batch_len(&self.rest).map(|batch_bytes| self.rest.split_to(batch_bytes));
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

/// Length of the first batch in `rest`, checked against what remains.
fn next_batch_len(rest: &[u8]) -> Result<usize, RecordError> {
    let batch_length = i32::from_be_bytes(read_array(rest, BATCH_LENGTH_OFFSET)?);
    if batch_length < BATCH_LENGTH_MIN {
        return Err(RecordError::BatchLengthTooSmall(batch_length));
    }
    let batch_bytes = usize::try_from(batch_length)
        .map_err(|_| RecordError::BatchLengthTooSmall(batch_length))?
        .saturating_add(BATCH_OVERHEAD_BYTES);
    if batch_bytes > rest.len() {
        return Err(RecordError::BatchLengthExceedsBuffer {
            batch_bytes,
            available_bytes: rest.len(),
        });
    }
    Ok(batch_bytes)
}

/// Splits a buffer of concatenated batches (a Produce request's `records`) into
/// zero-copy `Bytes`, one per batch. Only lengths are checked here; parse each
/// batch's header and verify its CRC separately. After the first error the
/// iterator ends. An empty buffer yields nothing.
pub fn split_batches(records: &Bytes) -> SplitBatches {
    SplitBatches { rest: records.clone(), failed: false }
}

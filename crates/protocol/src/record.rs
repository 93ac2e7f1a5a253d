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
    Truncated {
        needed_bytes: usize,
        available_bytes: usize,
    },
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    UnsupportedMagic(i8),
    #[error("record batch length {0} is below the minimum of {BATCH_LENGTH_MIN}")]
    BatchLengthTooSmall(i32),
    #[error("record batch claims {batch_bytes} bytes but only {available_bytes} remain")]
    BatchLengthExceedsBuffer {
        batch_bytes: usize,
        available_bytes: usize,
    },
    #[error("unknown compression codec id {0} in batch attributes")]
    UnknownCompression(i16),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch header says {header_count} records, found {decoded_count}")]
    RecordCountMismatch {
        header_count: i32,
        decoded_count: usize,
    },
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
        .ok_or(RecordError::Truncated {
            needed_bytes: end,
            available_bytes: buf.len(),
        })
}

fn write_bytes(buf: &mut [u8], at: usize, value: &[u8]) -> Result<(), RecordError> {
    let available_bytes = buf.len();
    let end = at.saturating_add(value.len());
    buf.get_mut(at..end)
        .ok_or(RecordError::Truncated {
            needed_bytes: end,
            available_bytes,
        })?
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
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
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
    let batch = buf
        .get(..batch_bytes)
        .ok_or(RecordError::BatchLengthExceedsBuffer {
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
        return Err(RecordError::CrcMismatch {
            stored: header.crc,
            computed,
        });
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

/// Rewrites baseSequence and recomputes the CRC: a load generator that resends one encoded
/// batch as an idempotent producer's next batch. Needs the whole batch.
pub fn set_base_sequence(batch: &mut [u8], base_sequence: i32) -> Result<(), RecordError> {
    whole_batch(batch)?;
    write_bytes(batch, BASE_SEQUENCE_OFFSET, &base_sequence.to_be_bytes())?;
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
    SplitBatches {
        rest: records.clone(),
        failed: false,
    }
}

// ---------------------------------------------------------------------------
// Records inside a batch.
// ---------------------------------------------------------------------------

/// One record of a v2 batch. Offsets and timestamps are deltas from the batch
/// header's `base_offset` and `base_timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    /// `None` is a null key (length -1 on the wire), distinct from an empty key.
    pub key: Option<Bytes>,
    /// `None` is a null value: a tombstone on compacted topics.
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// A record header. Kafka requires a non-null UTF-8 key; the value may be null.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

/// The smallest encoded record: one byte each for length, attributes,
/// timestamp delta, offset delta, key length, value length and header count.
/// Used to bound allocations driven by a wire count.
const RECORD_BYTES_MIN: usize = 7;
/// Smallest encoded header: key length and value length, one byte each.
const HEADER_BYTES_MIN: usize = 2;
/// Producer fields of a batch without an idempotent producer.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;
/// Kafka's "no timestamp" value.
/// Kafka's "no timestamp" value (RecordBatch.NO_TIMESTAMP).
pub const NO_TIMESTAMP: i64 = -1;
/// Producers send -1; the leader stamps its epoch on append.
const NO_PARTITION_LEADER_EPOCH: i32 = -1;

fn zigzag_encode_32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

fn zigzag_encode_64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn put_unsigned_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned_varint(out, u64::from(zigzag_encode_32(value)));
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned_varint(out, zigzag_encode_64(value));
}

/// Writes a nullable byte field: zigzag varint length (-1 for null), then bytes.
fn put_nullable_bytes(out: &mut Vec<u8>, value: Option<&[u8]>) -> Result<(), RecordError> {
    match value {
        None => put_varint(out, -1),
        Some(bytes) => {
            let len = i32::try_from(bytes.len())
                .map_err(|_| RecordError::InvalidField("record field longer than i32::MAX"))?;
            put_varint(out, len);
            out.extend_from_slice(bytes);
        }
    }
    Ok(())
}

/// A cursor over one record's bytes. Every read is bounds-checked; reads of
/// byte fields return zero-copy slices of the underlying buffer.
struct RecordReader {
    buf: Bytes,
    pos: usize,
}

impl RecordReader {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        let byte = *self
            .buf
            .get(self.pos)
            .ok_or(RecordError::MalformedRecord("truncated"))?;
        self.pos += 1;
        Ok(byte)
    }

    /// Reads an unsigned LEB128 value of at most `max_bytes` bytes. Like Kafka's
    /// reader, bits beyond the target width in the last byte are dropped.
    fn unsigned_varint(&mut self, max_bytes: u32) -> Result<u64, RecordError> {
        let mut value: u64 = 0;
        for index in 0..max_bytes {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::MalformedRecord("varint too long"))
    }

    fn varint(&mut self) -> Result<i32, RecordError> {
        let raw = self.unsigned_varint(5)? as u32;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, RecordError> {
        let raw = self.unsigned_varint(10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// Takes `len` bytes as a zero-copy slice, checked against what remains.
    fn take(&mut self, len: usize) -> Result<Bytes, RecordError> {
        if len > self.remaining() {
            return Err(RecordError::MalformedRecord(
                "field length exceeds the record",
            ));
        }
        let bytes = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(bytes)
    }

    fn nullable_bytes(&mut self) -> Result<Option<Bytes>, RecordError> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len)
            .map_err(|_| RecordError::MalformedRecord("negative field length"))?;
        self.take(len).map(Some)
    }
}

fn encode_record(
    record: &Record,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    scratch.clear();
    // Record attributes: unused by v2, always zero.
    scratch.push(0);
    put_varlong(scratch, record.timestamp_delta);
    put_varint(scratch, record.offset_delta);
    put_nullable_bytes(scratch, record.key.as_deref())?;
    put_nullable_bytes(scratch, record.value.as_deref())?;
    let header_count = i32::try_from(record.headers.len())
        .map_err(|_| RecordError::InvalidField("too many record headers"))?;
    put_varint(scratch, header_count);
    for header in &record.headers {
        put_nullable_bytes(scratch, Some(header.key.as_bytes()))?;
        put_nullable_bytes(scratch, header.value.as_deref())?;
    }
    let record_len = i32::try_from(scratch.len())
        .map_err(|_| RecordError::InvalidField("record longer than i32::MAX"))?;
    put_varint(out, record_len);
    out.extend_from_slice(scratch);
    Ok(())
}

/// Decodes the record whose body (after its length prefix) is `body`.
fn decode_record_body(body: Bytes) -> Result<Record, RecordError> {
    let mut reader = RecordReader { buf: body, pos: 0 };
    let _attributes = reader.u8()?;
    let timestamp_delta = reader.varlong()?;
    let offset_delta = reader.varint()?;
    let key = reader.nullable_bytes()?;
    let value = reader.nullable_bytes()?;
    let header_count = usize::try_from(reader.varint()?)
        .map_err(|_| RecordError::MalformedRecord("negative header count"))?;
    if header_count > reader.remaining() / HEADER_BYTES_MIN {
        return Err(RecordError::MalformedRecord(
            "header count exceeds the record",
        ));
    }
    let mut headers = Vec::with_capacity(header_count);
    for _ in 0..header_count {
        let key_bytes = reader
            .nullable_bytes()?
            .ok_or(RecordError::MalformedRecord("null header key"))?;
        let key = String::from_utf8(key_bytes.to_vec())
            .map_err(|_| RecordError::MalformedRecord("header key is not UTF-8"))?;
        let value = reader.nullable_bytes()?;
        headers.push(RecordHeader { key, value });
    }
    if reader.remaining() != 0 {
        return Err(RecordError::MalformedRecord(
            "record length does not match its fields",
        ));
    }
    Ok(Record {
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers,
    })
}

/// The record bytes of a whole batch, decompressed (capped) if need be.
fn records_payload(
    batch: &Bytes,
    header: &BatchHeader,
    decompressed_bytes_max: usize,
) -> Result<Bytes, RecordError> {
    let payload = batch.slice(BATCH_HEADER_BYTES..header.total_bytes());
    Ok(match header.compression() {
        Compression::None => payload,
        codec => Bytes::from(crate::compression::decompress(
            codec,
            &payload,
            decompressed_bytes_max,
        )?),
    })
}

/// Decodes every record of the batch at the start of `batch`, after checking
/// the header and the CRC. Compressed batches are decompressed with the output
/// capped at `decompressed_bytes_max`. The record count in the header must
/// match the records found, and no bytes may follow the last record.
///
/// Keys, values and header values are zero-copy slices of `batch` (or of the
/// decompressed buffer).
pub fn decode_records(
    batch: &Bytes,
    decompressed_bytes_max: usize,
) -> Result<Vec<Record>, RecordError> {
    let (header, whole) = whole_batch(batch)?;
    let computed = compute_crc(whole);
    if computed != header.crc {
        return Err(RecordError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    let header_count = header.record_count;
    let record_count = usize::try_from(header_count)
        .map_err(|_| RecordError::InvalidField("negative record count"))?;
    let payload = records_payload(batch, &header, decompressed_bytes_max)?;
    if record_count > payload.len() / RECORD_BYTES_MIN {
        return Err(RecordError::RecordCountMismatch {
            header_count,
            decoded_count: payload.len() / RECORD_BYTES_MIN,
        });
    }
    let mut records = Vec::with_capacity(record_count);
    for_each_record(payload, header_count, |reader, record_len| {
        records.push(decode_record_body(reader.take(record_len)?)?);
        Ok(())
    })?;
    Ok(records)
}

/// What produce validation reads from each record: enough to check
/// timestamps and keys without decoding (or copying) keys, values or headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSummary {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    /// False for a null key (Kafka refuses those on compacted topics).
    pub has_key: bool,
}

/// Walks the records of the batch at the start of `batch`, calling `each`
/// once per record in order. The header must say `record_count` records and
/// exactly that many must fill the payload. Compressed payloads are
/// decompressed with the output capped at `decompressed_bytes_max`; the CRC is
/// not checked here (the caller has).
pub fn summarize_records(
    batch: &Bytes,
    decompressed_bytes_max: usize,
    mut each: impl FnMut(RecordSummary),
) -> Result<(), RecordError> {
    let (header, _) = whole_batch(batch)?;
    let payload = records_payload(batch, &header, decompressed_bytes_max)?;
    for_each_record(payload, header.record_count, |reader, record_len| {
        let end = reader.pos + record_len;
        let _attributes = reader.u8()?;
        let timestamp_delta = reader.varlong()?;
        let offset_delta = reader.varint()?;
        let key_len = reader.varint()?;
        if reader.pos > end {
            return Err(RecordError::MalformedRecord(
                "record fields run past its length",
            ));
        }
        each(RecordSummary {
            offset_delta,
            timestamp_delta,
            has_key: key_len >= 0,
        });
        reader.pos = end;
        Ok(())
    })
}

/// Walks `header_count` length-prefixed records filling `payload` exactly,
/// calling `each` with the reader at a record's first byte and its length
/// (checked against what remains); `each` must consume exactly that length.
fn for_each_record(
    payload: Bytes,
    header_count: i32,
    mut each: impl FnMut(&mut RecordReader, usize) -> Result<(), RecordError>,
) -> Result<(), RecordError> {
    let record_count = usize::try_from(header_count)
        .map_err(|_| RecordError::InvalidField("negative record count"))?;
    let mut reader = RecordReader {
        buf: payload,
        pos: 0,
    };
    for decoded_count in 0..record_count {
        if reader.remaining() == 0 {
            return Err(RecordError::RecordCountMismatch {
                header_count,
                decoded_count,
            });
        }
        let record_len = usize::try_from(reader.varint()?)
            .map_err(|_| RecordError::MalformedRecord("negative record length"))?;
        if record_len > reader.remaining() {
            return Err(RecordError::MalformedRecord(
                "field length exceeds the record",
            ));
        }
        each(&mut reader, record_len)?;
    }
    if reader.remaining() != 0 {
        return Err(RecordError::MalformedRecord(
            "bytes remain after the last record",
        ));
    }
    Ok(())
}

/// Builds one complete v2 batch (header, records, CRC). Defaults describe a
/// plain producer batch: offset 0, no producer id, CreateTime, leader epoch -1.
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    compression: Compression,
    base_offset: i64,
    partition_leader_epoch: i32,
    base_timestamp: i64,
    /// `None` means "the largest record timestamp", as producers compute it.
    max_timestamp: Option<i64>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    timestamp_type: TimestampType,
    transactional: bool,
    control: bool,
    /// `None`: the last record's offset delta. The log cleaner keeps a batch's original last
    /// offset when it removes records, so the offsets it spans do not change.
    last_offset_delta: Option<i32>,
    /// KIP-534: `base_timestamp` holds the compaction delete horizon.
    delete_horizon: bool,
    records: Vec<Record>,
}

impl RecordBatchBuilder {
    pub fn new(compression: Compression) -> RecordBatchBuilder {
        RecordBatchBuilder {
            compression,
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            base_timestamp: 0,
            max_timestamp: None,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            timestamp_type: TimestampType::CreateTime,
            transactional: false,
            control: false,
            last_offset_delta: None,
            delete_horizon: false,
            records: Vec::new(),
        }
    }

    /// Overrides the last offset delta (by default the last record's offset delta).
    pub fn last_offset_delta(mut self, delta: i32) -> Self {
        self.last_offset_delta = Some(delta);
        self
    }

    /// KIP-534: marks `base_timestamp` as the delete horizon of the batch's tombstones and
    /// markers (record timestamps stay base + delta).
    pub fn delete_horizon(mut self, set: bool) -> Self {
        self.delete_horizon = set;
        self
    }

    pub fn base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    pub fn base_timestamp(mut self, ts_ms: i64) -> Self {
        self.base_timestamp = ts_ms;
        self
    }

    /// Overrides the computed max timestamp (e.g. for LogAppendTime batches).
    pub fn max_timestamp(mut self, ts_ms: i64) -> Self {
        self.max_timestamp = Some(ts_ms);
        self
    }

    /// Idempotent/transactional producer identity and first sequence number.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn timestamp_type(mut self, timestamp_type: TimestampType) -> Self {
        self.timestamp_type = timestamp_type;
        self
    }

    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Control batches carry transaction markers (see KIP-98).
    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    /// Appends a record; its `offset_delta` is used as given.
    pub fn record(mut self, record: Record) -> Self {
        self.records.push(record);
        self
    }

    pub fn push(&mut self, record: Record) {
        self.records.push(record);
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    fn attributes(&self) -> i16 {
        let mut attributes = self.compression.id();
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= ATTR_TIMESTAMP_TYPE;
        }
        if self.transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        if self.control {
            attributes |= ATTR_CONTROL;
        }
        if self.delete_horizon {
            attributes |= ATTR_DELETE_HORIZON;
        }
        attributes
    }

    /// Encodes the batch. Fails only if a field or the batch exceeds i32 sizes
    /// or compression fails.
    pub fn build(&self) -> Result<Bytes, RecordError> {
        let mut raw = Vec::new();
        let mut scratch = Vec::new();
        for record in &self.records {
            encode_record(record, &mut scratch, &mut raw)?;
        }
        let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + raw.len());
        out.resize(BATCH_HEADER_BYTES, 0);
        crate::compression::compress(self.compression, &raw, &mut out)?;

        let batch_length = i32::try_from(out.len() - BATCH_OVERHEAD_BYTES)
            .map_err(|_| RecordError::InvalidField("batch longer than i32::MAX"))?;
        let record_count = i32::try_from(self.records.len())
            .map_err(|_| RecordError::InvalidField("too many records"))?;
        let last_offset_delta = self
            .last_offset_delta
            .unwrap_or_else(|| self.records.last().map_or(0, |r| r.offset_delta));
        let max_timestamp = self.max_timestamp.unwrap_or_else(|| {
            self.records
                .iter()
                .map(|r| self.base_timestamp.saturating_add(r.timestamp_delta))
                .max()
                .unwrap_or(NO_TIMESTAMP)
        });
        let fields: [(usize, &[u8]); 12] = [
            (0, &self.base_offset.to_be_bytes()),
            (BATCH_LENGTH_OFFSET, &batch_length.to_be_bytes()),
            (
                PARTITION_LEADER_EPOCH_OFFSET,
                &self.partition_leader_epoch.to_be_bytes(),
            ),
            (MAGIC_OFFSET, &MAGIC_V2.to_be_bytes()),
            (ATTRIBUTES_OFFSET, &self.attributes().to_be_bytes()),
            (LAST_OFFSET_DELTA_OFFSET, &last_offset_delta.to_be_bytes()),
            (BASE_TIMESTAMP_OFFSET, &self.base_timestamp.to_be_bytes()),
            (MAX_TIMESTAMP_OFFSET, &max_timestamp.to_be_bytes()),
            (PRODUCER_ID_OFFSET, &self.producer_id.to_be_bytes()),
            (PRODUCER_EPOCH_OFFSET, &self.producer_epoch.to_be_bytes()),
            (BASE_SEQUENCE_OFFSET, &self.base_sequence.to_be_bytes()),
            (RECORDS_COUNT_OFFSET, &record_count.to_be_bytes()),
        ];
        for (at, bytes) in fields {
            write_bytes(&mut out, at, bytes)?;
        }
        let crc = compute_crc(&out);
        write_bytes(&mut out, CRC_OFFSET, &crc.to_be_bytes())?;
        Ok(Bytes::from(out))
    }
}

//! Builders for tests and benchmarks (not for production use): valid v2 batches with arbitrary
//! record bytes. The log never parses records, only the header, so the payload can be anything.

use bytes::Bytes;
use weir_protocol::record::{self, BATCH_HEADER_BYTES, BATCH_OVERHEAD_BYTES, BatchHeader};

/// Where the CRC field sits in a v2 batch header.
const CRC_OFFSET: usize = 17;

/// A v2 batch of `record_count` records whose payload is `payload`, with a correct CRC32C.
pub fn build_batch(record_count: i32, max_timestamp_ms: i64, payload: &[u8]) -> Vec<u8> {
    let record_count = record_count.max(1);
    let total = BATCH_HEADER_BYTES + payload.len();
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset: assigned by the log
    b.extend_from_slice(&((total - BATCH_OVERHEAD_BYTES) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&(record_count - 1).to_be_bytes()); // last offset delta
    b.extend_from_slice(&max_timestamp_ms.to_be_bytes()); // base timestamp
    b.extend_from_slice(&max_timestamp_ms.to_be_bytes()); // max timestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&record_count.to_be_bytes());
    b.extend_from_slice(payload);
    let crc = record::compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Decoded essentials of one batch in a read result: (base offset, last offset, CRC ok, bytes).
/// (base offset, last offset, CRC ok, bytes) of one batch.
pub type ReadBatch = (i64, i64, bool, Vec<u8>);

pub fn split_read(buf: &[u8]) -> Option<Vec<ReadBatch>> {
    record::split_batches(&Bytes::copy_from_slice(buf))
        .map(|b| {
            let b = b.ok()?;
            let h = BatchHeader::parse(&b).ok()?;
            Some((
                h.base_offset,
                h.last_offset(),
                record::verify_crc(&b).is_ok(),
                b.to_vec(),
            ))
        })
        .collect()
}

/// Overwrites the base offset and partition leader epoch as the log does, for comparisons.
pub fn with_offset_and_epoch(batch_bytes: &[u8], base_offset: i64, leader_epoch: i32) -> Vec<u8> {
    let mut b = batch_bytes.to_vec();
    if b.len() >= BATCH_HEADER_BYTES {
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        b[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    }
    b
}

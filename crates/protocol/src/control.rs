//! Transaction markers: the control batches that end a transaction in a
//! partition (KIP-98).
//!
//! A marker is a v2 batch with the transactional and control attribute bits
//! set, the producer's id and epoch, no sequence, and exactly one record:
//! - key: `version: i16` (0) and `type: i16` (0 = abort, 1 = commit);
//! - value (the end-transaction marker): `version: i16` (0) and
//!   `coordinator_epoch: i32`.
//!
//! Kafka reads newer key/value versions by their leading fields and ignores
//! trailing bytes, so parsing here does the same.

use bytes::Bytes;

use crate::compression::Compression;
use crate::record::{BatchHeader, Record, RecordBatchBuilder, RecordError, decode_records};

/// Control record type carried in a marker's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    fn id(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }
}

/// What a marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub control_type: ControlType,
    pub coordinator_epoch: i32,
}

/// Key and value versions Weir writes (Kafka's current ones).
const CONTROL_KEY_VERSION: i16 = 0;
const MARKER_VALUE_VERSION: i16 = 0;

/// Builds a marker batch at offset 0 (the log assigns the real offset).
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    timestamp_ms: i64,
) -> Result<Bytes, RecordError> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&CONTROL_KEY_VERSION.to_be_bytes());
    key.extend_from_slice(&marker.control_type.id().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&MARKER_VALUE_VERSION.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    RecordBatchBuilder::new(Compression::None)
        .producer(producer_id, producer_epoch, -1)
        .transactional(true)
        .control(true)
        .base_timestamp(timestamp_ms)
        .record(Record {
            offset_delta: 0,
            timestamp_delta: 0,
            key: Some(Bytes::from(key)),
            value: Some(Bytes::from(value)),
            headers: Vec::new(),
        })
        .build()
}

/// Reads the control type from a control record's key. Unknown types are
/// `None` (Kafka skips control records it does not know).
pub fn parse_control_key(key: &[u8]) -> Result<Option<ControlType>, RecordError> {
    let bytes = key.get(..4).ok_or(RecordError::MalformedRecord(
        "control record key shorter than 4 bytes",
    ))?;
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    if version < 0 {
        return Err(RecordError::MalformedRecord("negative control key version"));
    }
    Ok(match i16::from_be_bytes([bytes[2], bytes[3]]) {
        0 => Some(ControlType::Abort),
        1 => Some(ControlType::Commit),
        _ => None,
    })
}

/// Reads the coordinator epoch from an end-transaction marker value.
pub fn parse_marker_value(value: &[u8]) -> Result<i32, RecordError> {
    let bytes = value.get(..6).ok_or(RecordError::MalformedRecord(
        "transaction marker value shorter than 6 bytes",
    ))?;
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    if version < 0 {
        return Err(RecordError::MalformedRecord(
            "negative transaction marker version",
        ));
    }
    Ok(i32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]))
}

/// Parses a whole marker batch (header plus its one record). Returns `None`
/// for a control batch of a type other than commit/abort.
pub fn parse_marker_batch(batch: &Bytes) -> Result<Option<(BatchHeader, Marker)>, RecordError> {
    let header = BatchHeader::parse(batch)?;
    if !header.is_control() {
        return Err(RecordError::InvalidField("not a control batch"));
    }
    // A marker holds one small record; a compressed one (Kafka never writes
    // them) may not inflate past this.
    const MARKER_DECOMPRESSED_BYTES_MAX: usize = 64 * 1024;
    let records = decode_records(batch, MARKER_DECOMPRESSED_BYTES_MAX)?;
    let record = records.first().ok_or(RecordError::MalformedRecord(
        "control batch without a record",
    ))?;
    let key = record
        .key
        .as_deref()
        .ok_or(RecordError::MalformedRecord("control record without a key"))?;
    let Some(control_type) = parse_control_key(key)? else {
        return Ok(None);
    };
    let value = record.value.as_deref().ok_or(RecordError::MalformedRecord(
        "transaction marker without a value",
    ))?;
    let coordinator_epoch = parse_marker_value(value)?;
    Ok(Some((
        header,
        Marker {
            control_type,
            coordinator_epoch,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_batch_round_trips() {
        for control_type in [ControlType::Commit, ControlType::Abort] {
            let marker = Marker {
                control_type,
                coordinator_epoch: 7,
            };
            let batch = marker_batch(42, 3, marker, 1_700_000_000_000).unwrap();
            crate::record::verify_crc(&batch).unwrap();
            let (header, parsed) = parse_marker_batch(&batch).unwrap().unwrap();
            assert_eq!(parsed, marker);
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(header.base_sequence, -1);
            assert_eq!(header.record_count, 1);
        }
    }

    #[test]
    fn short_or_unknown_control_keys_are_errors_or_skipped() {
        assert!(parse_control_key(&[0, 0, 0]).is_err());
        assert_eq!(parse_control_key(&[0, 0, 0, 5]).unwrap(), None);
        assert_eq!(
            parse_control_key(&[0, 1, 0, 1, 9, 9]).unwrap(),
            Some(ControlType::Commit)
        );
        assert!(parse_marker_value(&[0, 0, 0, 0, 1]).is_err());
        assert_eq!(parse_marker_value(&[0, 0, 0, 0, 0, 9, 1]).unwrap(), 9);
    }

    #[test]
    fn a_data_batch_is_not_a_marker() {
        let batch = RecordBatchBuilder::new(Compression::None)
            .record(Record::default())
            .build()
            .unwrap();
        assert!(parse_marker_batch(&batch).is_err());
    }
}

//! The records of `__transaction_state`, in Kafka's layouts
//! (`TransactionLogKey` v0 and `TransactionLogValue` v0/v1, from
//! apache/kafka `transaction-coordinator/src/main/resources/common/message`).
//!
//! | record | layout |
//! |---|---|
//! | key | i16 version=0, string transactional id |
//! | value v0 | i16 version=0, i64 producer id, i16 epoch, i32 timeout ms, i8 state, nullable [string topic, [i32 partition]], i64 last update ms, i64 start ms |
//! | value v1 | the same fields flexible (compact strings and arrays, tagged-field sections); tag 0 is the previous producer id |
//!
//! Weir writes value v1 (Kafka's current version). A null value is a
//! tombstone (the id expired); replay drops it.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use weir_protocol::codec::{
    DecodeError, EncodeError, read_array_len, read_i8, read_i16, read_i32, read_i64, read_string,
    read_tag_count, read_tagged_field, write_array_len, write_i8, write_i16, write_i32, write_i64,
    write_string, write_tag_header, write_uvarint,
};

use super::state::{NO_PRODUCER_EPOCH, NO_PRODUCER_ID, TxnMetadata, TxnState};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 1;
/// Tag of `PreviousProducerId` in value v1.
const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;

pub fn key(transactional_id: &str) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    write_i16(&mut buf, KEY_VERSION);
    write_string(&mut buf, transactional_id, false)?;
    Ok(buf.freeze())
}

/// The transactional id of a key, or `None` for a key version we don't know.
pub fn decode_key(mut buf: Bytes) -> Result<Option<String>, DecodeError> {
    if read_i16(&mut buf)? != KEY_VERSION {
        return Ok(None);
    }
    Ok(Some(read_string(&mut buf, false, "transactional_id")?))
}

pub fn value(meta: &TxnMetadata) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    write_i16(&mut buf, VALUE_VERSION);
    write_i64(&mut buf, meta.producer_id);
    write_i16(&mut buf, meta.producer_epoch);
    write_i32(&mut buf, meta.timeout_ms);
    write_i8(&mut buf, meta.state.id());
    let mut by_topic: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &meta.partitions {
        match by_topic.last_mut() {
            Some((t, list)) if *t == topic.as_str() => list.push(*partition),
            _ => by_topic.push((topic, vec![*partition])),
        }
    }
    write_array_len(&mut buf, Some(by_topic.len()), true)?;
    for (topic, partitions) in by_topic {
        write_string(&mut buf, topic, true)?;
        write_array_len(&mut buf, Some(partitions.len()), true)?;
        for p in partitions {
            write_i32(&mut buf, p);
        }
        write_uvarint(&mut buf, 0); // no tagged fields
    }
    write_i64(&mut buf, meta.last_update_ms);
    write_i64(&mut buf, meta.start_ms);
    if meta.previous_producer_id == NO_PRODUCER_ID {
        write_uvarint(&mut buf, 0);
    } else {
        write_uvarint(&mut buf, 1);
        write_tag_header(&mut buf, TAG_PREVIOUS_PRODUCER_ID, 8)?;
        write_i64(&mut buf, meta.previous_producer_id);
    }
    Ok(buf.freeze())
}

/// Skips a tagged-field section, returning the previous producer id if tag 0 is there.
fn read_tags(buf: &mut Bytes) -> Result<Option<i64>, DecodeError> {
    let mut previous = None;
    for _ in 0..read_tag_count(buf)? {
        let (tag, mut value) = read_tagged_field(buf)?;
        if tag == TAG_PREVIOUS_PRODUCER_ID {
            previous = Some(read_i64(&mut value)?);
        }
    }
    Ok(previous)
}

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("unknown TransactionLogValue version {0}")]
    UnknownVersion(i16),
    #[error("unknown transaction state {0}")]
    UnknownState(i8),
}

pub fn decode_value(transactional_id: &str, mut buf: Bytes) -> Result<TxnMetadata, ValueError> {
    let version = read_i16(&mut buf)?;
    if !(0..=1).contains(&version) {
        return Err(ValueError::UnknownVersion(version));
    }
    let flexible = version >= 1;
    let producer_id = read_i64(&mut buf)?;
    let producer_epoch = read_i16(&mut buf)?;
    let timeout_ms = read_i32(&mut buf)?;
    let state_id = read_i8(&mut buf)?;
    let state = TxnState::from_id(state_id).ok_or(ValueError::UnknownState(state_id))?;
    let mut partitions = BTreeSet::new();
    // A topic entry takes at least 2 bytes (empty compact string and array).
    if let Some(topics) = read_array_len(&mut buf, flexible, 2)? {
        for _ in 0..topics {
            let topic = read_string(&mut buf, flexible, "topic")?;
            let count = read_array_len(&mut buf, flexible, 4)?.unwrap_or(0);
            for _ in 0..count {
                partitions.insert((topic.clone(), read_i32(&mut buf)?));
            }
            if flexible {
                read_tags(&mut buf)?;
            }
        }
    }
    let last_update_ms = read_i64(&mut buf)?;
    let start_ms = read_i64(&mut buf)?;
    let previous_producer_id = if flexible {
        read_tags(&mut buf)?.unwrap_or(NO_PRODUCER_ID)
    } else {
        NO_PRODUCER_ID
    };
    Ok(TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        previous_producer_id,
        producer_epoch,
        last_producer_epoch: NO_PRODUCER_EPOCH,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_round_trips_with_partitions_and_previous_id() {
        let mut meta = TxnMetadata::new("tx-1", 4000, 30_000, 123);
        meta.producer_epoch = 3;
        meta.state = TxnState::PrepareCommit;
        meta.partitions.insert(("a".into(), 1));
        meta.partitions.insert(("a".into(), 0));
        meta.partitions.insert(("__consumer_offsets".into(), 7));
        meta.start_ms = 100;
        meta.previous_producer_id = 17;
        let bytes = value(&meta).unwrap();
        let back = decode_value("tx-1", bytes).unwrap();
        assert_eq!(back, meta);
        assert_eq!(
            decode_key(key("tx-1").unwrap()).unwrap().as_deref(),
            Some("tx-1")
        );
    }

    #[test]
    fn value_v0_bytes_from_the_kafka_layout_decode() {
        // Hand-built from TransactionLogValue.json v0: pid 5, epoch 2, timeout
        // 60000, Ongoing, [("t", [0, 3])], last update 9, start 8.
        let mut buf = BytesMut::new();
        write_i16(&mut buf, 0);
        write_i64(&mut buf, 5);
        write_i16(&mut buf, 2);
        write_i32(&mut buf, 60_000);
        write_i8(&mut buf, 1);
        write_i32(&mut buf, 1);
        write_string(&mut buf, "t", false).unwrap();
        write_i32(&mut buf, 2);
        write_i32(&mut buf, 0);
        write_i32(&mut buf, 3);
        write_i64(&mut buf, 9);
        write_i64(&mut buf, 8);
        let meta = decode_value("x", buf.freeze()).unwrap();
        assert_eq!(meta.state, TxnState::Ongoing);
        assert_eq!((meta.producer_id, meta.producer_epoch), (5, 2));
        assert_eq!(meta.partitions.len(), 2);
        assert_eq!((meta.last_update_ms, meta.start_ms), (9, 8));
    }

    #[test]
    fn hostile_values_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            &[0, 9][..],
            &[0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x7f][..],
        ] {
            assert!(decode_value("x", Bytes::copy_from_slice(bytes)).is_err());
        }
        let mut buf = BytesMut::new();
        write_i16(&mut buf, 0);
        write_i64(&mut buf, 5);
        write_i16(&mut buf, 2);
        write_i32(&mut buf, 1);
        write_i8(&mut buf, 1);
        write_i32(&mut buf, i32::MAX); // a huge topic count with nothing behind it
        assert!(decode_value("x", buf.freeze()).is_err());
    }
}

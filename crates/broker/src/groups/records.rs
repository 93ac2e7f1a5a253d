//! The records of `__consumer_offsets`.
//!
//! The byte layouts are Kafka's own (from its `OffsetCommitKey`/`Value` and
//! `GroupMetadataKey`/`Value` schemas), so the topic reads the same to
//! tools that know Kafka's format:
//!
//! | record | key | value |
//! |---|---|---|
//! | committed offset | i16 version=1, string group, string topic, i32 partition | i16 version=3, i64 offset, i32 leader epoch, string metadata, i64 commit timestamp |
//! | group metadata | i16 version=2, string group | i16 version=3, string protocol type, i32 generation, nullable string protocol, nullable string leader, i64 state timestamp, [member] |
//!
//! A member is: string member id, nullable string instance id, string client
//! id, string client host, i32 rebalance timeout, i32 session timeout, bytes
//! subscription, bytes assignment. Strings are i16-length-prefixed, bytes
//! i32-length-prefixed (Kafka's non-flexible encoding). A null value is a
//! tombstone: the offset or group was deleted.
//!
//! On reading, offset values v0/v1 and group values v0-v3 are also accepted
//! as far as their leading fields go; unknown key versions are skipped.

use bytes::{Bytes, BytesMut};
use weir_protocol::codec::{
    DecodeError, read_bytes, read_i16, read_i32, read_i64, read_nullable_bytes,
    read_nullable_string, read_string, write_bytes, write_i16, write_i32, write_i64,
    write_nullable_string, write_string,
};

use super::group::{OffsetEntry, StoredGroup, StoredMember};

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;
/// Bounds the member array of a stored group before allocating for it.
const STORED_MEMBERS_MAX: usize = 100_000;

/// A decoded record key.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::new();
    write_i16(&mut buf, OFFSET_KEY_VERSION);
    // Strings longer than i16::MAX can't occur: group ids and topic names are bounded before this.
    let _ = write_string(&mut buf, group, false);
    let _ = write_string(&mut buf, topic, false);
    write_i32(&mut buf, partition);
    buf.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut buf = BytesMut::new();
    write_i16(&mut buf, GROUP_KEY_VERSION);
    let _ = write_string(&mut buf, group, false);
    buf.freeze()
}

pub fn decode_key(mut buf: Bytes) -> Result<Option<Key>, DecodeError> {
    let version = read_i16(&mut buf)?;
    match version {
        0 | 1 => Ok(Some(Key::Offset {
            group: read_string(&mut buf, false, "group")?,
            topic: read_string(&mut buf, false, "topic")?,
            partition: read_i32(&mut buf)?,
        })),
        2 => Ok(Some(Key::Group {
            group: read_string(&mut buf, false, "group")?,
        })),
        _ => Ok(None),
    }
}

pub fn offset_value(entry: &OffsetEntry) -> Bytes {
    let mut buf = BytesMut::new();
    write_i16(&mut buf, OFFSET_VALUE_VERSION);
    write_i64(&mut buf, entry.offset);
    write_i32(&mut buf, entry.leader_epoch);
    let _ = write_string(&mut buf, &entry.metadata, false);
    write_i64(&mut buf, entry.commit_ts_ms);
    buf.freeze()
}

pub fn decode_offset_value(mut buf: Bytes) -> Result<OffsetEntry, DecodeError> {
    let version = read_i16(&mut buf)?;
    let offset = read_i64(&mut buf)?;
    let leader_epoch = if version >= 3 {
        read_i32(&mut buf)?
    } else {
        -1
    };
    let metadata = read_string(&mut buf, false, "metadata")?;
    let commit_ts_ms = read_i64(&mut buf)?;
    Ok(OffsetEntry {
        offset,
        leader_epoch,
        metadata,
        commit_ts_ms,
    })
}

pub fn group_value(group: &StoredGroup) -> Bytes {
    let mut buf = BytesMut::new();
    write_i16(&mut buf, GROUP_VALUE_VERSION);
    let _ = write_string(&mut buf, &group.protocol_type, false);
    write_i32(&mut buf, group.generation);
    let _ = write_nullable_string(&mut buf, group.protocol_name.as_deref(), false);
    let _ = write_nullable_string(&mut buf, group.leader.as_deref(), false);
    write_i64(&mut buf, group.state_since_ms);
    write_i32(
        &mut buf,
        i32::try_from(group.members.len()).unwrap_or(i32::MAX),
    );
    for m in &group.members {
        let _ = write_string(&mut buf, &m.member_id, false);
        let _ = write_nullable_string(&mut buf, m.instance_id.as_deref(), false);
        let _ = write_string(&mut buf, &m.client_id, false);
        let _ = write_string(&mut buf, &m.client_host, false);
        write_i32(&mut buf, m.rebalance_timeout_ms);
        write_i32(&mut buf, m.session_timeout_ms);
        let _ = write_bytes(&mut buf, &m.subscription, false);
        let _ = write_bytes(&mut buf, &m.assignment, false);
    }
    buf.freeze()
}

pub fn decode_group_value(mut buf: Bytes) -> Result<StoredGroup, DecodeError> {
    let version = read_i16(&mut buf)?;
    let protocol_type = read_string(&mut buf, false, "protocol_type")?;
    let generation = read_i32(&mut buf)?;
    let protocol_name = read_nullable_string(&mut buf, false)?;
    let leader = read_nullable_string(&mut buf, false)?;
    let state_since_ms = if version >= 2 {
        read_i64(&mut buf)?
    } else {
        -1
    };
    let count = read_i32(&mut buf)?;
    let count = usize::try_from(count).unwrap_or(0);
    if count > STORED_MEMBERS_MAX || count > buf.len() / 8 {
        return Err(DecodeError::Truncated {
            needed: count.saturating_mul(8),
            remaining: buf.len(),
        });
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = read_string(&mut buf, false, "member_id")?;
        let instance_id = if version >= 3 {
            read_nullable_string(&mut buf, false)?
        } else {
            None
        };
        let client_id = read_string(&mut buf, false, "client_id")?;
        let client_host = read_string(&mut buf, false, "client_host")?;
        let rebalance_timeout_ms = if version >= 1 { read_i32(&mut buf)? } else { 0 };
        let session_timeout_ms = read_i32(&mut buf)?;
        let subscription = read_bytes(&mut buf, false, "subscription")?;
        let assignment = read_bytes(&mut buf, false, "assignment")?;
        members.push(StoredMember {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if version >= 1 {
                rebalance_timeout_ms
            } else {
                session_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(StoredGroup {
        protocol_type,
        generation,
        protocol_name,
        leader,
        state_since_ms,
        members,
    })
}

/// Kafka's ConsumerProtocolSubscription v0 (i16 version, [string topic],
/// null user data), to show a consumer-protocol member to classic tools.
pub fn consumer_subscription(topics: &[String]) -> Bytes {
    let mut buf = BytesMut::new();
    write_i16(&mut buf, 0);
    write_i32(&mut buf, i32::try_from(topics.len()).unwrap_or(i32::MAX));
    for t in topics {
        let _ = write_string(&mut buf, t, false);
    }
    write_i32(&mut buf, -1);
    buf.freeze()
}

/// Kafka's ConsumerProtocolAssignment v0 (i16 version, [string topic,
/// [i32 partition]], null user data).
pub fn consumer_assignment(assignment: &super::consumer::Assignment) -> Bytes {
    let mut buf = BytesMut::new();
    write_i16(&mut buf, 0);
    write_i32(
        &mut buf,
        i32::try_from(assignment.len()).unwrap_or(i32::MAX),
    );
    for (topic, parts) in assignment {
        let _ = write_string(&mut buf, topic, false);
        write_i32(&mut buf, i32::try_from(parts.len()).unwrap_or(i32::MAX));
        for p in parts {
            write_i32(&mut buf, *p);
        }
    }
    write_i32(&mut buf, -1);
    buf.freeze()
}

/// The topics a consumer-protocol subscription names (Kafka's
/// ConsumerProtocolSubscription: i16 version, then [string topic], ...).
/// Used only to refuse OffsetDelete for topics a live group still reads.
pub fn subscribed_topics(subscription: &Bytes) -> Vec<String> {
    let mut buf = subscription.clone();
    let parse = |buf: &mut Bytes| -> Result<Vec<String>, DecodeError> {
        let _version = read_i16(buf)?;
        let count = usize::try_from(read_i32(buf)?).unwrap_or(0);
        let mut topics = Vec::with_capacity(count.min(buf.len() / 2));
        for _ in 0..count {
            topics.push(read_string(buf, false, "topic")?);
        }
        Ok(topics)
    };
    parse(&mut buf).unwrap_or_default()
}

/// A classic member's ConsumerProtocolSubscription, as far as the consumer
/// protocol needs it (Kafka's layout, versions 0-3: i16 version, [string
/// topic], nullable bytes user data; v1+ [string topic, [i32 partition]]
/// owned partitions; v2+ i32 generation; v3+ nullable string rack).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassicSubscription {
    pub topics: Vec<String>,
    /// Partitions the member still owns (always empty before v1).
    pub owned: super::consumer::Assignment,
    pub rack_id: Option<String>,
}

/// Bounds any array read from member metadata before allocating for it.
fn array_len(buf: &Bytes, count: i32, min_item_bytes: usize) -> Result<usize, DecodeError> {
    let count = usize::try_from(count).unwrap_or(0);
    if count > buf.len() / min_item_bytes.max(1) {
        return Err(DecodeError::Truncated {
            needed: count.saturating_mul(min_item_bytes),
            remaining: buf.len(),
        });
    }
    Ok(count)
}

/// `[string topic, [i32 partition]]`, as in assignments and owned partitions.
fn read_topic_partitions(buf: &mut Bytes) -> Result<super::consumer::Assignment, DecodeError> {
    let mut out = super::consumer::Assignment::new();
    let count = read_i32(buf)?;
    for _ in 0..array_len(buf, count, 6)? {
        let topic = read_string(buf, false, "topic")?;
        let partitions = read_i32(buf)?;
        let entry = out.entry(topic).or_default();
        for _ in 0..array_len(buf, partitions, 4)? {
            entry.insert(read_i32(buf)?);
        }
    }
    out.retain(|_, parts| !parts.is_empty());
    Ok(out)
}

pub fn decode_classic_subscription(metadata: &Bytes) -> Result<ClassicSubscription, DecodeError> {
    let mut buf = metadata.clone();
    let version = read_i16(&mut buf)?;
    let count = read_i32(&mut buf)?;
    let mut topics = Vec::new();
    for _ in 0..array_len(&buf, count, 2)? {
        topics.push(read_string(&mut buf, false, "topic")?);
    }
    let _user_data = read_nullable_bytes(&mut buf, false)?;
    let mut out = ClassicSubscription {
        topics,
        ..Default::default()
    };
    if version >= 1 {
        out.owned = read_topic_partitions(&mut buf)?;
    }
    if version >= 3 {
        let _generation = read_i32(&mut buf)?;
        out.rack_id = read_nullable_string(&mut buf, false)?;
    }
    Ok(out)
}

/// A ConsumerProtocolAssignment's partitions (empty bytes: nothing assigned,
/// as a member that has not synced yet holds).
pub fn decode_consumer_assignment(
    assignment: &Bytes,
) -> Result<super::consumer::Assignment, DecodeError> {
    if assignment.is_empty() {
        return Ok(super::consumer::Assignment::new());
    }
    let mut buf = assignment.clone();
    let _version = read_i16(&mut buf)?;
    read_topic_partitions(&mut buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_record_round_trips_in_kafka_layout() {
        let key = offset_key("g", "t", 7);
        // version 1, "g", "t", partition 7
        assert_eq!(&key[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
        assert_eq!(
            decode_key(key).unwrap(),
            Some(Key::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7
            })
        );
        let entry = OffsetEntry {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_ts_ms: 99,
        };
        assert_eq!(decode_offset_value(offset_value(&entry)).unwrap(), entry);
    }

    #[test]
    fn group_record_round_trips() {
        let group = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol_name: Some("range".into()),
            leader: Some("a".into()),
            state_since_ms: 1234,
            members: vec![StoredMember {
                member_id: "a".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(
            decode_key(group_key("g")).unwrap(),
            Some(Key::Group { group: "g".into() })
        );
        assert_eq!(decode_group_value(group_value(&group)).unwrap(), group);
    }

    #[test]
    fn classic_subscription_and_assignment_decode_every_version() {
        let owned: super::super::consumer::Assignment =
            [("t".to_string(), [0, 2].into_iter().collect())].into();
        let assignment = consumer_assignment(&owned);
        assert_eq!(decode_consumer_assignment(&assignment).unwrap(), owned);
        assert!(
            decode_consumer_assignment(&Bytes::new())
                .unwrap()
                .is_empty()
        );
        let v0 = consumer_subscription(&["a".to_string(), "b".to_string()]);
        let decoded = decode_classic_subscription(&v0).unwrap();
        assert_eq!(decoded.topics, vec!["a".to_string(), "b".to_string()]);
        assert!(decoded.owned.is_empty());
        // v3: topics, null user data, owned [t: 0, 2], generation 7, rack "r".
        let mut buf = BytesMut::new();
        write_i16(&mut buf, 3);
        write_i32(&mut buf, 1);
        let _ = write_string(&mut buf, "t", false);
        write_i32(&mut buf, -1);
        write_i32(&mut buf, 1);
        let _ = write_string(&mut buf, "t", false);
        write_i32(&mut buf, 2);
        write_i32(&mut buf, 0);
        write_i32(&mut buf, 2);
        write_i32(&mut buf, 7);
        let _ = write_nullable_string(&mut buf, Some("r"), false);
        let decoded = decode_classic_subscription(&buf.freeze()).unwrap();
        assert_eq!(decoded.owned, owned);
        assert_eq!(decoded.rack_id.as_deref(), Some("r"));
        // A huge array count is refused before allocating.
        let mut buf = BytesMut::new();
        write_i16(&mut buf, 0);
        write_i32(&mut buf, i32::MAX);
        assert!(decode_classic_subscription(&buf.freeze()).is_err());
    }

    #[test]
    fn group_value_with_huge_member_count_is_rejected_without_allocating() {
        let mut buf = BytesMut::new();
        write_i16(&mut buf, 3);
        let _ = write_string(&mut buf, "consumer", false);
        write_i32(&mut buf, 1);
        let _ = write_nullable_string(&mut buf, None, false);
        let _ = write_nullable_string(&mut buf, None, false);
        write_i64(&mut buf, 0);
        write_i32(&mut buf, i32::MAX);
        assert!(decode_group_value(buf.freeze()).is_err());
    }
}

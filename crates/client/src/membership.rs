//! Consumer-group membership over the classic protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup), for `weir consume --group`.
//!
//! The wire encodings of the consumer protocol's subscription and assignment
//! and the range assignor are pure functions with unit tests; [`Client`]'s
//! methods only carry them to the coordinator. The leader of a generation
//! assigns with Kafka's `range` assignor, which every Kafka client supports,
//! so a `weir consume --group` can share a group with other clients.

use std::collections::BTreeMap;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use weir_protocol::error_code::ErrorCode;
use weir_protocol::messages::{heartbeat, join_group, leave_group, sync_group};

use crate::client::Client;
use crate::error::ClientError;
use crate::groups::decode_assignment;

/// The one assignor this member offers.
pub const RANGE_ASSIGNOR: &str = "range";
/// Topics decoded from one subscription at most (bounds hostile input).
const SUBSCRIPTION_TOPICS_MAX: usize = 100_000;

/// This member's place in a group generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub group: String,
    pub member_id: String,
    pub generation_id: i32,
    /// The coordinator's broker id.
    pub coordinator: i32,
    /// Topic -> partitions this member owns in this generation.
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// How long the coordinator waits for this member.
#[derive(Debug, Clone, Copy)]
pub struct MembershipTimeouts {
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
}

impl Default for MembershipTimeouts {
    /// Kafka's consumer defaults are 45 s and 5 min; a CLI wants to be
    /// noticed gone sooner and to rebalance quickly.
    fn default() -> Self {
        MembershipTimeouts {
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
        }
    }
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    buf.put_i16(len);
    buf.put_slice(s.as_bytes().get(..len as usize).unwrap_or_default());
}

/// ConsumerProtocolSubscription v0: version, topics, null user data.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    buf.put_i32(i32::try_from(topics.len()).unwrap_or(i32::MAX));
    for t in topics {
        put_string(&mut buf, t);
    }
    buf.put_i32(-1);
    buf.freeze()
}

/// The topics of a member's subscription (any version: the topic list
/// comes first in all of them). Undecodable input gives no topics.
pub fn decode_subscription(bytes: &Bytes) -> Vec<String> {
    let mut buf = bytes.clone();
    let mut out = Vec::new();
    if buf.remaining() < 6 {
        return out;
    }
    let _version = buf.get_i16();
    let Ok(count) = usize::try_from(buf.get_i32()) else {
        return out;
    };
    for _ in 0..count.min(SUBSCRIPTION_TOPICS_MAX) {
        if buf.remaining() < 2 {
            return out;
        }
        let Ok(len) = usize::try_from(buf.get_i16()) else {
            return out;
        };
        if buf.remaining() < len {
            return out;
        }
        match String::from_utf8(buf.split_to(len).to_vec()) {
            Ok(t) => out.push(t),
            Err(_) => return out,
        }
    }
    out
}

/// ConsumerProtocolAssignment v0: version, [topic, [partition]], null user data.
pub fn encode_assignment(assignment: &[(String, Vec<i32>)]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    buf.put_i32(i32::try_from(assignment.len()).unwrap_or(i32::MAX));
    for (topic, partitions) in assignment {
        put_string(&mut buf, topic);
        buf.put_i32(i32::try_from(partitions.len()).unwrap_or(i32::MAX));
        for p in partitions {
            buf.put_i32(*p);
        }
    }
    buf.put_i32(-1);
    buf.freeze()
}

/// Kafka's range assignor: for each topic, the members subscribed to it (in
/// member id order) get contiguous ranges of its partitions, the first
/// `partitions % members` of them one extra.
pub fn range_assign(
    members: &[(String, Vec<String>)],
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<(String, Vec<i32>)>> {
    let mut out: BTreeMap<String, Vec<(String, Vec<i32>)>> = members
        .iter()
        .map(|(id, _)| (id.clone(), Vec::new()))
        .collect();
    for (topic, &count) in partition_counts {
        let mut subscribed: Vec<&String> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(id, _)| id)
            .collect();
        subscribed.sort();
        if subscribed.is_empty() || count <= 0 {
            continue;
        }
        let n = i32::try_from(subscribed.len()).unwrap_or(i32::MAX);
        let (per_member, extra) = (count / n, count % n);
        for (i, member) in subscribed.into_iter().enumerate() {
            let i = i32::try_from(i).unwrap_or(i32::MAX);
            let start = per_member * i + i.min(extra);
            let len = per_member + i32::from(i < extra);
            if len == 0 {
                continue;
            }
            if let Some(list) = out.get_mut(member) {
                list.push((topic.clone(), (start..start + len).collect()));
            }
        }
    }
    out
}

impl Client {
    /// Joins (or rejoins) a group as a consumer of `topics` and returns this
    /// member's assignment. Waits while the coordinator gathers members.
    pub async fn join_group(
        &mut self,
        group: &str,
        topics: &[String],
        previous: Option<&Membership>,
        timeouts: MembershipTimeouts,
    ) -> Result<Membership, ClientError> {
        let coordinator = self.find_coordinator(group).await?;
        let mut member_id = previous.map(|m| m.member_id.clone()).unwrap_or_default();
        let wait_ms = u64::try_from(timeouts.rebalance_timeout_ms).unwrap_or(0);
        // Two rounds at most: JoinGroup v4+ first hands out a member id
        // (MEMBER_ID_REQUIRED), then the join with it proceeds.
        let mut joined = None;
        for _ in 0..2 {
            let request = join_group::JoinGroupRequest {
                group_id: group.to_owned(),
                session_timeout_ms: timeouts.session_timeout_ms,
                rebalance_timeout_ms: timeouts.rebalance_timeout_ms,
                member_id: member_id.clone(),
                group_instance_id: None,
                protocol_type: "consumer".to_owned(),
                protocols: vec![join_group::JoinGroupRequestProtocol {
                    name: RANGE_ASSIGNOR.to_owned(),
                    metadata: encode_subscription(topics),
                }],
                reason: None,
            };
            let response = self.send_to_node(coordinator, &request, wait_ms).await?;
            if response.error_code == ErrorCode::MemberIdRequired.code() {
                member_id = response.member_id;
                continue;
            }
            ClientError::check(response.error_code, None, || {
                format!("join group '{group}'")
            })?;
            joined = Some(response);
            break;
        }
        let Some(joined) = joined else {
            return Err(ClientError::Protocol {
                addr: self.bootstrap().to_owned(),
                detail: format!("JoinGroup of '{group}' kept asking for a member id"),
            });
        };
        let member_id = joined.member_id.clone();
        let assignments = if joined.leader == member_id {
            let members: Vec<(String, Vec<String>)> = joined
                .members
                .iter()
                .map(|m| (m.member_id.clone(), decode_subscription(&m.metadata)))
                .collect();
            let mut counts = BTreeMap::new();
            for topic in members.iter().flat_map(|(_, t)| t) {
                if counts.contains_key(topic) {
                    continue;
                }
                self.invalidate_topic(topic);
                let count = match self.topic(topic, false).await {
                    Ok(info) => i32::try_from(info.partitions.len()).unwrap_or(0),
                    Err(ClientError::UnknownTopic(_)) => 0,
                    Err(e) => return Err(e),
                };
                counts.insert(topic.clone(), count);
            }
            range_assign(&members, &counts)
                .into_iter()
                .map(|(member_id, a)| sync_group::SyncGroupRequestAssignment {
                    member_id,
                    assignment: encode_assignment(&a),
                })
                .collect()
        } else {
            Vec::new()
        };
        let request = sync_group::SyncGroupRequest {
            group_id: group.to_owned(),
            generation_id: joined.generation_id,
            member_id: member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".to_owned()),
            protocol_name: joined.protocol_name.clone(),
            assignments,
        };
        let synced = self.send_to_node(coordinator, &request, wait_ms).await?;
        ClientError::check(synced.error_code, None, || format!("sync group '{group}'"))?;
        Ok(Membership {
            group: group.to_owned(),
            member_id,
            generation_id: joined.generation_id,
            coordinator,
            assignment: decode_assignment(&synced.assignment),
        })
    }

    /// Tells the coordinator this member is alive. REBALANCE_IN_PROGRESS
    /// (and the other errors that mean "rejoin") come back as a Kafka error.
    pub async fn heartbeat(&mut self, m: &Membership) -> Result<(), ClientError> {
        let request = heartbeat::HeartbeatRequest {
            group_id: m.group.clone(),
            generation_id: m.generation_id,
            member_id: m.member_id.clone(),
            group_instance_id: None,
        };
        let response = self.send_to_node(m.coordinator, &request, 0).await?;
        ClientError::check(response.error_code, None, || {
            format!("heartbeat to group '{}'", m.group)
        })
    }

    /// Leaves the group so its partitions move to the others at once.
    pub async fn leave_group(&mut self, m: &Membership) -> Result<(), ClientError> {
        let request = leave_group::LeaveGroupRequest {
            group_id: m.group.clone(),
            member_id: m.member_id.clone(),
            members: vec![leave_group::MemberIdentity {
                member_id: m.member_id.clone(),
                group_instance_id: None,
                reason: Some("weir consume exited".to_owned()),
            }],
        };
        let response = self.send_to_node(m.coordinator, &request, 0).await?;
        ClientError::check(response.error_code, None, || {
            format!("leave group '{}'", m.group)
        })
    }
}

/// Whether an error from a member's request means "rejoin the group".
pub fn needs_rejoin(e: &ClientError) -> bool {
    matches!(
        e.error_code(),
        Some(
            ErrorCode::RebalanceInProgress
                | ErrorCode::IllegalGeneration
                | ErrorCode::UnknownMemberId
                | ErrorCode::FencedInstanceId
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let topics = vec!["a".to_owned(), "bb".to_owned()];
        assert_eq!(decode_subscription(&encode_subscription(&topics)), topics);
        let assignment = vec![("a".to_owned(), vec![0, 2]), ("bb".to_owned(), vec![1])];
        assert_eq!(
            decode_assignment(&encode_assignment(&assignment)),
            assignment
        );
        assert!(
            decode_subscription(&Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff])).is_empty()
        );
    }

    #[test]
    fn range_gives_contiguous_ranges_and_the_extras_to_the_first_members() {
        let members = vec![
            ("m2".to_owned(), vec!["t".to_owned(), "u".to_owned()]),
            ("m1".to_owned(), vec!["t".to_owned()]),
        ];
        let counts = BTreeMap::from([("t".to_owned(), 5), ("u".to_owned(), 2)]);
        let a = range_assign(&members, &counts);
        assert_eq!(a["m1"], vec![("t".to_owned(), vec![0, 1, 2])]);
        assert_eq!(
            a["m2"],
            vec![("t".to_owned(), vec![3, 4]), ("u".to_owned(), vec![0, 1])]
        );
    }

    #[test]
    fn more_members_than_partitions_leaves_some_idle() {
        let members: Vec<(String, Vec<String>)> = (0..3)
            .map(|i| (format!("m{i}"), vec!["t".to_owned()]))
            .collect();
        let a = range_assign(&members, &BTreeMap::from([("t".to_owned(), 2)]));
        assert_eq!(a["m0"], vec![("t".to_owned(), vec![0])]);
        assert_eq!(a["m1"], vec![("t".to_owned(), vec![1])]);
        assert!(a["m2"].is_empty());
    }
}

//! Consumer-group administration: find the coordinator, list, describe,
//! read committed offsets, delete, and reset offsets of an inactive group.
//!
//! These are the calls behind `weir group ...`. Requests that concern one group
//! go to that group's coordinator (FindCoordinator), as Kafka requires.

use bytes::{Buf, Bytes};
use weir_protocol::messages::{
    delete_groups, describe_groups, find_coordinator, list_groups, offset_commit, offset_delete,
    offset_fetch,
};

use crate::client::Client;
use crate::error::ClientError;

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// Empty when the broker answers ListGroups below v4.
    pub state: String,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// Partitions assigned to the member, decoded from the consumer protocol.
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// The selected assignor (e.g. `range`, `cooperative-sticky`).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: Option<String>,
}

/// Largest assignment blob we decode (a member's assignment is small; this
/// only bounds hostile input).
const ASSIGNMENT_TOPICS_MAX: usize = 100_000;

fn read_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = usize::try_from(buf.get_i16()).ok()?;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

/// Decodes a classic consumer-protocol assignment (version, [topic, [partition]], user data).
/// Returns an empty list for an empty or undecodable blob: describe is best-effort.
pub fn decode_assignment(bytes: &Bytes) -> Vec<(String, Vec<i32>)> {
    let mut buf = bytes.clone();
    let mut out = Vec::new();
    if buf.remaining() < 6 {
        return out;
    }
    let _version = buf.get_i16();
    let topics = buf.get_i32();
    let Ok(topics) = usize::try_from(topics) else {
        return out;
    };
    for _ in 0..topics.min(ASSIGNMENT_TOPICS_MAX) {
        let Some(topic) = read_string(&mut buf) else {
            return out;
        };
        if buf.remaining() < 4 {
            return out;
        }
        let Ok(count) = usize::try_from(buf.get_i32()) else {
            return out;
        };
        if buf.remaining() < count.saturating_mul(4) {
            return out;
        }
        let partitions = (0..count).map(|_| buf.get_i32()).collect();
        out.push((topic, partitions));
    }
    out
}

impl Client {
    /// The broker id coordinating `group`.
    pub async fn find_coordinator(&mut self, group: &str) -> Result<i32, ClientError> {
        let version = self
            .version_for::<find_coordinator::FindCoordinatorRequest>()
            .await?;
        let request = find_coordinator::FindCoordinatorRequest {
            key: group.to_owned(),
            key_type: 0,
            coordinator_keys: vec![group.to_owned()],
        };
        let response = self.send_any(&request).await?;
        let (code, message, node) = if version >= 4 {
            let Some(c) = response.coordinators.into_iter().find(|c| c.key == group) else {
                return Err(ClientError::Protocol {
                    addr: self.bootstrap().to_owned(),
                    detail: format!("FindCoordinator response lacks group '{group}'"),
                });
            };
            (c.error_code, c.error_message, c.node_id)
        } else {
            (
                response.error_code,
                response.error_message,
                response.node_id,
            )
        };
        ClientError::check(code, message.as_deref(), || {
            format!("find coordinator of group '{group}'")
        })?;
        // Make sure the coordinator's address is known.
        self.metadata(Some(&[]), false).await?;
        Ok(node)
    }

    /// Every group the broker knows, optionally only those in the given states.
    pub async fn list_groups(
        &mut self,
        states: &[String],
    ) -> Result<Vec<GroupListing>, ClientError> {
        let request = list_groups::ListGroupsRequest {
            states_filter: states.to_vec(),
            types_filter: Vec::new(),
        };
        let response = self.send_any(&request).await?;
        ClientError::check(response.error_code, None, || "list groups".to_owned())?;
        let mut groups: Vec<GroupListing> = response
            .groups
            .into_iter()
            .map(|g| GroupListing {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                state: g.group_state,
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// Members, state and assignments of one group.
    pub async fn describe_group(&mut self, group: &str) -> Result<GroupDescription, ClientError> {
        let coordinator = self.find_coordinator(group).await?;
        let request = describe_groups::DescribeGroupsRequest {
            groups: vec![group.to_owned()],
            include_authorized_operations: false,
        };
        let response = self.send_to_node(coordinator, &request, 0).await?;
        let Some(g) = response.groups.into_iter().find(|g| g.group_id == group) else {
            return Err(ClientError::Protocol {
                addr: self.bootstrap().to_owned(),
                detail: format!("DescribeGroups response lacks group '{group}'"),
            });
        };
        ClientError::check(g.error_code, g.error_message.as_deref(), || {
            format!("describe group '{group}'")
        })?;
        Ok(GroupDescription {
            group_id: g.group_id,
            state: g.group_state,
            protocol_type: g.protocol_type,
            protocol: g.protocol_data,
            members: g
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    assignment: decode_assignment(&m.member_assignment),
                    member_id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    host: m.client_host,
                })
                .collect(),
        })
    }

    /// Every committed offset of a group (empty for a group that has none).
    pub async fn committed_offsets(
        &mut self,
        group: &str,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let coordinator = self.find_coordinator(group).await?;
        let version = self
            .version_for::<offset_fetch::OffsetFetchRequest>()
            .await?;
        // Null topics means "all topics" (v2+); v8+ batches groups.
        let request = offset_fetch::OffsetFetchRequest {
            group_id: group.to_owned(),
            topics: None,
            groups: vec![offset_fetch::OffsetFetchRequestGroup {
                group_id: group.to_owned(),
                member_id: None,
                member_epoch: -1,
                topics: None,
            }],
            require_stable: false,
        };
        let response = self.send_to_node(coordinator, &request, 0).await?;
        // (topic, partition, offset, metadata, error code), from either shape.
        let mut rows: Vec<(String, i32, i64, Option<String>, i16)> = Vec::new();
        if version >= 8 {
            for g in response.groups.into_iter().filter(|g| g.group_id == group) {
                ClientError::check(g.error_code, None, || {
                    format!("fetch offsets of group '{group}'")
                })?;
                for t in g.topics {
                    rows.extend(t.partitions.into_iter().map(|p| {
                        (
                            t.name.clone(),
                            p.partition_index,
                            p.committed_offset,
                            p.metadata,
                            p.error_code,
                        )
                    }));
                }
            }
        } else {
            ClientError::check(response.error_code, None, || {
                format!("fetch offsets of group '{group}'")
            })?;
            for t in response.topics {
                rows.extend(t.partitions.into_iter().map(|p| {
                    (
                        t.name.clone(),
                        p.partition_index,
                        p.committed_offset,
                        p.metadata,
                        p.error_code,
                    )
                }));
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for (topic, partition, offset, metadata, code) in rows {
            ClientError::check(code, None, || format!("offset of {topic}-{partition}"))?;
            out.push(CommittedOffset {
                topic,
                partition,
                offset,
                metadata,
            });
        }
        out.retain(|o| o.offset >= 0);
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Deletes a group (it must have no active members).
    pub async fn delete_group(&mut self, group: &str) -> Result<(), ClientError> {
        let coordinator = self.find_coordinator(group).await?;
        let request = delete_groups::DeleteGroupsRequest {
            groups_names: vec![group.to_owned()],
        };
        let response = self.send_to_node(coordinator, &request, 0).await?;
        let code = response
            .results
            .iter()
            .find(|r| r.group_id == group)
            .map_or(0, |r| r.error_code);
        ClientError::check(code, None, || format!("delete group '{group}'"))
    }

    /// Commits offsets for a group from outside it (generation -1, no member),
    /// which Kafka allows only while the group has no active members.
    pub async fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), ClientError> {
        self.commit_offsets_as(group, -1, "", offsets).await
    }

    /// Commits offsets as a member of a generation (`generation_id` -1 and
    /// an empty member id: from outside the group).
    pub async fn commit_offsets_as(
        &mut self,
        group: &str,
        generation_id: i32,
        member_id: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), ClientError> {
        let coordinator = self.find_coordinator(group).await?;
        let mut topics: Vec<offset_commit::OffsetCommitRequestTopic> = Vec::new();
        for (topic, partition, offset) in offsets {
            let partition = offset_commit::OffsetCommitRequestPartition {
                partition_index: *partition,
                committed_offset: *offset,
                committed_leader_epoch: -1,
                commit_timestamp: -1,
                committed_metadata: None,
            };
            match topics.iter_mut().find(|t| &t.name == topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(offset_commit::OffsetCommitRequestTopic {
                    name: topic.clone(),
                    partitions: vec![partition],
                }),
            }
        }
        let request = offset_commit::OffsetCommitRequest {
            group_id: group.to_owned(),
            generation_id_or_member_epoch: generation_id,
            member_id: member_id.to_owned(),
            group_instance_id: None,
            retention_time_ms: -1,
            topics,
        };
        let response = self.send_to_node(coordinator, &request, 0).await?;
        for t in response.topics {
            for p in t.partitions {
                ClientError::check(p.error_code, None, || {
                    format!("commit offset of {}-{}", t.name, p.partition_index)
                })?;
            }
        }
        Ok(())
    }
}

impl Client {
    /// Deletes a group's committed offsets of some partitions (OffsetDelete).
    /// Kafka refuses this for partitions the group is consuming
    /// (GROUP_SUBSCRIBED_TO_TOPIC).
    pub async fn delete_committed_offsets(
        &mut self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<(), ClientError> {
        let coordinator = self.find_coordinator(group).await?;
        let mut topics: Vec<offset_delete::OffsetDeleteRequestTopic> = Vec::new();
        for (topic, partition) in partitions {
            let p = offset_delete::OffsetDeleteRequestPartition {
                partition_index: *partition,
            };
            match topics.iter_mut().find(|t| &t.name == topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(offset_delete::OffsetDeleteRequestTopic {
                    name: topic.clone(),
                    partitions: vec![p],
                }),
            }
        }
        let request = offset_delete::OffsetDeleteRequest {
            group_id: group.to_owned(),
            topics,
        };
        let response = self.send_to_node(coordinator, &request, 0).await?;
        ClientError::check(response.error_code, None, || {
            format!("delete committed offsets of group '{group}'")
        })?;
        for t in response.topics {
            for p in t.partitions {
                ClientError::check(p.error_code, None, || {
                    format!(
                        "delete committed offset of {}-{} for group '{group}'",
                        t.name, p.partition_index
                    )
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;

    #[test]
    fn assignment_blob_decodes_topics_and_partitions() {
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        buf.put_i32(1);
        buf.put_i16(3);
        buf.put_slice(b"abc");
        buf.put_i32(2);
        buf.put_i32(4);
        buf.put_i32(7);
        buf.put_i32(-1); // null user data
        assert_eq!(
            decode_assignment(&buf.freeze()),
            vec![("abc".to_owned(), vec![4, 7])]
        );
    }

    #[test]
    fn hostile_assignment_blob_decodes_to_nothing_without_allocating_its_counts() {
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        buf.put_i32(i32::MAX);
        buf.put_i16(1);
        buf.put_slice(b"x");
        buf.put_i32(i32::MAX);
        assert_eq!(
            decode_assignment(&buf.freeze()),
            Vec::<(String, Vec<i32>)>::new()
        );
    }
}

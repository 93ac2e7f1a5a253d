//! One classic consumer group as a plain state machine (sans-I/O).
//!
//! Every event (join, sync, heartbeat, leave, commit check, the passing of
//! time) is a method taking `now_ms`. Requests that must wait for the rest of
//! the group (JoinGroup, SyncGroup) hand over a waiter `W`, which the group
//! keeps until the round completes and then returns, paired with its reply, in
//! the caller's outbox. The group never sleeps, spawns or does I/O: the async
//! shell in `groups::mod` owns the clock, the channels and the log.
//!
//! States follow Kafka's classic protocol: Empty → PreparingRebalance (JoinGroup
//! round) → CompletingRebalance (waiting for the leader's SyncGroup) → Stable,
//! and back to PreparingRebalance whenever membership or subscriptions change.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use weir_protocol::error_code::ErrorCode;

use super::consumer::{CLASSIC_PROTOCOL_TYPE, ClassicSeed, ConsumerGroup, TopicCounts};
use super::records;

/// Where a group is in its rebalance cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in ListGroups/DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Broker-wide limits every group obeys.
#[derive(Debug, Clone)]
pub struct GroupLimits {
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    /// Kafka's `group.initial.rebalance.delay.ms`: how long the first round of
    /// an empty group waits for more members before completing.
    pub initial_rebalance_delay_ms: i64,
    /// Kafka's `group.max.size`.
    pub members_max: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            members_max: 10_000,
        }
    }
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    /// (protocol name, member metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// KIP-394 (JoinGroup v4+): a member without an id first gets one back
    /// with MEMBER_ID_REQUIRED and must join again with it.
    pub require_known_member_id: bool,
    /// The id to hand out if this request needs a new one; the shell makes it
    /// (randomness is I/O as far as this module is concerned).
    pub fresh_member_id: String,
}

/// One member as the group leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinReply {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub members: Vec<JoinedMember>,
    /// KIP-814: a static leader rejoining a stable group gets the member list
    /// but must not compute a new assignment.
    pub skip_assignment: bool,
}

impl JoinReply {
    pub fn error(error: ErrorCode, member_id: &str) -> JoinReply {
        JoinReply {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncReply {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncReply {
    pub fn error(error: ErrorCode) -> SyncReply {
        SyncReply {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// What a parked waiter eventually receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Join(JoinReply),
    Sync(SyncReply),
}

/// A SyncGroup request, decoded.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Only the leader sends assignments: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

/// Replies produced by an event, to be delivered by the shell.
pub type Outbox<W> = Vec<(W, Reply)>;

#[derive(Debug)]
pub struct Member<W> {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// What the leader assigned this member in the current generation.
    pub assignment: Bytes,
    join_waiter: Option<W>,
    sync_waiter: Option<W>,
    /// Sent SyncGroup in the current generation (members that never do are
    /// removed when the sync deadline passes).
    synced: bool,
    /// Session expiry: the member is removed if no heartbeat arrives by then.
    heartbeat_deadline_ms: i64,
}

impl<W> Member<W> {
    /// Metadata for `protocol`, or empty if the member doesn't speak it.
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    pub fn is_awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetEntry {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ts_ms: i64,
}

/// A member restored from the log after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// The persisted shape of a group (offsets are stored separately).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_since_ms: i64,
    pub members: Vec<StoredMember>,
}

#[derive(Debug)]
pub struct Group<W> {
    pub id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member<W>>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, with the time by which
    /// they must come back.
    pending: HashMap<String, i64>,
    /// group.instance.id → current member id (KIP-345).
    static_ids: HashMap<String, String>,
    pub offsets: BTreeMap<(String, i32), OffsetEntry>,
    /// When the JoinGroup round ends even if members are missing.
    join_deadline_ms: Option<i64>,
    /// While set, the round waits out the initial delay instead of completing
    /// as soon as everyone joined: the latest the delay may be extended to.
    initial_delay_end_max_ms: Option<i64>,
    /// When members that have not sent SyncGroup are removed.
    sync_deadline_ms: Option<i64>,
    /// When the group entered its current state (offset expiry counts from
    /// the moment a group became empty, KIP-211).
    state_since_ms: i64,
    /// The group's persisted shape changed and must be written.
    dirty: bool,
    /// Set while the group speaks the consumer protocol (KIP-848); its
    /// classic side then stays Empty and the group only holds offsets there.
    pub consumer: Option<ConsumerGroup>,
}

impl<W> Group<W> {
    pub fn new(id: &str, now_ms: i64) -> Group<W> {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_ids: HashMap::new(),
            offsets: BTreeMap::new(),
            join_deadline_ms: None,
            initial_delay_end_max_ms: None,
            sync_deadline_ms: None,
            state_since_ms: now_ms,
            dirty: false,
            consumer: None,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    pub fn members(&self) -> impl Iterator<Item = &Member<W>> {
        self.members.values()
    }
    pub fn member(&self, member_id: &str) -> Option<&Member<W>> {
        self.members.get(member_id)
    }
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }

    /// No consumer-protocol member is left (true for classic groups).
    pub fn consumer_members_gone(&self) -> bool {
        self.consumer.as_ref().is_none_or(ConsumerGroup::is_empty)
    }

    /// May the group be forgotten? Only when nothing lives in it: no member,
    /// no member id handed out and still to be claimed (KIP-394), no round in
    /// progress, no committed offset and no consumer-protocol member. Kafka
    /// likewise removes only Empty groups without offsets; removing one that
    /// has a joining member turns that member's next JoinGroup into
    /// UNKNOWN_MEMBER_ID.
    pub fn is_removable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.offsets.is_empty()
            && self.consumer_members_gone()
            && self.next_deadline_ms().is_none()
    }

    /// Returns whether the group's persisted shape changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        if self.state != state {
            self.state = state;
            self.state_since_ms = now_ms;
        }
    }

    /// Marks the group deleted; later requests see it as gone.
    pub fn mark_dead(&mut self, now_ms: i64) {
        self.set_state(GroupState::Dead, now_ms);
    }

    /// The shape to persist.
    pub fn stored(&self) -> StoredGroup {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_since_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Rebuilds a group from its persisted shape. Restored members get a full
    /// session to reconnect, so a broker restart does not force a rebalance.
    pub fn restore(&mut self, stored: StoredGroup, now_ms: i64) {
        self.generation = stored.generation;
        self.protocol_type = (!stored.protocol_type.is_empty()).then_some(stored.protocol_type);
        self.protocol_name = stored.protocol_name.clone();
        self.leader = stored.leader;
        self.members.clear();
        self.static_ids.clear();
        let protocol = stored.protocol_name.unwrap_or_default();
        for m in stored.members {
            if let Some(instance) = &m.instance_id {
                self.static_ids
                    .insert(instance.clone(), m.member_id.clone());
            }
            self.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: self.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    synced: true,
                    heartbeat_deadline_ms: now_ms.saturating_add(i64::from(m.session_timeout_ms)),
                },
            );
        }
        let state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.state = state;
        self.state_since_ms = stored.state_since_ms;
        self.join_deadline_ms = None;
        self.sync_deadline_ms = None;
        self.initial_delay_end_max_ms = None;
    }

    /// The earliest moment [`Group::tick`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut consider = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
        if let Some(t) = self.join_deadline_ms {
            consider(t);
        }
        if let Some(t) = self.sync_deadline_ms {
            consider(t);
        }
        for &t in self.pending.values() {
            consider(t);
        }
        for m in self.members.values() {
            if m.join_waiter.is_none() && m.sync_waiter.is_none() {
                consider(m.heartbeat_deadline_ms);
            }
        }
        if let Some(t) = self
            .consumer
            .as_ref()
            .and_then(ConsumerGroup::next_deadline_ms)
        {
            consider(t);
        }
        next
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0)
    }

    /// Protocols every member supports; each member votes for its most
    /// preferred one of those, and the most votes win (ties: first voted).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == name))
            })
            .collect();
        let mut votes: Vec<(&str, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(p, _)| candidates.contains(&p.as_str()))
                && let Some(slot) = votes.iter_mut().find(|(c, _)| *c == name)
            {
                slot.1 += 1;
            }
        }
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes
            .iter()
            .find(|(_, n)| *n == best)
            .map(|(c, _)| c.to_string())
    }

    /// Would a member with these protocols fit the group?
    fn supports(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
        member_id: Option<&str>,
    ) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        let others: Vec<&Member<W>> = self
            .members
            .values()
            .filter(|m| Some(m.member_id.as_str()) != member_id)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(p, _)| p == name))
        })
    }

    fn join_reply_for(&self, member_id: &str, skip_assignment: bool) -> JoinReply {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if is_leader {
            self.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinReply {
            error: ErrorCode::None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment: is_leader && skip_assignment,
        }
    }

    /// JoinGroup. The reply goes to `out` now or when the round completes.
    pub fn join(
        &mut self,
        req: JoinRequest,
        waiter: W,
        now_ms: i64,
        limits: &GroupLimits,
        out: &mut Outbox<W>,
    ) {
        let fail = |out: &mut Outbox<W>, waiter: W, e: ErrorCode, id: &str| {
            out.push((waiter, Reply::Join(JoinReply::error(e, id))));
        };
        if self.state == GroupState::Dead {
            return fail(
                out,
                waiter,
                ErrorCode::CoordinatorNotAvailable,
                &req.member_id,
            );
        }
        if req.session_timeout_ms < limits.session_timeout_ms_min
            || req.session_timeout_ms > limits.session_timeout_ms_max
        {
            return fail(
                out,
                waiter,
                ErrorCode::InvalidSessionTimeout,
                &req.member_id,
            );
        }
        let existing = (!req.member_id.is_empty()).then_some(req.member_id.as_str());
        if !self.supports(&req.protocol_type, &req.protocols, existing) {
            return fail(
                out,
                waiter,
                ErrorCode::InconsistentGroupProtocol,
                &req.member_id,
            );
        }
        if req.member_id.is_empty() {
            if let Some(instance) = req.instance_id.clone() {
                if let Some(old_id) = self.static_ids.get(&instance).cloned() {
                    return self.replace_static_member(&old_id, req, waiter, now_ms, out);
                }
                let id = req.fresh_member_id.clone();
                return self.add_member_and_join(id, req, waiter, now_ms, limits, out);
            }
            if req.require_known_member_id {
                let id = req.fresh_member_id.clone();
                self.pending.insert(
                    id.clone(),
                    now_ms.saturating_add(i64::from(req.session_timeout_ms)),
                );
                return fail(out, waiter, ErrorCode::MemberIdRequired, &id);
            }
            let id = req.fresh_member_id.clone();
            return self.add_member_and_join(id, req, waiter, now_ms, limits, out);
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member_and_join(id, req, waiter, now_ms, limits, out);
        }
        if let Some(instance) = &req.instance_id
            && let Some(current) = self.static_ids.get(instance)
            && *current != req.member_id
        {
            return fail(out, waiter, ErrorCode::FencedInstanceId, &req.member_id);
        }
        if !self.members.contains_key(&req.member_id) {
            return fail(out, waiter, ErrorCode::UnknownMemberId, &req.member_id);
        }
        self.update_member_and_join(req, waiter, now_ms, out);
    }

    fn add_member_and_join(
        &mut self,
        member_id: String,
        req: JoinRequest,
        waiter: W,
        now_ms: i64,
        limits: &GroupLimits,
        out: &mut Outbox<W>,
    ) {
        if self.members.len() >= limits.members_max {
            out.push((
                waiter,
                Reply::Join(JoinReply::error(ErrorCode::GroupMaxSizeReached, &member_id)),
            ));
            return;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.instance_id {
            self.static_ids.insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                member_id,
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type,
                protocols: req.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(waiter),
                sync_waiter: None,
                synced: false,
                heartbeat_deadline_ms: now_ms.saturating_add(i64::from(req.session_timeout_ms)),
            },
        );
        match self.state {
            GroupState::PreparingRebalance => {
                // A newcomer during the initial delay buys the others more time,
                // up to the rebalance timeout (Kafka's InitialDelayedJoin).
                if let Some(end_max) = self.initial_delay_end_max_ms {
                    let extended = now_ms
                        .saturating_add(limits.initial_rebalance_delay_ms)
                        .min(end_max);
                    self.join_deadline_ms =
                        Some(self.join_deadline_ms.map_or(extended, |d| d.max(extended)));
                }
            }
            _ => self.prepare_rebalance(now_ms, limits.initial_rebalance_delay_ms, out),
        }
        self.maybe_complete_join(now_ms, out);
    }

    fn update_member_and_join(
        &mut self,
        req: JoinRequest,
        waiter: W,
        now_ms: i64,
        out: &mut Outbox<W>,
    ) {
        let id = req.member_id.clone();
        let Some(member) = self.members.get_mut(&id) else {
            out.push((
                waiter,
                Reply::Join(JoinReply::error(ErrorCode::UnknownMemberId, &id)),
            ));
            return;
        };
        let changed = member.protocols != req.protocols;
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(req.session_timeout_ms));
        match self.state {
            GroupState::PreparingRebalance => {
                // A retried join replaces the earlier one; the earlier request's
                // future resolves as abandoned when its waiter is dropped.
                member.join_waiter = Some(waiter);
                self.maybe_complete_join(now_ms, out);
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let is_leader = self.leader.as_deref() == Some(id.as_str());
                let follower_retry =
                    !changed && (self.state == GroupState::CompletingRebalance || !is_leader);
                if follower_retry {
                    // Nothing changed: the member lost its response; resend it.
                    out.push((waiter, Reply::Join(self.join_reply_for(&id, false))));
                } else {
                    member.join_waiter = Some(waiter);
                    self.prepare_rebalance(now_ms, 0, out);
                    self.maybe_complete_join(now_ms, out);
                }
            }
            GroupState::Empty | GroupState::Dead => {
                out.push((
                    waiter,
                    Reply::Join(JoinReply::error(ErrorCode::UnknownMemberId, &id)),
                ));
            }
        }
    }

    /// KIP-345: a static member came back with a new process (empty member id).
    /// It takes over the old member's place under a new id; the old id is fenced.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        req: JoinRequest,
        waiter: W,
        now_ms: i64,
        out: &mut Outbox<W>,
    ) {
        let Some(mut member) = self.members.remove(old_id) else {
            out.push((
                waiter,
                Reply::Join(JoinReply::error(ErrorCode::UnknownMemberId, old_id)),
            ));
            return;
        };
        let new_id = req.fresh_member_id.clone();
        if let Some(old) = member.join_waiter.take() {
            out.push((
                old,
                Reply::Join(JoinReply::error(ErrorCode::FencedInstanceId, old_id)),
            ));
        }
        if let Some(old) = member.sync_waiter.take() {
            out.push((
                old,
                Reply::Sync(SyncReply::error(ErrorCode::FencedInstanceId)),
            ));
        }
        let changed = member.protocols != req.protocols;
        member.member_id = new_id.clone();
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(req.session_timeout_ms));
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &req.instance_id {
            self.static_ids.insert(instance.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        // The member id is part of the persisted shape.
        self.dirty = true;
        match self.state {
            GroupState::Stable if !changed => {
                // Same subscription: hand back the current generation without a
                // rebalance; SyncGroup then returns the stored assignment.
                out.push((waiter, Reply::Join(self.join_reply_for(&new_id, true))));
            }
            GroupState::PreparingRebalance => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.join_waiter = Some(waiter);
                }
                self.maybe_complete_join(now_ms, out);
            }
            _ => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.join_waiter = Some(waiter);
                }
                self.prepare_rebalance(now_ms, 0, out);
                self.maybe_complete_join(now_ms, out);
            }
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, initial_delay_ms: i64, out: &mut Outbox<W>) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    out.push((
                        w,
                        Reply::Sync(SyncReply::error(ErrorCode::RebalanceInProgress)),
                    ));
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.sync_deadline_ms = None;
        self.set_state(GroupState::PreparingRebalance, now_ms);
        let rebalance_timeout_ms = self.rebalance_timeout_ms();
        if was_empty && initial_delay_ms > 0 {
            let end_max = now_ms.saturating_add(rebalance_timeout_ms);
            self.initial_delay_end_max_ms = Some(end_max);
            self.join_deadline_ms = Some(now_ms.saturating_add(initial_delay_ms).min(end_max));
        } else {
            self.initial_delay_end_max_ms = None;
            self.join_deadline_ms = Some(now_ms.saturating_add(rebalance_timeout_ms));
        }
    }

    fn maybe_complete_join(&mut self, now_ms: i64, out: &mut Outbox<W>) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay_end_max_ms.is_none()
            && self.pending.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some())
        {
            self.complete_join(now_ms, out);
        }
    }

    fn complete_join(&mut self, now_ms: i64, out: &mut Outbox<W>) {
        // Members that didn't rejoin in time are out (static ones too: they
        // would hold partitions nobody consumes).
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.forget_member(&id, out);
        }
        self.join_deadline_ms = None;
        self.initial_delay_end_max_ms = None;
        self.generation = self.generation.saturating_add(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            self.dirty = true;
            return;
        }
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now_ms);
        self.sync_deadline_ms = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let reply = self.join_reply_for(&id, false);
            if let Some(m) = self.members.get_mut(&id) {
                m.assignment = Bytes::new();
                m.synced = false;
                m.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(m.session_timeout_ms));
                if let Some(w) = m.join_waiter.take() {
                    out.push((w, Reply::Join(reply)));
                }
            }
        }
    }

    /// Removes a member, answering anything it still waits on.
    fn forget_member(&mut self, member_id: &str, out: &mut Outbox<W>) {
        if let Some(mut m) = self.members.remove(member_id) {
            if let Some(w) = m.join_waiter.take() {
                out.push((
                    w,
                    Reply::Join(JoinReply::error(ErrorCode::UnknownMemberId, member_id)),
                ));
            }
            if let Some(w) = m.sync_waiter.take() {
                out.push((w, Reply::Sync(SyncReply::error(ErrorCode::UnknownMemberId))));
            }
            if let Some(instance) = &m.instance_id
                && self.static_ids.get(instance).map(String::as_str) == Some(member_id)
            {
                self.static_ids.remove(instance);
            }
        }
    }

    /// Removes a member and rebalances the rest.
    fn remove_member_and_rebalance(&mut self, member_id: &str, now_ms: i64, out: &mut Outbox<W>) {
        self.forget_member(member_id, out);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, 0, out);
                self.maybe_complete_join(now_ms, out);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// SyncGroup. The reply goes to `out` now or once the leader's assignment arrives.
    pub fn sync(&mut self, req: SyncRequest, waiter: W, now_ms: i64, out: &mut Outbox<W>) {
        let fail = |out: &mut Outbox<W>, waiter: W, e: ErrorCode| {
            out.push((waiter, Reply::Sync(SyncReply::error(e))))
        };
        if self.state == GroupState::Dead {
            return fail(out, waiter, ErrorCode::CoordinatorNotAvailable);
        }
        if let Some(code) = self.check_instance(&req.member_id, req.instance_id.as_deref()) {
            return fail(out, waiter, code);
        }
        if !self.members.contains_key(&req.member_id) {
            return fail(out, waiter, ErrorCode::UnknownMemberId);
        }
        if req.generation != self.generation {
            return fail(out, waiter, ErrorCode::IllegalGeneration);
        }
        let type_mismatch = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_mismatch = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if type_mismatch || name_mismatch {
            return fail(out, waiter, ErrorCode::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::PreparingRebalance => fail(out, waiter, ErrorCode::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.synced = true;
                    m.heartbeat_deadline_ms =
                        now_ms.saturating_add(i64::from(m.session_timeout_ms));
                    if let Some(old) = m.sync_waiter.replace(waiter) {
                        out.push((
                            old,
                            Reply::Sync(SyncReply::error(ErrorCode::RebalanceInProgress)),
                        ));
                    }
                }
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    for (id, assignment) in req.assignments {
                        if let Some(m) = self.members.get_mut(&id) {
                            m.assignment = assignment;
                        }
                    }
                    self.set_state(GroupState::Stable, now_ms);
                    self.sync_deadline_ms = None;
                    self.dirty = true;
                    let protocol_type = self.protocol_type.clone();
                    let protocol_name = self.protocol_name.clone();
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            out.push((
                                w,
                                Reply::Sync(SyncReply {
                                    error: ErrorCode::None,
                                    protocol_type: protocol_type.clone(),
                                    protocol_name: protocol_name.clone(),
                                    assignment: m.assignment.clone(),
                                }),
                            ));
                        }
                    }
                }
            }
            GroupState::Stable => {
                let reply = self.members.get_mut(&req.member_id).map(|m| {
                    m.synced = true;
                    m.heartbeat_deadline_ms =
                        now_ms.saturating_add(i64::from(m.session_timeout_ms));
                    m.assignment.clone()
                });
                out.push((
                    waiter,
                    Reply::Sync(SyncReply {
                        error: ErrorCode::None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: reply.unwrap_or_default(),
                    }),
                ));
            }
            GroupState::Empty | GroupState::Dead => fail(out, waiter, ErrorCode::UnknownMemberId),
        }
    }

    /// FENCED_INSTANCE_ID when `instance_id` now belongs to another member id.
    fn check_instance(&self, member_id: &str, instance_id: Option<&str>) -> Option<ErrorCode> {
        let instance = instance_id?;
        match self.static_ids.get(instance) {
            Some(current) if current != member_id => Some(ErrorCode::FencedInstanceId),
            Some(_) => None,
            None => Some(ErrorCode::UnknownMemberId),
        }
    }

    /// Heartbeat: keeps the session alive and tells the member about rebalances.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> ErrorCode {
        if matches!(self.state, GroupState::Dead) {
            return ErrorCode::CoordinatorNotAvailable;
        }
        if let Some(code) = self.check_instance(member_id, instance_id) {
            return code;
        }
        let state = self.state;
        let current_generation = self.generation;
        let Some(member) = self.members.get_mut(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if state == GroupState::PreparingRebalance {
            member.heartbeat_deadline_ms =
                now_ms.saturating_add(i64::from(member.session_timeout_ms));
            return ErrorCode::RebalanceInProgress;
        }
        if generation != current_generation {
            return ErrorCode::IllegalGeneration;
        }
        member.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(member.session_timeout_ms));
        ErrorCode::None
    }

    /// LeaveGroup for one member (by member id, or by instance id for static members).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: i64,
        out: &mut Outbox<W>,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        let id = match instance_id {
            Some(instance) => match self.static_ids.get(instance) {
                None => return ErrorCode::UnknownMemberId,
                Some(current) if !member_id.is_empty() && current != member_id => {
                    return ErrorCode::FencedInstanceId;
                }
                Some(current) => current.clone(),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            self.maybe_complete_join(now_ms, out);
            return ErrorCode::None;
        }
        if !self.members.contains_key(&id) {
            return ErrorCode::UnknownMemberId;
        }
        self.remove_member_and_rebalance(&id, now_ms, out);
        ErrorCode::None
    }

    /// May this member commit offsets now? Refreshes its session if so.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        // Standalone consumers (assign(), admin tools) commit without a
        // generation; Kafka accepts that to an empty group whatever member id
        // comes with it (librdkafka's consumer-protocol client sends its own).
        if generation < 0 && self.state == GroupState::Empty {
            return ErrorCode::None;
        }
        if generation < 0 && member_id.is_empty() && instance_id.is_none() {
            // A simple commit to a live group.
            return ErrorCode::UnknownMemberId;
        }
        if let Some(code) = self.check_instance(member_id, instance_id) {
            return code;
        }
        let state = self.state;
        let current_generation = self.generation;
        let Some(member) = self.members.get_mut(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if generation != current_generation {
            return ErrorCode::IllegalGeneration;
        }
        if state == GroupState::CompletingRebalance {
            return ErrorCode::RebalanceInProgress;
        }
        // Cooperative members commit revoked partitions while PreparingRebalance;
        // that is allowed for the current generation.
        member.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(member.session_timeout_ms));
        ErrorCode::None
    }

    /// Drops offsets past retention. Only an empty group's offsets expire;
    /// for a consumer group the clock starts when it became empty (KIP-211),
    /// for a standalone one at the commit. Returns the removed keys.
    pub fn expire_offsets(&mut self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty || retention_ms < 0 || !self.consumer_members_gone() {
            return Vec::new();
        }
        let empty_since = self.protocol_type.is_some().then_some(self.state_since_ms);
        let expired: Vec<(String, i32)> = self
            .offsets
            .iter()
            .filter(|(_, e)| {
                let base = empty_since.map_or(e.commit_ts_ms, |s| s.max(e.commit_ts_ms));
                base.saturating_add(retention_ms) <= now_ms
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.offsets.remove(key);
        }
        expired
    }

    /// Time-driven transitions: ends JoinGroup rounds, removes members whose
    /// session or sync deadline passed, forgets unclaimed KIP-394 ids.
    pub fn tick(&mut self, now_ms: i64, out: &mut Outbox<W>) {
        if let Some(consumer) = &mut self.consumer {
            let expired = consumer.tick(now_ms);
            for id in &expired {
                tracing::info!(group = %self.id, member = %id, "consumer group member expired");
            }
            if !expired.is_empty() {
                self.maybe_downgrade(now_ms, out);
            }
        }
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now_ms);
        if self.pending.len() != before {
            self.maybe_complete_join(now_ms, out);
        }
        if self.state == GroupState::PreparingRebalance
            && self.join_deadline_ms.is_some_and(|d| d <= now_ms)
        {
            // Unclaimed KIP-394 ids don't hold up a round past its deadline.
            self.pending.clear();
            self.complete_join(now_ms, out);
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline_ms.is_some_and(|d| d <= now_ms)
        {
            let laggards: Vec<String> = self
                .members
                .values()
                .filter(|m| !m.synced)
                .map(|m| m.member_id.clone())
                .collect();
            for id in laggards {
                self.forget_member(&id, out);
            }
            self.prepare_rebalance(now_ms, 0, out);
            self.maybe_complete_join(now_ms, out);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && m.heartbeat_deadline_ms <= now_ms
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            self.remove_member_and_rebalance(&id, now_ms, out);
        }
    }

    /// KIP-848 upgrade: a consumer-protocol member joins this live classic
    /// group, so the group becomes a consumer group. Its classic members
    /// carry on inside it (see `ConsumerGroup::from_classic`); anything
    /// parked here is told to rejoin (REBALANCE_IN_PROGRESS), and the
    /// classic side is left empty, generation kept, and persisted so, so
    /// that a restart does not bring the classic membership back.
    /// `Err` (GROUP_ID_NOT_FOUND, as Kafka) if the group can't be converted:
    /// not the consumer protocol type, member metadata that doesn't parse,
    /// or more members than a consumer group may have.
    pub fn upgrade_to_consumer(
        &mut self,
        topics: &TopicCounts,
        members_max: usize,
        now_ms: i64,
        out: &mut Outbox<W>,
    ) -> Result<(), String> {
        if self.protocol_type.as_deref() != Some(CLASSIC_PROTOCOL_TYPE) {
            return Err(format!(
                "group {} uses protocol type {:?}, not the consumer protocol",
                self.id, self.protocol_type
            ));
        }
        if self.members.len() > members_max {
            return Err(format!("group {} has too many members to convert", self.id));
        }
        let mut seeds = Vec::with_capacity(self.members.len());
        for m in self.members.values() {
            let metadata = match &self.protocol_name {
                Some(name) => m.metadata_for(name),
                None => m
                    .protocols
                    .first()
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
            };
            let (Ok(subscription), Ok(assigned)) = (
                records::decode_classic_subscription(&metadata),
                records::decode_consumer_assignment(&m.assignment),
            ) else {
                return Err(format!(
                    "member {} of group {} has malformed consumer protocol metadata",
                    m.member_id, self.id
                ));
            };
            seeds.push(ClassicSeed {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocols: m.protocols.clone(),
                subscription,
                assigned,
            });
        }
        self.drain_waiters(ErrorCode::RebalanceInProgress, out);
        self.consumer = Some(ConsumerGroup::from_classic(
            self.generation,
            seeds,
            topics,
            now_ms,
        ));
        self.members.clear();
        self.pending.clear();
        self.static_ids.clear();
        self.protocol_name = None;
        self.leader = None;
        self.join_deadline_ms = None;
        self.sync_deadline_ms = None;
        self.initial_delay_end_max_ms = None;
        self.set_state(GroupState::Empty, now_ms);
        self.dirty = true;
        Ok(())
    }

    /// KIP-848 downgrade: once only classic members are left in the consumer
    /// group (the last consumer-protocol member left or expired), it becomes
    /// a classic group again. The members keep their ids and get their
    /// target assignments; the generation is the group epoch, and a
    /// rebalance starts at once so they rejoin the classic way (Kafka's
    /// ClassicGroup.fromConsumerGroup followed by prepareRebalance).
    pub fn maybe_downgrade(&mut self, now_ms: i64, out: &mut Outbox<W>) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        if !consumer.only_classic_members() {
            return;
        }
        let generation = consumer.group_epoch();
        let members = consumer.classic_members_for_downgrade();
        self.consumer = None;
        self.members.clear();
        self.static_ids.clear();
        self.pending.clear();
        self.generation = generation;
        self.protocol_type = Some(CLASSIC_PROTOCOL_TYPE.to_string());
        self.leader = None;
        for (m, target) in members {
            let Some(classic) = m.classic else { continue };
            if let Some(instance) = &m.instance_id {
                self.static_ids
                    .insert(instance.clone(), m.member_id.clone());
            }
            if self.leader.is_none() {
                self.leader = Some(m.member_id.clone());
            }
            self.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: classic.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: CLASSIC_PROTOCOL_TYPE.to_string(),
                    protocols: classic.protocols,
                    assignment: records::consumer_assignment(&target),
                    join_waiter: None,
                    sync_waiter: None,
                    synced: true,
                    heartbeat_deadline_ms: now_ms
                        .saturating_add(i64::from(classic.session_timeout_ms)),
                },
            );
        }
        self.protocol_name = self.select_protocol();
        self.set_state(GroupState::Stable, now_ms);
        self.dirty = true;
        tracing::info!(group = %self.id, generation, "consumer group downgraded to a classic group");
        self.prepare_rebalance(now_ms, 0, out);
    }

    /// Abandons every parked request (the group is being deleted or the broker stops).
    pub fn drain_waiters(&mut self, code: ErrorCode, out: &mut Outbox<W>) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                out.push((w, Reply::Join(JoinReply::error(code, &m.member_id))));
            }
            if let Some(w) = m.sync_waiter.take() {
                out.push((w, Reply::Sync(SyncReply::error(code))));
            }
        }
    }
}

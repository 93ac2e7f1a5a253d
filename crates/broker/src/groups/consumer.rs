//! One group of the consumer rebalance protocol (KIP-848) as a sans-I/O state machine.
//!
//! Members talk to the coordinator only through ConsumerGroupHeartbeat: the
//! coordinator owns the assignment (server-side assignors), and members
//! converge on it one heartbeat at a time. Three epochs drive everything:
//!
//! - the **group epoch** goes up whenever membership, a subscription, or the
//!   partition count of a subscribed topic changes;
//! - the **assignment epoch** is the group epoch the current target
//!   assignment was computed for (computed at the next heartbeat after a bump);
//! - each **member epoch** says which target the member has reached.
//!
//! Reconciliation is incremental and never gives a partition to two members:
//! a member losing partitions first gets an assignment without them and keeps
//! its epoch until it reports (in `topic_partitions`) that it let them go;
//! a member gaining partitions gets only those nobody else still holds
//! (assigned or pending revocation), the rest arrive at a later heartbeat
//! once released. A member that does not revoke within its rebalance timeout
//! is removed, as is one that misses its session timeout.
//!
//! Topics are named, not by id, in here: the shell translates topic ids on
//! the wire and passes a snapshot of topic partition counts ([`TopicCounts`]).
//! Nothing here sleeps, reads a clock or does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use weir_protocol::error_code::ErrorCode;

use super::group::{GroupLimits, JoinReply, JoinRequest, SyncReply, SyncRequest};
use super::records::{self, ClassicSubscription};

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;
/// Partition counts of the topics that exist, by name.
pub type TopicCounts = BTreeMap<String, i32>;

/// Member epoch of a heartbeat that leaves the group.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member leaving temporarily (it keeps its
/// partitions until its session times out or it comes back).
pub const STATIC_LEAVE_EPOCH: i32 = -2;
/// Server-side assignors, Kafka's names. The first is the default.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];
/// Longest subscription regex accepted (its matcher is linear in both lengths).
pub const REGEX_CHARS_MAX: usize = 1024;
/// Topics a member may name in its subscription.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// Broker-wide settings of consumer groups.
#[derive(Debug, Clone)]
pub struct ConsumerLimits {
    /// Kafka's `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// Kafka's `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// Kafka's `group.consumer.max.size`.
    pub members_max: usize,
}

impl Default for ConsumerLimits {
    fn default() -> Self {
        ConsumerLimits {
            heartbeat_interval_ms: 5_000,
            session_timeout_ms: 45_000,
            members_max: 10_000,
        }
    }
}

/// A ConsumerGroupHeartbeat request with topic ids already turned into names.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged since the last heartbeat.
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// What the member owns now; `None`: unchanged since the last heartbeat.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// v0 lets the coordinator pick the member id; v1+ (KIP-1082) requires
    /// the client to send its own.
    pub client_generates_member_id: bool,
    /// The id to use when the coordinator must pick one (made by the shell).
    pub fresh_member_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatReply {
    pub error: ErrorCode,
    pub error_message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Present only when the member must (re)learn its assignment.
    pub assignment: Option<Assignment>,
}

impl Default for HeartbeatReply {
    fn default() -> Self {
        HeartbeatReply {
            error: ErrorCode::None,
            error_message: None,
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

impl HeartbeatReply {
    fn error(error: ErrorCode, message: impl Into<String>) -> HeartbeatReply {
        HeartbeatReply {
            error,
            error_message: Some(message.into()),
            ..Default::default()
        }
    }
}

/// Where a member is in reconciling towards its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// At the target assignment epoch with everything it should have.
    Stable,
    /// Must give partitions up before it can move on.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions others still hold.
    UnreleasedPartitions,
}

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    /// A member whose heartbeat response was lost retries with this epoch.
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// Partitions the member may consume now.
    pub assigned: Assignment,
    /// Partitions taken away that the member has not yet confirmed releasing.
    pub pending_revocation: Assignment,
    session_deadline_ms: i64,
    /// Set while the member owes a revocation.
    revocation_deadline_ms: Option<i64>,
    /// Set for a member that speaks the classic protocol (JoinGroup,
    /// SyncGroup, Heartbeat) inside this group: one that was in the classic
    /// group when it was converted, or joined by JoinGroup since.
    pub classic: Option<ClassicMeta>,
}

impl ConsumerMember {
    /// A member that has just joined: epoch 0, nothing subscribed or assigned yet.
    fn new(member_id: String, instance_id: Option<String>) -> ConsumerMember {
        ConsumerMember {
            member_id,
            instance_id,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            member_epoch: 0,
            previous_member_epoch: 0,
            state: MemberState::Stable,
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            rebalance_timeout_ms: 0,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: 0,
            revocation_deadline_ms: None,
            classic: None,
        }
    }
}

/// What a classic-protocol member of a consumer group brings besides what
/// every member has (Kafka's ClassicMemberMetadata).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassicMeta {
    /// Its session runs on its own timeout, not the group's.
    pub session_timeout_ms: i32,
    /// (protocol name, metadata) from its last JoinGroup, in its order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// Told to rejoin (or just joined): it is removed if it has not sent
    /// its JoinGroup (or SyncGroup) within its rebalance timeout by then
    /// (Kafka's consumer-group join and sync timeouts for classic members).
    pub rejoin_deadline_ms: Option<i64>,
    pub sync_deadline_ms: Option<i64>,
}

/// A classic group's member as the consumer group takes it over on upgrade.
#[derive(Debug, Clone)]
pub struct ClassicSeed {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub subscription: ClassicSubscription,
    /// What the classic group last assigned it (empty if it never synced).
    pub assigned: Assignment,
}

/// The group's state as Kafka names it for consumer groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, ConsumerMember>,
    /// Target assignment by member id, computed at `assignment_epoch`.
    target: BTreeMap<String, Assignment>,
    /// group.instance.id → member id.
    static_ids: HashMap<String, String>,
    /// Partition counts of the subscribed topics when the group epoch was last
    /// set; a change (topic created, deleted, grown) bumps the group epoch.
    subscribed_counts: TopicCounts,
    /// The assignor the current target was computed with.
    assignor: String,
}

impl ConsumerGroup {
    pub fn new() -> ConsumerGroup {
        ConsumerGroup {
            assignor: default_assignor().to_string(),
            ..Default::default()
        }
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }
    pub fn assignor(&self) -> &str {
        &self.assignor
    }
    pub fn members(&self) -> impl Iterator<Item = &ConsumerMember> {
        self.members.values()
    }
    pub fn member(&self, member_id: &str) -> Option<&ConsumerMember> {
        self.members.get(member_id)
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn target_of(&self, member_id: &str) -> Assignment {
        self.target.get(member_id).cloned().unwrap_or_default()
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.state != MemberState::Stable || m.member_epoch != self.assignment_epoch)
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// The earliest moment [`ConsumerGroup::tick`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| {
                let classic = m.classic.as_ref();
                std::iter::once(m.session_deadline_ms)
                    .chain(m.revocation_deadline_ms)
                    .chain(classic.and_then(|c| c.rejoin_deadline_ms))
                    .chain(classic.and_then(|c| c.sync_deadline_ms))
            })
            .min()
    }

    /// Removes members whose session expired or who did not revoke in time,
    /// and classic members that did not rejoin or sync in time.
    /// Returns the removed member ids.
    pub fn tick(&mut self, now_ms: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                let classic = m.classic.as_ref();
                m.session_deadline_ms <= now_ms
                    || m.revocation_deadline_ms.is_some_and(|d| d <= now_ms)
                    || classic
                        .and_then(|c| c.rejoin_deadline_ms)
                        .is_some_and(|d| d <= now_ms)
                    || classic
                        .and_then(|c| c.sync_deadline_ms)
                        .is_some_and(|d| d <= now_ms)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id);
        }
        gone
    }

    /// OffsetCommit/OffsetFetch from a member: its epoch must be current. The
    /// previous epoch is accepted too, because a commit sent just before a
    /// heartbeat response bumped the epoch is still from the partition's owner
    /// (Kafka 4.0 answers STALE_MEMBER_EPOCH there and the client retries).
    pub fn check_member_epoch(&self, member_id: &str, member_epoch: i32) -> ErrorCode {
        // Admin tools and assign() consumers commit with a negative epoch; an
        // empty group takes that whatever the member id (librdkafka's
        // consumer-protocol client sends the id it generated), as Kafka does.
        if member_epoch < 0 && self.members.is_empty() {
            return ErrorCode::None;
        }
        let Some(m) = self.members.get(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if m.classic.is_some() {
            // A classic member inside a consumer group commits with its
            // generation, which is its member epoch, and nothing else.
            return if member_epoch == m.member_epoch {
                ErrorCode::None
            } else {
                ErrorCode::IllegalGeneration
            };
        }
        if member_epoch == m.member_epoch
            || (member_epoch == m.previous_member_epoch && member_epoch >= 0)
        {
            ErrorCode::None
        } else {
            ErrorCode::StaleMemberEpoch
        }
    }

    fn remove_member(&mut self, member_id: &str) {
        if let Some(m) = self.members.remove(member_id) {
            if let Some(instance) = &m.instance_id
                && self.static_ids.get(instance).map(String::as_str) == Some(member_id)
            {
                self.static_ids.remove(instance);
            }
            self.target.remove(member_id);
            self.bump_group_epoch();
        }
    }

    /// After a member's change: bumps the group epoch once if `bump` or the
    /// subscribed topics' partition counts changed, and recomputes the target
    /// assignment when the epoch is ahead of it.
    fn refresh_target(&mut self, topics: &TopicCounts, mut bump: bool) {
        let counts = self.subscribed_topic_counts(topics);
        if counts != self.subscribed_counts {
            self.subscribed_counts = counts;
            bump = true;
        }
        if bump {
            self.bump_group_epoch();
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target(topics);
        }
    }

    fn bump_group_epoch(&mut self) {
        self.group_epoch = self.group_epoch.saturating_add(1);
    }

    /// One ConsumerGroupHeartbeat.
    pub fn heartbeat(
        &mut self,
        req: HeartbeatRequest,
        topics: &TopicCounts,
        limits: &ConsumerLimits,
        now_ms: i64,
    ) -> HeartbeatReply {
        if let Err(reply) = validate(&req) {
            return reply;
        }
        if req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(&req, now_ms);
        }
        let (member_id, mut bump) = match self.admit(&req, limits) {
            Ok(admitted) => admitted,
            Err(reply) => return reply,
        };
        let full_request = req.member_epoch == 0
            || (req.rebalance_timeout_ms != -1
                && req.subscribed_topic_names.is_some()
                && req.owned.is_some());
        let Some(member) = self.members.get_mut(&member_id) else {
            return HeartbeatReply::error(ErrorCode::UnknownMemberId, "member vanished");
        };
        let before = (member.member_epoch, member.assigned.clone());
        if let Some(mut names) = req.subscribed_topic_names {
            names.sort();
            names.dedup();
            if names != member.subscribed_topic_names {
                member.subscribed_topic_names = names;
                bump = true;
            }
        }
        if let Some(regex) = req.subscribed_topic_regex {
            let regex = (!regex.is_empty()).then_some(regex);
            if regex != member.subscribed_topic_regex {
                member.subscribed_topic_regex = regex;
                bump = true;
            }
        }
        if let Some(assignor) = req.server_assignor
            && member.server_assignor.as_ref() != Some(&assignor)
        {
            member.server_assignor = Some(assignor);
            bump = true;
        }
        if req.rebalance_timeout_ms >= 0 {
            member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if req.rack_id.is_some() {
            member.rack_id = req.rack_id;
        }
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_deadline_ms = now_ms.saturating_add(i64::from(limits.session_timeout_ms));
        // One heartbeat moves the group epoch at most once.
        self.refresh_target(topics, bump);
        self.reconcile(&member_id, req.owned.as_ref(), now_ms);
        let Some(member) = self.members.get(&member_id) else {
            return HeartbeatReply::error(ErrorCode::UnknownMemberId, "member vanished");
        };
        let changed = before.0 != member.member_epoch || before.1 != member.assigned;
        HeartbeatReply {
            error: ErrorCode::None,
            error_message: None,
            member_id: Some(member_id.clone()),
            member_epoch: member.member_epoch,
            heartbeat_interval_ms: limits.heartbeat_interval_ms,
            assignment: (full_request || changed).then(|| member.assigned.clone()),
        }
    }

    /// Finds or creates the member a (non-leaving) heartbeat is from, checking
    /// its epoch and instance id. Returns its id and whether it is new.
    fn admit(
        &mut self,
        req: &HeartbeatRequest,
        limits: &ConsumerLimits,
    ) -> Result<(String, bool), HeartbeatReply> {
        if req.member_epoch != 0 {
            let Some(m) = self.members.get(&req.member_id) else {
                return Err(HeartbeatReply::error(
                    ErrorCode::UnknownMemberId,
                    "unknown member id",
                ));
            };
            if let Some(instance) = &req.instance_id
                && self.static_ids.get(instance) != Some(&req.member_id)
            {
                return Err(HeartbeatReply::error(
                    ErrorCode::FencedInstanceId,
                    "instance id belongs to another member",
                ));
            }
            let owned_subset = req
                .owned
                .as_ref()
                .is_some_and(|o| is_subset(o, &m.assigned));
            let fenced = req.member_epoch > m.member_epoch
                || (req.member_epoch < m.member_epoch
                    && !(req.member_epoch == m.previous_member_epoch && owned_subset));
            if fenced {
                return Err(HeartbeatReply::error(
                    ErrorCode::FencedMemberEpoch,
                    format!(
                        "member epoch {} is not the current {}",
                        req.member_epoch, m.member_epoch
                    ),
                ));
            }
            return Ok((req.member_id.clone(), false));
        }
        let member_id = if req.member_id.is_empty() && !req.client_generates_member_id {
            req.fresh_member_id.clone()
        } else {
            req.member_id.clone()
        };
        // A static member coming back takes over its predecessor's place
        // (epoch and assignment), so its partitions don't move.
        let mut inherited: Option<ConsumerMember> = None;
        if let Some(instance) = &req.instance_id
            && let Some(existing) = self.static_ids.get(instance).cloned()
            && existing != member_id
        {
            let still_active = self
                .members
                .get(&existing)
                .is_some_and(|m| m.member_epoch != STATIC_LEAVE_EPOCH);
            if still_active {
                return Err(HeartbeatReply::error(
                    ErrorCode::UnreleasedInstanceId,
                    format!("instance {instance} is still held by member {existing}"),
                ));
            }
            inherited = self.members.remove(&existing);
            if let Some(target) = self.target.remove(&existing) {
                self.target.insert(member_id.clone(), target);
            }
        }
        let mut created = false;
        match self.members.get_mut(&member_id) {
            Some(m) => {
                // Rejoining with epoch 0: the member lost its state and owns
                // nothing, so whatever it held is free again.
                m.member_epoch = 0;
                m.previous_member_epoch = 0;
                m.state = MemberState::Stable;
                m.assigned.clear();
                m.pending_revocation.clear();
                m.revocation_deadline_ms = None;
            }
            None => {
                if inherited.is_none() && self.members.len() >= limits.members_max {
                    return Err(HeartbeatReply::error(
                        ErrorCode::GroupMaxSizeReached,
                        "the group is full",
                    ));
                }
                let mut member = ConsumerMember::new(member_id.clone(), req.instance_id.clone());
                match inherited {
                    Some(old) => {
                        member.member_epoch = old.previous_member_epoch.max(0);
                        member.previous_member_epoch = old.previous_member_epoch.max(0);
                        member.state = old.state;
                        member.assigned = old.assigned;
                        member.pending_revocation = old.pending_revocation;
                        member.subscribed_topic_names = old.subscribed_topic_names;
                        member.subscribed_topic_regex = old.subscribed_topic_regex;
                        member.server_assignor = old.server_assignor;
                    }
                    None => created = true,
                }
                if let Some(instance) = &req.instance_id {
                    self.static_ids.insert(instance.clone(), member_id.clone());
                }
                self.members.insert(member_id.clone(), member);
            }
        }
        Ok((member_id, created))
    }

    fn leave(&mut self, req: &HeartbeatRequest, now_ms: i64) -> HeartbeatReply {
        let member_id = match &req.instance_id {
            Some(instance) => match self.static_ids.get(instance) {
                None => {
                    return HeartbeatReply::error(
                        ErrorCode::UnknownMemberId,
                        "unknown instance id",
                    );
                }
                Some(current) if current != &req.member_id => {
                    return HeartbeatReply::error(
                        ErrorCode::FencedInstanceId,
                        "instance id belongs to another member",
                    );
                }
                Some(current) => current.clone(),
            },
            None => req.member_id.clone(),
        };
        if !self.members.contains_key(&member_id) {
            return HeartbeatReply::error(ErrorCode::UnknownMemberId, "unknown member id");
        }
        if req.member_epoch == STATIC_LEAVE_EPOCH {
            // Kept (with its partitions) until the session runs out or the
            // instance comes back; the member's previous epoch remembers where it was.
            if let Some(m) = self.members.get_mut(&member_id) {
                if m.member_epoch != STATIC_LEAVE_EPOCH {
                    m.previous_member_epoch = m.member_epoch;
                }
                m.member_epoch = STATIC_LEAVE_EPOCH;
                m.revocation_deadline_ms = None;
                let _ = now_ms;
            }
        } else {
            self.remove_member(&member_id);
        }
        HeartbeatReply {
            error: ErrorCode::None,
            member_id: Some(member_id),
            member_epoch: req.member_epoch,
            ..Default::default()
        }
    }

    /// The topics a member subscribes to that exist now.
    fn resolved_subscription(member: &ConsumerMember, topics: &TopicCounts) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = member
            .subscribed_topic_names
            .iter()
            .filter(|t| topics.contains_key(*t))
            .cloned()
            .collect();
        if let Some(pattern) = member
            .subscribed_topic_regex
            .as_deref()
            .and_then(|r| Regex::parse(r).ok())
        {
            // Internal topics are never matched by a pattern (Kafka's rule).
            out.extend(
                topics
                    .keys()
                    .filter(|t| !t.starts_with("__") && pattern.is_full_match(t))
                    .cloned(),
            );
        }
        out
    }

    fn subscribed_topic_counts(&self, topics: &TopicCounts) -> TopicCounts {
        let mut counts = TopicCounts::new();
        for m in self.members.values() {
            for t in Self::resolved_subscription(m, topics) {
                if let Some(n) = topics.get(&t) {
                    counts.insert(t, *n);
                }
            }
        }
        counts
    }

    /// The assignor most members asked for, or the default.
    fn preferred_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        votes
            .iter()
            .find(|(_, n)| **n == best && best > 0)
            .map_or_else(|| default_assignor().to_string(), |(a, _)| a.to_string())
    }

    fn compute_target(&mut self, topics: &TopicCounts) {
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.member_id.clone(), Self::resolved_subscription(m, topics)))
            .collect();
        self.assignor = self.preferred_assignor();
        self.target = match self.assignor.as_str() {
            "range" => assign_range(&subscriptions, topics),
            _ => assign_uniform(&subscriptions, topics, &self.target),
        };
        self.assignment_epoch = self.group_epoch;
    }

    /// Is `(topic, partition)` held by any member other than `except`?
    fn held_by_other(&self, except: &str, topic: &str, partition: i32) -> bool {
        self.members.values().any(|m| {
            m.member_id != except
                && (m
                    .assigned
                    .get(topic)
                    .is_some_and(|s| s.contains(&partition))
                    || m.pending_revocation
                        .get(topic)
                        .is_some_and(|s| s.contains(&partition)))
        })
    }

    /// Moves one member towards its target (Kafka's CurrentAssignmentBuilder).
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: i64) {
        let Some(member) = self.members.get(member_id) else {
            return;
        };
        let target_epoch = self.assignment_epoch;
        match member.state {
            MemberState::Stable if member.member_epoch == target_epoch => return,
            MemberState::UnrevokedPartitions => {
                let still_owned = owned.is_none_or(|o| intersects(o, &member.pending_revocation));
                if still_owned {
                    return;
                }
            }
            _ => {}
        }
        let target = self.target_of(member_id);
        let current = member.assigned.clone();
        let mut kept = Assignment::new();
        let mut revoking = Assignment::new();
        let mut gaining = Assignment::new();
        let mut unreleased = false;
        let topics: BTreeSet<&String> = target.keys().chain(current.keys()).collect();
        for topic in topics {
            let want = target.get(topic).cloned().unwrap_or_default();
            let have = current.get(topic).cloned().unwrap_or_default();
            let keep: BTreeSet<i32> = have.intersection(&want).copied().collect();
            let drop: BTreeSet<i32> = have.difference(&want).copied().collect();
            let mut add = BTreeSet::new();
            for p in want.difference(&have) {
                if self.held_by_other(member_id, topic, *p) {
                    unreleased = true;
                } else {
                    add.insert(*p);
                }
            }
            if !keep.is_empty() {
                kept.insert(topic.clone(), keep);
            }
            if !drop.is_empty() {
                revoking.insert(topic.clone(), drop);
            }
            if !add.is_empty() {
                gaining.insert(topic.clone(), add);
            }
        }
        let owns_revoked = owned.is_none_or(|o| intersects(o, &revoking));
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        let epoch_before = member.member_epoch;
        if !revoking.is_empty() && owns_revoked {
            member.state = MemberState::UnrevokedPartitions;
            member.assigned = kept;
            member.pending_revocation = revoking;
            if member.revocation_deadline_ms.is_none() {
                member.revocation_deadline_ms =
                    Some(now_ms.saturating_add(i64::from(member.rebalance_timeout_ms.max(0))));
            }
            return;
        }
        for (topic, parts) in gaining {
            kept.entry(topic).or_default().extend(parts);
        }
        member.assigned = kept;
        member.pending_revocation.clear();
        member.revocation_deadline_ms = None;
        member.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        if epoch_before != target_epoch {
            member.previous_member_epoch = epoch_before;
            member.member_epoch = target_epoch;
        }
    }
}

/// The protocol type every classic member of a consumer group must speak.
pub const CLASSIC_PROTOCOL_TYPE: &str = "consumer";

/// Classic-protocol members inside a consumer group (KIP-848 online
/// migration). They keep speaking JoinGroup/SyncGroup/Heartbeat; the group
/// answers them from its own state: a JoinGroup is answered at once with the
/// member's epoch as the generation and no leader (nobody computes an
/// assignment on the client side), SyncGroup returns the member's current
/// assignment, and Heartbeat answers REBALANCE_IN_PROGRESS whenever the
/// member has to rejoin to move towards its target.
impl ConsumerGroup {
    /// A consumer group taking over a live classic group (the upgrade): the
    /// group epoch is the classic generation and every member starts Stable
    /// at that epoch with what it was last assigned, which is also its target
    /// until the next group epoch.
    pub fn from_classic(
        generation: i32,
        seeds: Vec<ClassicSeed>,
        topics: &TopicCounts,
        now_ms: i64,
    ) -> ConsumerGroup {
        let mut group = ConsumerGroup::new();
        group.group_epoch = generation;
        group.assignment_epoch = generation;
        for seed in seeds {
            if let Some(instance) = &seed.instance_id {
                group
                    .static_ids
                    .insert(instance.clone(), seed.member_id.clone());
            }
            let mut names = seed.subscription.topics;
            names.sort();
            names.dedup();
            group
                .target
                .insert(seed.member_id.clone(), seed.assigned.clone());
            group.members.insert(
                seed.member_id.clone(),
                ConsumerMember {
                    member_id: seed.member_id,
                    instance_id: seed.instance_id,
                    rack_id: seed.subscription.rack_id,
                    client_id: seed.client_id,
                    client_host: seed.client_host,
                    member_epoch: generation,
                    previous_member_epoch: generation,
                    state: MemberState::Stable,
                    subscribed_topic_names: names,
                    subscribed_topic_regex: None,
                    server_assignor: None,
                    rebalance_timeout_ms: seed.rebalance_timeout_ms,
                    assigned: seed.assigned,
                    pending_revocation: Assignment::new(),
                    session_deadline_ms: now_ms.saturating_add(i64::from(seed.session_timeout_ms)),
                    revocation_deadline_ms: None,
                    classic: Some(ClassicMeta {
                        session_timeout_ms: seed.session_timeout_ms,
                        protocols: seed.protocols,
                        rejoin_deadline_ms: None,
                        sync_deadline_ms: None,
                    }),
                },
            );
        }
        group.subscribed_counts = group.subscribed_topic_counts(topics);
        group
    }

    /// Only classic-protocol members are left (and at least one): the group
    /// goes back to being a classic group (the downgrade).
    pub fn only_classic_members(&self) -> bool {
        !self.members.is_empty() && self.members.values().all(|m| m.classic.is_some())
    }

    /// Would a classic member with these protocols fit? (Kafka's
    /// supportsClassicProtocols: the consumer protocol type, and a protocol
    /// every other classic member supports.)
    fn supports_classic(
        &self,
        member_id: &str,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if protocol_type != CLASSIC_PROTOCOL_TYPE || protocols.is_empty() {
            return false;
        }
        let others: Vec<&ClassicMeta> = self
            .members
            .values()
            .filter(|m| m.member_id != member_id)
            .filter_map(|m| m.classic.as_ref())
            .collect();
        protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|c| c.protocols.iter().any(|(p, _)| p == name))
        })
    }

    /// Finds a classic member by id, checking its instance id (Kafka's
    /// validateConsumerGroupMember plus throwIfMemberDoesNotUseClassicProtocol).
    fn classic_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&ConsumerMember, ErrorCode> {
        let id = match instance_id {
            Some(instance) => match self.static_ids.get(instance) {
                None => return Err(ErrorCode::UnknownMemberId),
                Some(current) if current != member_id => return Err(ErrorCode::FencedInstanceId),
                Some(current) => current.as_str(),
            },
            None => member_id,
        };
        match self.members.get(id) {
            Some(m) if m.classic.is_some() => Ok(m),
            _ => Err(ErrorCode::UnknownMemberId),
        }
    }

    /// The partitions of its target the member lacks are still held by
    /// others, so rejoining now would not get it anything.
    fn waiting_on_unreleased(&self, member: &ConsumerMember) -> bool {
        let target = self.target_of(&member.member_id);
        target.iter().any(|(topic, parts)| {
            parts.iter().any(|p| {
                !member.assigned.get(topic).is_some_and(|a| a.contains(p))
                    && self.held_by_other(&member.member_id, topic, *p)
            })
        })
    }

    /// JoinGroup from a classic member. Answered at once: the member's
    /// subscription comes from its metadata, the group epoch moves if that
    /// changed, and the member is reconciled with the partitions it says it
    /// still owns.
    pub fn classic_join(
        &mut self,
        req: JoinRequest,
        topics: &TopicCounts,
        limits: &ConsumerLimits,
        classic_limits: &GroupLimits,
        now_ms: i64,
    ) -> JoinReply {
        let fail = |code: ErrorCode, id: &str| JoinReply::error(code, id);
        if req.session_timeout_ms < classic_limits.session_timeout_ms_min
            || req.session_timeout_ms > classic_limits.session_timeout_ms_max
        {
            return fail(ErrorCode::InvalidSessionTimeout, &req.member_id);
        }
        let unknown = req.member_id.is_empty();
        let member_id = if unknown {
            req.fresh_member_id.clone()
        } else {
            req.member_id.clone()
        };
        let is_new = !self.members.contains_key(&member_id);
        let replaced_static = req
            .instance_id
            .as_ref()
            .and_then(|i| self.static_ids.get(i))
            .filter(|current| **current != member_id)
            .cloned();
        if is_new && replaced_static.is_none() && self.members.len() >= limits.members_max {
            return fail(ErrorCode::GroupMaxSizeReached, &member_id);
        }
        if !self.supports_classic(&member_id, &req.protocol_type, &req.protocols) {
            return fail(ErrorCode::InconsistentGroupProtocol, &member_id);
        }
        if unknown && req.instance_id.is_none() && req.require_known_member_id {
            // KIP-394: the member comes back with this id. Nothing is kept
            // for it meanwhile; any id is admitted on the next JoinGroup.
            return fail(ErrorCode::MemberIdRequired, &member_id);
        }
        if let Some(existing) = &replaced_static {
            if !unknown {
                return fail(ErrorCode::FencedInstanceId, &member_id);
            }
            // A static member's new process takes over the old one's place.
            if let Some(mut old) = self.members.remove(existing) {
                old.member_id = member_id.clone();
                self.members.insert(member_id.clone(), old);
            }
            if let Some(target) = self.target.remove(existing) {
                self.target.insert(member_id.clone(), target);
            }
        }
        let Some((_, metadata)) = req.protocols.first() else {
            return fail(ErrorCode::InconsistentGroupProtocol, &member_id);
        };
        let Ok(subscription) = records::decode_classic_subscription(metadata) else {
            return fail(ErrorCode::InconsistentGroupProtocol, &member_id);
        };
        if let Some(instance) = &req.instance_id {
            self.static_ids.insert(instance.clone(), member_id.clone());
        }
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| ConsumerMember::new(member_id.clone(), req.instance_id.clone()));
        let mut bump = is_new && replaced_static.is_none();
        let mut names = subscription.topics;
        names.sort();
        names.dedup();
        if names != member.subscribed_topic_names {
            member.subscribed_topic_names = names;
            bump = true;
        }
        if subscription.rack_id.is_some() {
            member.rack_id = subscription.rack_id;
        }
        if req.rebalance_timeout_ms >= 0 {
            member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        member.instance_id = req.instance_id.clone();
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_deadline_ms = now_ms.saturating_add(i64::from(req.session_timeout_ms));
        let protocol_name = req.protocols.first().map(|(n, _)| n.clone());
        member.classic = Some(ClassicMeta {
            session_timeout_ms: req.session_timeout_ms,
            protocols: req.protocols,
            rejoin_deadline_ms: None,
            sync_deadline_ms: Some(
                now_ms.saturating_add(i64::from(member.rebalance_timeout_ms.max(0))),
            ),
        });
        self.refresh_target(topics, bump);
        self.reconcile(&member_id, Some(&subscription.owned), now_ms);
        let generation = self.members.get(&member_id).map_or(-1, |m| m.member_epoch);
        JoinReply {
            error: ErrorCode::None,
            generation,
            protocol_type: Some(CLASSIC_PROTOCOL_TYPE.to_string()),
            protocol_name,
            // No leader: the coordinator has assigned already.
            leader: String::new(),
            member_id,
            members: Vec::new(),
            skip_assignment: false,
        }
    }

    /// SyncGroup from a classic member: its current assignment.
    pub fn classic_sync(&mut self, req: &SyncRequest, now_ms: i64) -> SyncReply {
        let member = match self.classic_member(&req.member_id, req.instance_id.as_deref()) {
            Ok(m) => m,
            Err(code) => return SyncReply::error(code),
        };
        if req.generation != member.member_epoch {
            return SyncReply::error(ErrorCode::IllegalGeneration);
        }
        let chosen = member
            .classic
            .as_ref()
            .and_then(|c| c.protocols.first())
            .map(|(n, _)| n.as_str());
        let type_mismatch = req
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != CLASSIC_PROTOCOL_TYPE);
        let name_mismatch = req
            .protocol_name
            .as_deref()
            .is_some_and(|n| Some(n) != chosen);
        if type_mismatch || name_mismatch {
            return SyncReply::error(ErrorCode::InconsistentGroupProtocol);
        }
        // A new group epoch since the join: rejoin first (unless the member
        // still owes a revocation, which its next join settles).
        if self.group_epoch > member.member_epoch
            && member.state != MemberState::UnrevokedPartitions
        {
            return SyncReply::error(ErrorCode::RebalanceInProgress);
        }
        let id = member.member_id.clone();
        let Some(member) = self.members.get_mut(&id) else {
            return SyncReply::error(ErrorCode::UnknownMemberId);
        };
        let session_ms = member.classic.as_ref().map_or(0, |c| c.session_timeout_ms);
        member.session_deadline_ms = now_ms.saturating_add(i64::from(session_ms));
        if let Some(c) = &mut member.classic {
            c.sync_deadline_ms = None;
        }
        SyncReply {
            error: ErrorCode::None,
            protocol_type: req.protocol_type.clone(),
            protocol_name: req.protocol_name.clone(),
            assignment: records::consumer_assignment(&member.assigned),
        }
    }

    /// Heartbeat from a classic member: keeps its session and tells it to
    /// rejoin when the group moved on or it has partitions to give up or to
    /// collect.
    pub fn classic_heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> ErrorCode {
        let member = match self.classic_member(member_id, instance_id) {
            Ok(m) => m,
            Err(code) => return code,
        };
        if generation != member.member_epoch {
            return ErrorCode::IllegalGeneration;
        }
        let rejoin = member.member_epoch < self.group_epoch
            || member.state == MemberState::UnrevokedPartitions
            || (member.state == MemberState::UnreleasedPartitions
                && !self.waiting_on_unreleased(member));
        let id = member.member_id.clone();
        if let Some(member) = self.members.get_mut(&id) {
            let session_ms = member.classic.as_ref().map_or(0, |c| c.session_timeout_ms);
            member.session_deadline_ms = now_ms.saturating_add(i64::from(session_ms));
            let rebalance_ms = i64::from(member.rebalance_timeout_ms.max(0));
            if rejoin && let Some(c) = &mut member.classic {
                c.rejoin_deadline_ms
                    .get_or_insert(now_ms.saturating_add(rebalance_ms));
            }
        }
        if rejoin {
            ErrorCode::RebalanceInProgress
        } else {
            ErrorCode::None
        }
    }

    /// LeaveGroup for one classic member.
    pub fn classic_leave(&mut self, member_id: &str, instance_id: Option<&str>) -> ErrorCode {
        // LeaveGroup by instance id alone (admin tools) names no member id.
        let lookup_id = match (instance_id, member_id.is_empty()) {
            (Some(instance), true) => self.static_ids.get(instance).cloned().unwrap_or_default(),
            _ => member_id.to_string(),
        };
        match self.classic_member(&lookup_id, instance_id) {
            Ok(m) => {
                let id = m.member_id.clone();
                self.remove_member(&id);
                ErrorCode::None
            }
            Err(code) => code,
        }
    }

    /// The members as a classic group takes them back on downgrade: each
    /// with its classic protocols and its target assignment.
    pub fn classic_members_for_downgrade(&self) -> Vec<(ConsumerMember, Assignment)> {
        self.members
            .values()
            .map(|m| (m.clone(), self.target_of(&m.member_id)))
            .collect()
    }
}

fn default_assignor() -> &'static str {
    ASSIGNORS.first().copied().unwrap_or("uniform")
}

fn is_subset(small: &Assignment, big: &Assignment) -> bool {
    small
        .iter()
        .all(|(t, ps)| ps.is_empty() || big.get(t).is_some_and(|b| ps.is_subset(b)))
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|o| !ps.is_disjoint(o)))
}

/// Kafka's request checks (INVALID_REQUEST and friends) before any state is touched.
fn validate(req: &HeartbeatRequest) -> Result<(), HeartbeatReply> {
    let invalid = |msg: &str| Err(HeartbeatReply::error(ErrorCode::InvalidRequest, msg));
    if req.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if req.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    if req.client_generates_member_id && req.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    match req.member_epoch {
        0 => {
            if req.rebalance_timeout_ms == -1 {
                return invalid("RebalanceTimeoutMs must be provided in first request.");
            }
            if req
                .owned
                .as_ref()
                .is_some_and(|o| o.values().any(|p| !p.is_empty()))
            {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
        }
        STATIC_LEAVE_EPOCH => {
            if req.instance_id.is_none() {
                return invalid("InstanceId can't be null when leaving with epoch -2.");
            }
        }
        epoch if epoch < STATIC_LEAVE_EPOCH => return invalid("MemberEpoch is invalid."),
        _ => {
            if req.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
        }
    }
    if req
        .subscribed_topic_names
        .as_ref()
        .is_some_and(|n| n.len() > SUBSCRIBED_TOPICS_MAX)
    {
        return invalid("too many subscribed topics");
    }
    if let Some(assignor) = &req.server_assignor
        && !ASSIGNORS.contains(&assignor.as_str())
    {
        return Err(HeartbeatReply::error(
            ErrorCode::UnsupportedAssignor,
            format!(
                "ServerAssignor {assignor} is not supported; supported: {}",
                ASSIGNORS.join(", ")
            ),
        ));
    }
    if let Some(regex) = &req.subscribed_topic_regex
        && !regex.is_empty()
        && let Err(reason) = Regex::parse(regex)
    {
        return Err(HeartbeatReply::error(
            ErrorCode::InvalidRegularExpression,
            reason,
        ));
    }
    Ok(())
}

/// Every partition of the subscribed topics, each to one subscribed member,
/// balanced (loads differ by at most one where subscriptions allow) and
/// sticky: a member keeps what it had in the previous target unless the
/// balance requires moving it.
pub fn assign_uniform(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &TopicCounts,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut load: BTreeMap<&str, usize> = subscriptions.keys().map(|m| (m.as_str(), 0)).collect();
    let eligible = |topic: &str| -> Vec<&str> {
        subscriptions
            .iter()
            .filter(|(_, s)| s.contains(topic))
            .map(|(m, _)| m.as_str())
            .collect()
    };
    for (member, assignment) in previous {
        let Some(subscribed) = subscriptions.get(member) else {
            continue;
        };
        for (topic, parts) in assignment {
            let Some(count) = topics.get(topic) else {
                continue;
            };
            if !subscribed.contains(topic) {
                continue;
            }
            for p in parts.iter().filter(|p| **p < *count) {
                if owner.insert((topic.clone(), *p), member.clone()).is_none()
                    && let Some(l) = load.get_mut(member.as_str())
                {
                    *l += 1;
                }
            }
        }
    }
    // Unowned partitions, the most constrained first, to the least loaded candidate.
    let mut unowned: Vec<(usize, String, i32)> = Vec::new();
    for (topic, count) in topics {
        let candidates = eligible(topic).len();
        if candidates == 0 {
            continue;
        }
        for p in 0..*count {
            if !owner.contains_key(&(topic.clone(), p)) {
                unowned.push((candidates, topic.clone(), p));
            }
        }
    }
    unowned.sort();
    for (_, topic, p) in unowned {
        let best = eligible(&topic)
            .into_iter()
            .min_by_key(|m| (load.get(m).copied().unwrap_or(0), *m));
        if let Some(m) = best {
            owner.insert((topic, p), m.to_string());
            if let Some(l) = load.get_mut(m) {
                *l += 1;
            }
        }
    }
    // Balance: move one partition at a time from a member with at least two
    // more than a candidate. Each move lowers the sum of squared loads, so this ends.
    let moves_max = owner.len().saturating_mul(2).saturating_add(1);
    for _ in 0..moves_max {
        let mut by_load: Vec<(usize, &str)> = load.iter().map(|(m, l)| (*l, *m)).collect();
        by_load.sort();
        let mut moved = None;
        'find: for (low_load, low) in &by_load {
            // The most loaded owner of a partition `low` could take.
            let mut best: Option<(usize, (String, i32))> = None;
            for ((topic, p), from) in owner.iter().rev() {
                let from_load = load.get(from.as_str()).copied().unwrap_or(0);
                if from_load > low_load + 1
                    && subscriptions.get(*low).is_some_and(|s| s.contains(topic))
                    && best.as_ref().is_none_or(|(l, _)| from_load > *l)
                {
                    best = Some((from_load, (topic.clone(), *p)));
                }
            }
            if let Some((_, key)) = best {
                moved = Some((key, low.to_string()));
                break 'find;
            }
        }
        let Some((key, to)) = moved else { break };
        if let Some(from) = owner.insert(key, to.clone()) {
            if let Some(l) = load.get_mut(from.as_str()) {
                *l -= 1;
            }
            if let Some(l) = load.get_mut(to.as_str()) {
                *l += 1;
            }
        }
    }
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for ((topic, p), m) in owner {
        out.entry(m)
            .or_default()
            .entry(topic)
            .or_default()
            .insert(p);
    }
    out
}

/// Per topic, the subscribed members (by member id) get contiguous ranges;
/// the first `partitions % members` get one extra. Members with the same
/// subscriptions thus get the same partition numbers of co-partitioned topics.
pub fn assign_range(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &TopicCounts,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, count) in topics {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, s)| s.contains(topic))
            .map(|(m, _)| m)
            .collect();
        let n = i32::try_from(members.len()).unwrap_or(i32::MAX);
        if n == 0 || *count <= 0 {
            continue;
        }
        let (quota, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in members.into_iter().enumerate() {
            let i = i32::try_from(i).unwrap_or(i32::MAX);
            let take = quota + i32::from(i < extra);
            if take > 0 {
                out.entry(m.clone())
                    .or_default()
                    .insert(topic.clone(), (next..next + take).collect());
            }
            next += take;
        }
    }
    out
}

/// A small regular-expression subset for topic subscriptions, matched
/// against the whole name (as Kafka does): literals, `\`-escapes, `.`,
/// classes `[a-z_]` / `[^...]`, `\d \w \s`, quantifiers `* + ?`, and
/// top-level `|`. A leading `^` and trailing `$` are accepted. Groups and
/// counted repetition are refused with INVALID_REGULAR_EXPRESSION rather than
/// matched wrongly. Matching simulates the automaton: linear time, no backtracking.
#[derive(Debug, Clone)]
pub struct Regex {
    alternatives: Vec<Vec<(Atom, Quant)>>,
}

#[derive(Debug, Clone)]
enum Atom {
    Char(char),
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Quant {
    One,
    Star,
    Plus,
    Optional,
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Char(x) => *x == c,
            Atom::Any => c != '\n',
            Atom::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

fn shorthand_class(c: char) -> Option<Atom> {
    let ranges = match c {
        'd' | 'D' => vec![('0', '9')],
        'w' | 'W' => vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')],
        's' | 'S' => vec![(' ', ' '), ('\t', '\r')],
        _ => return None,
    };
    Some(Atom::Class {
        negated: c.is_ascii_uppercase(),
        ranges,
    })
}

/// Splits at top-level `|` (outside parentheses, classes and escapes).
fn split_alternatives(pattern: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut in_class, mut escaped, mut start) = (0usize, false, false, 0usize);
    for (i, c) in pattern.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            '|' if !in_class && depth == 0 => {
                parts.push(pattern.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(pattern.get(start..).unwrap_or(""));
    Ok(parts)
}

/// The inside of `(...)` / `(?:...)` when those parentheses wrap all of `alt`.
fn unwrap_group(alt: &str) -> Option<&str> {
    let inner = alt.strip_prefix('(')?.strip_suffix(')')?;
    let inner = inner.strip_prefix("?:").unwrap_or(inner);
    // "(a)(b)" starts and ends with parentheses without being one group.
    let mut depth = 0i32;
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            _ => {}
        }
    }
    Some(inner)
}

impl Regex {
    pub fn parse(pattern: &str) -> Result<Regex, String> {
        if pattern.chars().count() > REGEX_CHARS_MAX {
            return Err(format!(
                "regular expression longer than {REGEX_CHARS_MAX} characters"
            ));
        }
        // librdkafka sends its subscription patterns as "(p1)|(p2)": a group
        // wrapping a whole alternative is just that alternative.
        let mut alternatives = Vec::new();
        let mut pending: Vec<&str> = vec![pattern];
        let mut rounds = 0usize;
        while let Some(piece) = pending.pop() {
            rounds += 1;
            if rounds > REGEX_CHARS_MAX {
                return Err("regular expression nests too deeply".into());
            }
            let alts = split_alternatives(piece)?;
            if alts.len() > 1 {
                pending.extend(alts);
                continue;
            }
            match unwrap_group(piece) {
                Some(inner) => pending.push(inner),
                None => alternatives.extend(Regex::parse_plain(piece)?.alternatives),
            }
        }
        Ok(Regex { alternatives })
    }

    /// A pattern without groups.
    fn parse_plain(pattern: &str) -> Result<Regex, String> {
        let mut alternatives = vec![Vec::new()];
        let mut chars = pattern.chars().peekable();
        let mut at_start = true;
        while let Some(c) = chars.next() {
            let atom = match c {
                '^' if at_start => continue,
                '$' if chars.peek().is_none_or(|n| *n == '|') => continue,
                '|' => {
                    alternatives.push(Vec::new());
                    at_start = true;
                    continue;
                }
                '.' => Atom::Any,
                '\\' => {
                    let e = chars.next().ok_or("trailing backslash")?;
                    match shorthand_class(e) {
                        Some(class) => class,
                        None if e.is_ascii_alphanumeric() => {
                            return Err(format!("unsupported escape \\{e}"));
                        }
                        None => Atom::Char(e),
                    }
                }
                '[' => {
                    let negated = chars.peek() == Some(&'^');
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let c = chars.next().ok_or("unclosed character class")?;
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' {
                            let e = chars.next().ok_or("trailing backslash")?;
                            if let Some(Atom::Class {
                                negated: false,
                                ranges: more,
                            }) = shorthand_class(e)
                            {
                                ranges.extend(more);
                                continue;
                            }
                            if e.is_ascii_alphanumeric() {
                                return Err(format!("unsupported escape \\{e} in class"));
                            }
                            e
                        } else {
                            c
                        };
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.peek().copied() {
                                Some(']') | None => {
                                    ranges.push((lo, lo));
                                    ranges.push(('-', '-'));
                                }
                                Some(hi) => {
                                    chars.next();
                                    if hi < lo {
                                        return Err(format!("bad class range {lo}-{hi}"));
                                    }
                                    ranges.push((lo, hi));
                                }
                            }
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    Atom::Class { negated, ranges }
                }
                '(' | ')' | '{' | '}' => {
                    return Err(format!(
                        "'{c}' (groups and counted repetition) is not supported"
                    ));
                }
                '*' | '+' | '?' => return Err(format!("'{c}' has nothing to repeat")),
                other => Atom::Char(other),
            };
            at_start = false;
            let quant = match chars.peek() {
                Some('*') => Quant::Star,
                Some('+') => Quant::Plus,
                Some('?') => Quant::Optional,
                _ => Quant::One,
            };
            if quant != Quant::One {
                chars.next();
                if matches!(chars.peek(), Some('*' | '+' | '?')) {
                    return Err("stacked or lazy quantifiers are not supported".into());
                }
            }
            if let Some(alt) = alternatives.last_mut() {
                alt.push((atom, quant));
            }
        }
        Ok(Regex { alternatives })
    }

    /// Does the pattern match all of `text`?
    pub fn is_full_match(&self, text: &str) -> bool {
        self.alternatives.iter().any(|alt| {
            // States are atom positions; position alt.len() accepts.
            let closure = |mut set: BTreeSet<usize>| {
                let mut i = 0;
                while i < alt.len() {
                    if set.contains(&i)
                        && matches!(alt.get(i), Some((_, Quant::Star | Quant::Optional)))
                    {
                        set.insert(i + 1);
                    }
                    i += 1;
                }
                set
            };
            let mut states = closure(BTreeSet::from([0]));
            for c in text.chars() {
                let mut next = BTreeSet::new();
                for &s in &states {
                    if let Some((atom, quant)) = alt.get(s)
                        && atom.matches(c)
                    {
                        next.insert(s + 1);
                        if matches!(quant, Quant::Star | Quant::Plus) {
                            next.insert(s);
                        }
                    }
                }
                states = closure(next);
                if states.is_empty() {
                    return false;
                }
            }
            states.contains(&alt.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION_MS: i32 = 45_000;
    const REBALANCE_MS: i32 = 30_000;

    fn limits() -> ConsumerLimits {
        ConsumerLimits {
            heartbeat_interval_ms: 5_000,
            session_timeout_ms: SESSION_MS,
            members_max: 100,
        }
    }

    fn topics(list: &[(&str, i32)]) -> TopicCounts {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn parts(list: &[(&str, &[i32])]) -> Assignment {
        list.iter()
            .map(|(t, ps)| (t.to_string(), ps.iter().copied().collect()))
            .collect()
    }

    fn join(id: &str, subscribed: &[&str]) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: REBALANCE_MS,
            subscribed_topic_names: Some(subscribed.iter().map(|s| s.to_string()).collect()),
            owned: Some(Assignment::new()),
            client_id: "c".into(),
            client_host: "h".into(),
            client_generates_member_id: true,
            ..Default::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: Option<Assignment>) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned,
            client_generates_member_id: true,
            ..Default::default()
        }
    }

    fn ok(reply: HeartbeatReply) -> HeartbeatReply {
        assert_eq!(reply.error, ErrorCode::None, "{reply:?}");
        reply
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn first_member_gets_every_partition_at_epoch_one() {
        let mut g = ConsumerGroup::new();
        let t = topics(&[("t", 4)]);
        let r = ok(g.heartbeat(join("a", &["t"]), &t, &limits(), 0));
        assert_eq!(r.member_epoch, 1);
        assert_eq!(r.member_id.as_deref(), Some("a"));
        assert_eq!(r.heartbeat_interval_ms, 5_000);
        assert_eq!(r.assignment, Some(parts(&[("t", &[0, 1, 2, 3])])));
        assert_eq!(g.state(), ConsumerGroupState::Stable);
        // A plain heartbeat with nothing new carries no assignment.
        let r = ok(g.heartbeat(beat("a", 1, None), &t, &limits(), 10));
        assert_eq!((r.member_epoch, r.assignment), (1, None));
    }

    #[test]
    fn v0_member_without_id_gets_one_from_the_coordinator() {
        let mut g = ConsumerGroup::new();
        let mut req = join("", &["t"]);
        req.client_generates_member_id = false;
        req.fresh_member_id = "generated".into();
        let r = ok(g.heartbeat(req, &topics(&[("t", 1)]), &limits(), 0));
        assert_eq!(r.member_id.as_deref(), Some("generated"));
        // v1 requires the client's own id.
        let r = g.heartbeat(join("", &["t"]), &topics(&[("t", 1)]), &limits(), 0);
        assert_eq!(r.error, ErrorCode::InvalidRequest);
    }

    #[test]
    fn new_member_gets_a_partition_only_after_its_owner_revokes_it() {
        let mut g = ConsumerGroup::new();
        let t = topics(&[("t", 4)]);
        ok(g.heartbeat(join("a", &["t"]), &t, &limits(), 0));
        // b joins: the target splits 2/2, but a still holds everything.
        let rb = ok(g.heartbeat(join("b", &["t"]), &t, &limits(), 1));
        assert_eq!(rb.member_epoch, 2, "b reaches the new epoch at once");
        assert_eq!(
            rb.assignment,
            Some(Assignment::new()),
            "nothing is free yet"
        );
        assert_eq!(
            g.member("b").map(|m| m.state),
            Some(MemberState::UnreleasedPartitions)
        );
        let b_target = g.target_of("b");
        assert_eq!(count(&b_target), 2);
        // a is told to drop b's partitions and keeps epoch 1 until it does.
        let ra = ok(g.heartbeat(
            beat("a", 1, Some(parts(&[("t", &[0, 1, 2, 3])]))),
            &t,
            &limits(),
            2,
        ));
        assert_eq!(ra.member_epoch, 1);
        let a_kept = ra
            .assignment
            .clone()
            .expect("a learns its smaller assignment");
        assert_eq!(count(&a_kept), 2);
        assert_eq!(g.state(), ConsumerGroupState::Reconciling);
        // b asks again before a confirmed: still nothing.
        let rb = ok(g.heartbeat(beat("b", 2, Some(Assignment::new())), &t, &limits(), 3));
        assert_eq!(rb.assignment, None);
        // a confirms (reports only what it kept) and moves to epoch 2.
        let ra = ok(g.heartbeat(beat("a", 1, Some(a_kept.clone())), &t, &limits(), 4));
        assert_eq!(ra.member_epoch, 2);
        // Now b gets its partitions.
        let rb = ok(g.heartbeat(beat("b", 2, Some(Assignment::new())), &t, &limits(), 5));
        assert_eq!(rb.assignment, Some(b_target));
        assert_eq!(g.state(), ConsumerGroupState::Stable);
    }

    #[test]
    fn heartbeat_with_wrong_epoch_is_fenced_but_previous_epoch_with_subset_is_accepted() {
        let mut g = ConsumerGroup::new();
        let t = topics(&[("t", 2)]);
        ok(g.heartbeat(join("a", &["t"]), &t, &limits(), 0));
        assert_eq!(
            g.heartbeat(beat("a", 5, None), &t, &limits(), 1).error,
            ErrorCode::FencedMemberEpoch
        );
        // a grows to epoch 2 when the topic grows; its response could be lost.
        let t3 = topics(&[("t", 3)]);
        let r = ok(g.heartbeat(beat("a", 1, None), &t3, &limits(), 2));
        assert_eq!(r.member_epoch, 2);
        let r = ok(g.heartbeat(
            beat("a", 1, Some(parts(&[("t", &[0, 1])]))),
            &t3,
            &limits(),
            3,
        ));
        assert_eq!(r.member_epoch, 2);
        assert_eq!(
            g.heartbeat(beat("a", 1, None), &t3, &limits(), 4).error,
            ErrorCode::FencedMemberEpoch
        );
        assert_eq!(
            g.heartbeat(beat("zz", 1, None), &t3, &limits(), 4).error,
            ErrorCode::UnknownMemberId
        );
    }

    #[test]
    fn leaving_member_frees_its_partitions_for_the_others() {
        let mut g = ConsumerGroup::new();
        let t = topics(&[("t", 4)]);
        ok(g.heartbeat(join("a", &["t"]), &t, &limits(), 0));
        ok(g.heartbeat(join("b", &["t"]), &t, &limits(), 0));
        let ra = ok(g.heartbeat(
            beat("a", 1, Some(parts(&[("t", &[0, 1, 2, 3])]))),
            &t,
            &limits(),
            1,
        ));
        let kept = ra.assignment.expect("revocation");
        ok(g.heartbeat(beat("a", 1, Some(kept.clone())), &t, &limits(), 2));
        ok(g.heartbeat(beat("b", 2, Some(Assignment::new())), &t, &limits(), 3));
        let epoch = g.group_epoch();
        let r = ok(g.heartbeat(beat("b", LEAVE_EPOCH, None), &t, &limits(), 4));
        assert_eq!(r.member_epoch, LEAVE_EPOCH);
        assert_eq!(g.group_epoch(), epoch + 1);
        let r = ok(g.heartbeat(beat("a", 2, Some(kept)), &t, &limits(), 5));
        assert_eq!(r.assignment, Some(parts(&[("t", &[0, 1, 2, 3])])));
        assert_eq!(r.member_epoch, epoch + 1);
    }

    #[test]
    fn member_silent_past_session_timeout_is_removed() {
        let mut g = ConsumerGroup::new();
        let t = topics(&[("t", 2)]);
        ok(g.heartbeat(join("a", &["t"]), &t, &limits(), 0));
        ok(g.heartbeat(join("b", &["t"]), &t, &limits(), 1_000));
        assert_eq!(g.next_deadline_ms(), Some(i64::from(SESSION_MS)));
        assert!(g.tick(i64::from(SESSION_MS) - 1).is_empty());
        assert_eq!(g.tick(i64::from(SESSION_MS)), vec!["a".to_string()]);
        assert_eq!(
            g.heartbeat(beat("a", 1, None), &t, &limits(), 50_000).error,
            ErrorCode::UnknownMemberId
        );
        let r = ok(g.heartbeat(beat("b", 2, Some(Assignment::new())), &t, &limits(), 50_001));
        assert_eq!(r.assignment, Some(parts(&[("t", &[0, 1])])));
    }

    #[test]
    fn member_that_does_not_revoke_within_rebalance_timeout_is_removed() {
        let mut g = ConsumerGroup::new();
        let t = topics(&[("t", 2)]);
        ok(g.heartbeat(join("a", &["t"]), &t, &limits(), 0));
        ok(g.heartbeat(join("b", &["t"]), &t, &limits(), 0));
        ok(g.heartbeat(beat("a", 1, None), &t, &limits(), 100));
        assert_eq!(
            g.member("a").map(|m| m.state),
            Some(MemberState::UnrevokedPartitions)
        );
        // Heartbeats alone don't help while the partition is still reported as owned.
        ok(g.heartbeat(
            beat("a", 1, Some(parts(&[("t", &[0, 1])]))),
            &t,
            &limits(),
            20_000,
        ));
        ok(g.heartbeat(beat("b", 2, None), &t, &limits(), 20_000));
        let gone = g.tick(100 + i64::from(REBALANCE_MS));
        assert_eq!(gone, vec!["a".to_string()]);
    }

    #[test]
    fn uniform_assignor_is_balanced_and_moves_only_what_it_must() {
        let subs: BTreeMap<String, BTreeSet<String>> = ["a", "b", "c"]
            .iter()
            .map(|m| (m.to_string(), BTreeSet::from(["t".to_string()])))
            .collect();
        let t = topics(&[("t", 12)]);
        let first = assign_uniform(&subs, &t, &BTreeMap::new());
        assert!(first.values().all(|a| count(a) == 4), "{first:?}");
        let mut subs4 = subs.clone();
        subs4.insert("d".into(), BTreeSet::from(["t".to_string()]));
        let second = assign_uniform(&subs4, &t, &first);
        assert!(second.values().all(|a| count(a) == 3), "{second:?}");
        for m in ["a", "b", "c"] {
            let kept = second[m]["t"].intersection(&first[m]["t"]).count();
            assert_eq!(kept, 3, "{m} keeps three of its four partitions");
        }
        let all: BTreeSet<i32> = second
            .values()
            .flat_map(|a| a["t"].iter().copied())
            .collect();
        assert_eq!(all, (0..12).collect());
    }

    #[test]
    fn uniform_assignor_respects_different_subscriptions() {
        let subs: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_string(), BTreeSet::from(["x".to_string()])),
            (
                "b".to_string(),
                BTreeSet::from(["x".to_string(), "y".to_string()]),
            ),
        ]
        .into();
        let out = assign_uniform(&subs, &topics(&[("x", 2), ("y", 2)]), &BTreeMap::new());
        assert!(!out["a"].contains_key("y"));
        assert_eq!(count(&out["a"]) + count(&out["b"]), 4);
        assert_eq!(out["b"]["y"].len(), 2);
    }

    #[test]
    fn range_assignor_gives_contiguous_ranges_first_members_get_extra() {
        let subs: BTreeMap<String, BTreeSet<String>> = ["a", "b", "c"]
            .iter()
            .map(|m| (m.to_string(), BTreeSet::from(["t".to_string()])))
            .collect();
        let out = assign_range(&subs, &topics(&[("t", 7)]));
        assert_eq!(out["a"], parts(&[("t", &[0, 1, 2])]));
        assert_eq!(out["b"], parts(&[("t", &[3, 4])]));
        assert_eq!(out["c"], parts(&[("t", &[5, 6])]));
    }

    #[test]
    fn members_asking_for_range_get_range() {
        let mut g = ConsumerGroup::new();
        let mut req = join("a", &["t"]);
        req.server_assignor = Some("range".into());
        ok(g.heartbeat(req, &topics(&[("t", 2)]), &limits(), 0));
        assert_eq!(g.assignor(), "range");
        let mut bad = join("b", &["t"]);
        bad.server_assignor = Some("sticky".into());
        assert_eq!(
            g.heartbeat(bad, &topics(&[("t", 2)]), &limits(), 0).error,
            ErrorCode::UnsupportedAssignor
        );
    }

    #[test]
    fn malformed_first_heartbeats_are_invalid_requests() {
        let mut g = ConsumerGroup::new();
        let t = topics(&[("t", 1)]);
        let mut no_timeout = join("a", &["t"]);
        no_timeout.rebalance_timeout_ms = -1;
        assert_eq!(
            g.heartbeat(no_timeout, &t, &limits(), 0).error,
            ErrorCode::InvalidRequest
        );
        let mut owning = join("a", &["t"]);
        owning.owned = Some(parts(&[("t", &[0])]));
        assert_eq!(
            g.heartbeat(owning, &t, &limits(), 0).error,
            ErrorCode::InvalidRequest
        );
        let mut nothing = join("a", &[]);
        nothing.subscribed_topic_names = None;
        assert_eq!(
            g.heartbeat(nothing, &t, &limits(), 0).error,
            ErrorCode::InvalidRequest
        );
        let mut static_leave = beat("a", STATIC_LEAVE_EPOCH, None);
        static_leave.instance_id = None;
        assert_eq!(
            g.heartbeat(static_leave, &t, &limits(), 0).error,
            ErrorCode::InvalidRequest
        );
        let mut regex = join("a", &[]);
        regex.subscribed_topic_names = None;
        regex.subscribed_topic_regex = Some("a{2,}".into());
        assert_eq!(
            g.heartbeat(regex, &t, &limits(), 0).error,
            ErrorCode::InvalidRegularExpression
        );
        assert!(g.is_empty());
    }

    #[test]
    fn regex_subscription_matches_whole_names_and_skips_internal_topics() {
        let mut g = ConsumerGroup::new();
        let mut req = join("a", &[]);
        req.subscribed_topic_names = None;
        req.subscribed_topic_regex = Some("^orders-.*".into());
        let t = topics(&[
            ("orders-eu", 1),
            ("orders-us", 1),
            ("returns", 1),
            ("__consumer_offsets", 3),
        ]);
        let r = ok(g.heartbeat(req, &t, &limits(), 0));
        assert_eq!(
            r.assignment,
            Some(parts(&[("orders-eu", &[0]), ("orders-us", &[0])]))
        );
        // A new matching topic bumps the group epoch and is assigned.
        let mut t2 = t.clone();
        t2.insert("orders-apac".into(), 2);
        let r = ok(g.heartbeat(beat("a", 1, None), &t2, &limits(), 1));
        assert_eq!(r.member_epoch, 2);
        assert_eq!(r.assignment.map(|a| count(&a)), Some(4));
    }

    #[test]
    fn regex_subset_semantics() {
        let m = |p: &str, t: &str| Regex::parse(p).expect(p).is_full_match(t);
        assert!(m("a.c", "abc"));
        assert!(!m("a.c", "abcd"), "whole-name match");
        assert!(m("t[0-9]+", "t42") && !m("t[0-9]+", "t"));
        assert!(m("x|y\\d", "y7") && !m("x|y\\d", "y"));
        assert!(m("colou?r", "color") && m("colou?r", "colour"));
        assert!(m("[^_].*", "abc") && !m("[^_].*", "_abc"));
        assert!(m("a\\.b", "a.b") && !m("a\\.b", "axb"));
        assert!(
            Regex::parse("a{2}").is_err()
                && Regex::parse("[abc").is_err()
                && Regex::parse("*a").is_err()
        );
        // librdkafka's shape: each subscribed pattern wrapped, joined with '|'.
        assert!(m("(^rx-.*)", "rx-orders") && !m("(^rx-.*)", "other"));
        assert!(
            m("(^a.*)|(^b[0-9])", "b1")
                && m("(^a.*)|(^b[0-9])", "axe")
                && !m("(^a.*)|(^b[0-9])", "c")
        );
        assert!(m("(?:x|y)", "y"));
        assert!(
            Regex::parse("(a)(b)").is_err()
                && Regex::parse("a(b").is_err()
                && Regex::parse("(ab)+").is_err()
        );
    }

    #[test]
    fn static_member_rejoining_after_temporary_leave_keeps_epoch_and_partitions() {
        let mut g = ConsumerGroup::new();
        let t = topics(&[("t", 2)]);
        let mut a = join("a1", &["t"]);
        a.instance_id = Some("inst".into());
        ok(g.heartbeat(a, &t, &limits(), 0));
        let epoch = g.group_epoch();
        // A second process with the same instance id while the first is active.
        let mut dup = join("a2", &["t"]);
        dup.instance_id = Some("inst".into());
        assert_eq!(
            g.heartbeat(dup.clone(), &t, &limits(), 1).error,
            ErrorCode::UnreleasedInstanceId
        );
        let mut leave = beat("a1", STATIC_LEAVE_EPOCH, None);
        leave.instance_id = Some("inst".into());
        assert_eq!(
            ok(g.heartbeat(leave, &t, &limits(), 2)).member_epoch,
            STATIC_LEAVE_EPOCH
        );
        let r = ok(g.heartbeat(dup, &t, &limits(), 3));
        assert_eq!(r.member_epoch, 1);
        assert_eq!(r.assignment, Some(parts(&[("t", &[0, 1])])));
        assert_eq!(g.group_epoch(), epoch, "no rebalance");
        assert!(g.member("a1").is_none());
    }

    #[test]
    fn commits_need_the_members_current_or_previous_epoch() {
        let mut g = ConsumerGroup::new();
        let t = topics(&[("t", 2)]);
        assert_eq!(
            g.check_member_epoch("", -1),
            ErrorCode::None,
            "admin commit to an empty group"
        );
        assert_eq!(
            g.check_member_epoch("id-librdkafka-generated", -1),
            ErrorCode::None,
            "an assign() consumer's commit to an empty group, whatever its member id"
        );
        ok(g.heartbeat(join("a", &["t"]), &t, &limits(), 0));
        assert_eq!(g.check_member_epoch("a", 1), ErrorCode::None);
        assert_eq!(g.check_member_epoch("a", 7), ErrorCode::StaleMemberEpoch);
        assert_eq!(g.check_member_epoch("b", 1), ErrorCode::UnknownMemberId);
        assert_eq!(
            g.check_member_epoch("", -1),
            ErrorCode::UnknownMemberId,
            "not while members are active"
        );
    }
}

//! Scenario tests for the group state machine, driven with a fake clock.
//! Waiters are plain numbers so each reply can be matched to its request.

use bytes::Bytes;
use weir_protocol::error_code::ErrorCode;

use super::group::*;
use super::partition_for;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const DELAY_MS: i64 = 3_000;

fn limits() -> GroupLimits {
    GroupLimits {
        initial_rebalance_delay_ms: DELAY_MS,
        ..GroupLimits::default()
    }
}

fn join_req(member_id: &str, fresh: &str, protocols: &[(&str, &str)]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        instance_id: None,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|(n, m)| (n.to_string(), Bytes::from(m.to_string())))
            .collect(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        client_id: "c".into(),
        client_host: "h".into(),
        require_known_member_id: true,
        fresh_member_id: fresh.into(),
    }
}

fn join_reply(out: &mut Outbox<u32>, waiter: u32) -> JoinReply {
    let at = out
        .iter()
        .position(|(w, _)| *w == waiter)
        .unwrap_or_else(|| panic!("no reply for waiter {waiter}: {out:?}"));
    match out.remove(at).1 {
        Reply::Join(r) => r,
        other => panic!("expected a join reply, got {other:?}"),
    }
}

fn sync_reply(out: &mut Outbox<u32>, waiter: u32) -> SyncReply {
    let at = out
        .iter()
        .position(|(w, _)| *w == waiter)
        .unwrap_or_else(|| panic!("no reply for waiter {waiter}: {out:?}"));
    match out.remove(at).1 {
        Reply::Sync(r) => r,
        other => panic!("expected a sync reply, got {other:?}"),
    }
}

/// Joins `ids` (already known ids, KIP-394 done) into a fresh group and runs
/// the initial delay out. Returns the group at CompletingRebalance and the replies.
fn formed_group(ids: &[&str]) -> (Group<u32>, Vec<JoinReply>) {
    let mut g = Group::new("g", 0);
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        // First join: KIP-394 hands out the id.
        g.join(
            join_req("", id, &[("range", id)]),
            100 + i as u32,
            0,
            &limits(),
            &mut out,
        );
        let r = join_reply(&mut out, 100 + i as u32);
        assert_eq!(r.error, ErrorCode::MemberIdRequired);
        assert_eq!(r.member_id, *id);
        g.join(
            join_req(id, "unused", &[("range", id)]),
            i as u32,
            0,
            &limits(),
            &mut out,
        );
    }
    assert!(
        out.is_empty(),
        "the initial delay holds the round open: {out:?}"
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    g.tick(DELAY_MS, &mut out);
    let replies = (0..ids.len())
        .map(|i| join_reply(&mut out, i as u32))
        .collect();
    (g, replies)
}

fn stabilize(g: &mut Group<u32>, replies: &[JoinReply], now: i64) -> Vec<SyncReply> {
    let mut out = Vec::new();
    let leader = replies[0].leader.clone();
    let generation = replies[0].generation;
    for (i, r) in replies.iter().enumerate() {
        let assignments = if r.member_id == leader {
            r.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        Bytes::from(format!("for-{}", m.member_id)),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let req = SyncRequest {
            member_id: r.member_id.clone(),
            generation,
            assignments,
            ..Default::default()
        };
        g.sync(req, 200 + i as u32, now, &mut out);
    }
    (0..replies.len())
        .map(|i| sync_reply(&mut out, 200 + i as u32))
        .collect()
}

#[test]
fn join_without_member_id_gets_member_id_required_then_joins() {
    let (g, replies) = formed_group(&["a"]);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(replies[0].error, ErrorCode::None);
    assert_eq!(replies[0].generation, 1);
    assert_eq!(replies[0].leader, "a");
    assert_eq!(replies[0].members.len(), 1);
}

#[test]
fn initial_delay_gathers_all_members_into_one_generation() {
    let (g, replies) = formed_group(&["a", "b", "c"]);
    assert_eq!(g.generation(), 1);
    let leaders: Vec<_> = replies.iter().filter(|r| !r.members.is_empty()).collect();
    assert_eq!(leaders.len(), 1, "exactly one member gets the member list");
    assert_eq!(leaders[0].members.len(), 3);
    assert!(
        replies
            .iter()
            .all(|r| r.generation == 1 && r.leader == leaders[0].member_id)
    );
}

#[test]
fn leader_sync_hands_every_member_its_assignment() {
    let (mut g, replies) = formed_group(&["a", "b", "c"]);
    let syncs = stabilize(&mut g, &replies, DELAY_MS + 10);
    assert_eq!(g.state(), GroupState::Stable);
    for (reply, join) in syncs.iter().zip(&replies) {
        assert_eq!(reply.error, ErrorCode::None);
        assert_eq!(
            reply.assignment,
            Bytes::from(format!("for-{}", join.member_id))
        );
    }
    assert!(g.take_dirty(), "a stable group must be persisted");
}

#[test]
fn follower_sync_before_leader_waits_for_the_assignment() {
    let (mut g, replies) = formed_group(&["a", "b"]);
    let follower = replies
        .iter()
        .find(|r| r.members.is_empty())
        .unwrap()
        .member_id
        .clone();
    let mut out = Vec::new();
    g.sync(
        SyncRequest {
            member_id: follower,
            generation: 1,
            ..Default::default()
        },
        7,
        DELAY_MS,
        &mut out,
    );
    assert!(out.is_empty(), "the follower waits for the leader");
    let leader = replies[0].leader.clone();
    let assignments = vec![
        ("a".to_string(), Bytes::from("x")),
        ("b".to_string(), Bytes::from("y")),
    ];
    g.sync(
        SyncRequest {
            member_id: leader,
            generation: 1,
            assignments,
            ..Default::default()
        },
        8,
        DELAY_MS,
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert_eq!(sync_reply(&mut out, 7).error, ErrorCode::None);
}

#[test]
fn new_member_in_stable_group_triggers_rebalance_seen_by_heartbeat() {
    let (mut g, replies) = formed_group(&["a", "b"]);
    stabilize(&mut g, &replies, DELAY_MS);
    let mut out = Vec::new();
    g.join(
        join_req("", "c", &[("range", "c")]),
        1,
        DELAY_MS,
        &limits(),
        &mut out,
    );
    assert_eq!(join_reply(&mut out, 1).error, ErrorCode::MemberIdRequired);
    g.join(
        join_req("c", "", &[("range", "c")]),
        2,
        DELAY_MS,
        &limits(),
        &mut out,
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(out.is_empty());
    assert_eq!(
        g.heartbeat("a", None, 1, DELAY_MS),
        ErrorCode::RebalanceInProgress
    );
    // The old members rejoin; the round completes without waiting for the delay.
    g.join(
        join_req("a", "", &[("range", "a")]),
        3,
        DELAY_MS,
        &limits(),
        &mut out,
    );
    g.join(
        join_req("b", "", &[("range", "b")]),
        4,
        DELAY_MS,
        &limits(),
        &mut out,
    );
    let r = join_reply(&mut out, 2);
    assert_eq!(r.generation, 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
}

#[test]
fn member_that_stops_heartbeating_is_removed_after_session_timeout() {
    let (mut g, replies) = formed_group(&["a", "b"]);
    let t0 = DELAY_MS;
    stabilize(&mut g, &replies, t0);
    let mut out = Vec::new();
    // Only "a" keeps heartbeating.
    for step in 1..=3 {
        assert_eq!(
            g.heartbeat("a", None, 1, t0 + step * 4_000),
            ErrorCode::None
        );
        g.tick(t0 + step * 4_000, &mut out);
    }
    assert!(g.member("b").is_none(), "b's session expired");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    g.join(
        join_req("a", "", &[("range", "a")]),
        9,
        t0 + 12_000,
        &limits(),
        &mut out,
    );
    let r = join_reply(&mut out, 9);
    assert_eq!(r.generation, 2);
    assert_eq!(r.members.len(), 1);
}

#[test]
fn member_that_never_rejoins_is_dropped_at_rebalance_timeout() {
    let (mut g, replies) = formed_group(&["a", "b"]);
    stabilize(&mut g, &replies, DELAY_MS);
    let mut out = Vec::new();
    g.join(
        join_req("a", "", &[("range", "a2")]),
        1,
        DELAY_MS,
        &limits(),
        &mut out,
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // b heartbeats (so its session stays alive) but never rejoins, like a
    // consumer past max.poll.interval.ms.
    for t in (DELAY_MS..DELAY_MS + i64::from(REBALANCE_MS)).step_by(5_000) {
        g.heartbeat("b", None, 1, t);
        g.tick(t, &mut out);
    }
    assert!(out.is_empty());
    g.tick(DELAY_MS + i64::from(REBALANCE_MS), &mut out);
    let r = join_reply(&mut out, 1);
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(r.members.len(), 1);
    assert!(g.member("b").is_none());
}

#[test]
fn leave_rebalances_and_unknown_member_leave_is_refused() {
    let (mut g, replies) = formed_group(&["a", "b"]);
    stabilize(&mut g, &replies, DELAY_MS);
    let mut out = Vec::new();
    assert_eq!(
        g.leave("zzz", None, DELAY_MS, &mut out),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(g.leave("b", None, DELAY_MS, &mut out), ErrorCode::None);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.leave("a", None, DELAY_MS, &mut out), ErrorCode::None);
    assert_eq!(
        g.state(),
        GroupState::Empty,
        "the last member leaving empties the group"
    );
    assert!(g.take_dirty());
}

#[test]
fn static_member_restart_in_stable_group_keeps_generation_and_assignment() {
    let mut g: Group<u32> = Group::new("g", 0);
    let mut out = Vec::new();
    let mut a = join_req("", "a-1", &[("range", "a")]);
    a.instance_id = Some("inst-a".into());
    let mut b = join_req("", "b-1", &[("range", "b")]);
    b.instance_id = Some("inst-b".into());
    // Static members skip MEMBER_ID_REQUIRED.
    g.join(a.clone(), 0, 0, &limits(), &mut out);
    g.join(b.clone(), 1, 0, &limits(), &mut out);
    g.tick(DELAY_MS, &mut out);
    let replies = vec![join_reply(&mut out, 0), join_reply(&mut out, 1)];
    stabilize(&mut g, &replies, DELAY_MS);
    let b_assignment = g.member("b-1").unwrap().assignment.clone();

    // b's process restarts: empty member id, same instance id, same subscription.
    let mut b2 = b.clone();
    b2.fresh_member_id = "b-2".into();
    g.join(b2, 5, DELAY_MS + 1_000, &limits(), &mut out);
    let r = join_reply(&mut out, 5);
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(r.member_id, "b-2");
    assert_eq!(r.generation, 1, "no rebalance");
    assert_eq!(g.state(), GroupState::Stable);
    g.sync(
        SyncRequest {
            member_id: "b-2".into(),
            instance_id: Some("inst-b".into()),
            generation: 1,
            ..Default::default()
        },
        6,
        DELAY_MS + 1_000,
        &mut out,
    );
    assert_eq!(sync_reply(&mut out, 6).assignment, b_assignment);
    // The old incarnation is fenced.
    assert_eq!(
        g.heartbeat("b-1", Some("inst-b"), 1, DELAY_MS + 1_000),
        ErrorCode::FencedInstanceId
    );
    assert_eq!(
        g.heartbeat("a-1", Some("inst-a"), 1, DELAY_MS + 1_000),
        ErrorCode::None
    );
}

#[test]
fn protocol_selection_picks_the_one_everyone_supports() {
    let mut g: Group<u32> = Group::new("g", 0);
    let mut out = Vec::new();
    let mut a = join_req("", "a", &[("cooperative-sticky", ""), ("range", "")]);
    a.require_known_member_id = false;
    let mut b = join_req("", "b", &[("range", ""), ("roundrobin", "")]);
    b.require_known_member_id = false;
    g.join(a, 0, 0, &limits(), &mut out);
    g.join(b, 1, 0, &limits(), &mut out);
    let mut c = join_req("", "c", &[("roundrobin", "")]);
    c.require_known_member_id = false;
    g.join(c, 2, 0, &limits(), &mut out);
    assert_eq!(
        join_reply(&mut out, 2).error,
        ErrorCode::InconsistentGroupProtocol
    );
    g.tick(DELAY_MS, &mut out);
    assert_eq!(
        join_reply(&mut out, 0).protocol_name.as_deref(),
        Some("range")
    );
}

#[test]
fn invalid_session_timeout_is_refused() {
    let mut g: Group<u32> = Group::new("g", 0);
    let mut out = Vec::new();
    let mut req = join_req("", "a", &[("range", "")]);
    req.session_timeout_ms = 10;
    g.join(req, 0, 0, &limits(), &mut out);
    assert_eq!(
        join_reply(&mut out, 0).error,
        ErrorCode::InvalidSessionTimeout
    );
}

#[test]
fn commits_are_checked_against_member_and_generation() {
    let (mut g, replies) = formed_group(&["a", "b"]);
    assert_eq!(
        g.check_commit("a", None, 1, DELAY_MS),
        ErrorCode::RebalanceInProgress
    );
    stabilize(&mut g, &replies, DELAY_MS);
    assert_eq!(g.check_commit("a", None, 1, DELAY_MS), ErrorCode::None);
    assert_eq!(
        g.check_commit("a", None, 0, DELAY_MS),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        g.check_commit("x", None, 1, DELAY_MS),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        g.check_commit("", None, -1, DELAY_MS),
        ErrorCode::UnknownMemberId,
        "a live group refuses simple commits"
    );
    let mut empty: Group<u32> = Group::new("s", 0);
    assert_eq!(
        empty.check_commit("", None, -1, 0),
        ErrorCode::None,
        "standalone consumers commit to empty groups"
    );
}

#[test]
fn offsets_expire_only_once_the_group_is_empty_for_the_retention() {
    let (mut g, replies) = formed_group(&["a"]);
    stabilize(&mut g, &replies, DELAY_MS);
    let entry = OffsetEntry {
        offset: 5,
        leader_epoch: -1,
        metadata: "m".into(),
        commit_ts_ms: 0,
    };
    g.offsets.insert(("t".into(), 0), entry);
    assert!(
        g.expire_offsets(1_000_000, 10).is_empty(),
        "a live group keeps its offsets"
    );
    let mut out = Vec::new();
    g.leave("a", None, 2_000_000, &mut out);
    assert_eq!(g.state(), GroupState::Empty);
    assert!(
        g.expire_offsets(2_000_005, 10).is_empty(),
        "retention counts from when the group emptied"
    );
    assert_eq!(g.expire_offsets(2_000_010, 10), vec![("t".to_string(), 0)]);
}

#[test]
fn stored_group_restores_as_stable_with_members() {
    let (mut g, replies) = formed_group(&["a", "b"]);
    stabilize(&mut g, &replies, DELAY_MS);
    let stored = g.stored();
    let mut restored: Group<u32> = Group::new("g", 0);
    restored.restore(stored, 50_000);
    assert_eq!(restored.state(), GroupState::Stable);
    assert_eq!(restored.generation(), 1);
    assert_eq!(restored.heartbeat("a", None, 1, 50_001), ErrorCode::None);
    assert_eq!(
        restored.member("b").unwrap().assignment,
        g.member("b").unwrap().assignment
    );
}

#[test]
fn group_partition_matches_kafkas_placement() {
    // Java: "my-group".hashCode() == -1_906_497_762; |h| % 50 == 12.
    assert_eq!(partition_for("my-group", 50), 12);
    assert_eq!(partition_for("", 50), 0);
    assert!((0..7).contains(&partition_for("anything at all", 7)));
}

#[test]
fn a_group_whose_member_is_still_joining_is_never_removable() {
    // KIP-394: the first JoinGroup only hands out an id; the group then has
    // no member yet, but removing it would refuse the member's second join.
    let mut g: Group<u32> = Group::new("g", 0);
    let mut out = Vec::new();
    g.join(
        join_req("", "a", &[("range", "")]),
        0,
        0,
        &limits(),
        &mut out,
    );
    assert_eq!(join_reply(&mut out, 0).error, ErrorCode::MemberIdRequired);
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.member_count(), 0);
    assert!(!g.is_removable(), "a handed-out member id is pending");
    g.join(
        join_req("a", "", &[("range", "")]),
        1,
        1,
        &limits(),
        &mut out,
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(!g.is_removable(), "a rebalance is in progress");
    g.tick(DELAY_MS + 1, &mut out);
    assert_eq!(join_reply(&mut out, 1).error, ErrorCode::None);
    assert!(!g.is_removable(), "the group has a member");

    // An id nobody claims expires with its session; then the group may go.
    let mut lone: Group<u32> = Group::new("lone", 0);
    lone.join(
        join_req("", "b", &[("range", "")]),
        2,
        0,
        &limits(),
        &mut out,
    );
    lone.tick(i64::from(SESSION_MS) + 1, &mut out);
    assert!(lone.is_removable());
}

#[test]
fn negative_generation_commit_with_any_member_id_goes_to_an_empty_group() {
    // librdkafka with group.protocol=consumer and assign() sends the member
    // id it generated with generation -1; Kafka takes that.
    let mut empty: Group<u32> = Group::new("s", 0);
    assert_eq!(
        empty.check_commit("rdkafka-generated-id", None, -1, 0),
        ErrorCode::None
    );
    let (mut g, replies) = formed_group(&["a"]);
    stabilize(&mut g, &replies, DELAY_MS);
    assert_eq!(
        g.check_commit("rdkafka-generated-id", None, -1, DELAY_MS),
        ErrorCode::UnknownMemberId,
        "a live group still refuses it"
    );
}

mod migration {
    //! KIP-848 online migration between the classic and consumer protocols,
    //! at the level of the state machines.
    use super::*;
    use crate::groups::consumer::{
        self, Assignment, ConsumerLimits, HeartbeatRequest, TopicCounts,
    };
    use crate::groups::records;

    fn topics() -> TopicCounts {
        [("t".to_string(), 4)].into()
    }

    fn all_of_t() -> Assignment {
        [("t".to_string(), (0..4).collect())].into()
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(|p| p.len()).sum()
    }

    fn classic_join(member_id: &str) -> JoinRequest {
        let subscription = records::consumer_subscription(&["t".to_string()]);
        JoinRequest {
            member_id: member_id.into(),
            protocols: vec![("range".into(), subscription)],
            ..join_req(member_id, "fresh", &[])
        }
    }

    fn consumer_join(id: &str) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: REBALANCE_MS,
            subscribed_topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            client_generates_member_id: true,
            ..Default::default()
        }
    }

    fn consumer_beat(id: &str, epoch: i32, owned: &Assignment) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(owned.clone()),
            client_generates_member_id: true,
            ..Default::default()
        }
    }

    /// A classic group at generation 1 whose one member "a" owns all of t.
    fn stable_classic_group() -> Group<u32> {
        let mut g: Group<u32> = Group::new("g", 0);
        let mut out = Vec::new();
        g.join(classic_join(""), 0, 0, &limits(), &mut out);
        let id = join_reply(&mut out, 0).member_id;
        assert_eq!(id, "fresh");
        g.join(classic_join(&id), 1, 0, &limits(), &mut out);
        g.tick(DELAY_MS, &mut out);
        let joined = join_reply(&mut out, 1);
        assert_eq!(joined.generation, 1);
        let sync = SyncRequest {
            member_id: id.clone(),
            generation: 1,
            assignments: vec![(id.clone(), records::consumer_assignment(&all_of_t()))],
            ..Default::default()
        };
        g.sync(sync, 2, DELAY_MS, &mut out);
        assert_eq!(sync_reply(&mut out, 2).error, ErrorCode::None);
        assert_eq!(g.state(), GroupState::Stable);
        g
    }

    #[test]
    fn consumer_member_joining_a_classic_group_converts_it_and_both_share_the_partitions() {
        let mut g = stable_classic_group();
        let mut out = Vec::new();
        let now = DELAY_MS + 10;
        g.upgrade_to_consumer(&topics(), 100, now, &mut out)
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(g.state(), GroupState::Empty, "the classic side is emptied");
        assert_eq!(g.member_count(), 0);
        let c = g.consumer.as_mut().unwrap();
        assert_eq!(c.group_epoch(), 1, "the generation becomes the group epoch");
        assert_eq!(c.member("fresh").unwrap().assigned, all_of_t());

        // The consumer-protocol member joins: the target splits t, but a's
        // partitions are not free yet.
        let limits = ConsumerLimits::default();
        let b = c.heartbeat(consumer_join("b"), &topics(), &limits, now);
        assert_eq!(b.error, ErrorCode::None);
        assert_eq!(b.member_epoch, 2);
        assert_eq!(count(&b.assignment.clone().unwrap()), 0);

        // The classic member's heartbeat tells it to rejoin; its JoinGroup
        // (eager: it owns nothing now) gets generation 2 and no leader.
        assert_eq!(
            c.classic_heartbeat("fresh", None, 1, now),
            ErrorCode::RebalanceInProgress
        );
        let rejoined = c.classic_join(
            classic_join("fresh"),
            &topics(),
            &limits,
            &super::limits(),
            now,
        );
        assert_eq!(rejoined.error, ErrorCode::None);
        assert_eq!(rejoined.generation, 2);
        assert_eq!(rejoined.leader, "");
        assert_eq!(rejoined.protocol_name.as_deref(), Some("range"));
        let sync = SyncRequest {
            member_id: "fresh".into(),
            generation: 2,
            ..Default::default()
        };
        let synced = c.classic_sync(&sync, now);
        assert_eq!(synced.error, ErrorCode::None);
        let a_has = records::decode_consumer_assignment(&synced.assignment).unwrap();
        assert_eq!(count(&a_has), 2);
        assert_eq!(c.classic_heartbeat("fresh", None, 2, now), ErrorCode::None);
        assert_eq!(
            c.check_member_epoch("fresh", 2),
            ErrorCode::None,
            "a classic member commits with its generation"
        );
        assert_eq!(
            c.check_member_epoch("fresh", 1),
            ErrorCode::IllegalGeneration
        );

        // The freed partitions reach the consumer-protocol member.
        let b = c.heartbeat(
            consumer_beat("b", 2, &Assignment::new()),
            &topics(),
            &limits,
            now,
        );
        let b_has = b.assignment.unwrap();
        assert_eq!(count(&b_has), 2);
        assert!(b_has["t"].is_disjoint(&a_has["t"]));

        // The consumer-protocol member leaves: back to a classic group that
        // rebalances, with a keeping its id.
        let mut leave = consumer_beat("b", consumer::LEAVE_EPOCH, &Assignment::new());
        leave.owned = None;
        let left = c.heartbeat(leave, &topics(), &limits, now);
        assert_eq!(left.error, ErrorCode::None);
        g.maybe_downgrade(now, &mut out);
        assert!(g.consumer.is_none());
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(g.protocol_type(), Some("consumer"));
        assert_eq!(g.protocol_name(), Some("range"));
        assert_eq!(
            g.heartbeat("fresh", None, 3, now),
            ErrorCode::RebalanceInProgress
        );
        g.join(classic_join("fresh"), 7, now, &super::limits(), &mut out);
        let joined = join_reply(&mut out, 7);
        assert_eq!(joined.error, ErrorCode::None);
        assert_eq!(joined.leader, "fresh");
        assert!(joined.generation > 2);
    }

    #[test]
    fn classic_member_that_does_not_rejoin_or_sync_within_its_rebalance_timeout_is_removed() {
        let mut g = stable_classic_group();
        let mut out = Vec::new();
        g.upgrade_to_consumer(&topics(), 100, 0, &mut out).unwrap();
        let c = g.consumer.as_mut().unwrap();
        // Sessions outlast the scenario: only the rebalance timeout may act.
        let limits = ConsumerLimits {
            session_timeout_ms: 1_000_000,
            ..ConsumerLimits::default()
        };
        c.heartbeat(consumer_join("b"), &topics(), &limits, 0);
        // Told to rejoin at t=1000 and keeps heartbeating, but never rejoins.
        let rebalance_ms = i64::from(REBALANCE_MS);
        assert_eq!(
            c.classic_heartbeat("fresh", None, 1, 1_000),
            ErrorCode::RebalanceInProgress
        );
        let b = c.heartbeat(
            consumer_beat("b", 2, &Assignment::new()),
            &topics(),
            &limits,
            5_000,
        );
        assert_eq!(b.error, ErrorCode::None);
        c.classic_heartbeat("fresh", None, 1, 10_000);
        c.classic_heartbeat("fresh", None, 1, 20_000);
        c.classic_heartbeat("fresh", None, 1, 29_000);
        assert!(c.tick(1_000 + rebalance_ms - 1).is_empty());
        assert_eq!(c.tick(1_000 + rebalance_ms), vec!["fresh".to_string()]);

        // One that rejoins but never sends SyncGroup goes too.
        let mut late = classic_join("late");
        late.session_timeout_ms = 600_000;
        let joined = c.classic_join(late, &topics(), &limits, &super::limits(), 40_000);
        assert_eq!(joined.error, ErrorCode::None);
        assert!(c.tick(40_000 + rebalance_ms - 1).is_empty());
        assert_eq!(c.tick(40_000 + rebalance_ms), vec!["late".to_string()]);
    }

    #[test]
    fn a_classic_group_of_another_protocol_type_is_not_converted() {
        let mut g: Group<u32> = Group::new("g", 0);
        let mut out = Vec::new();
        let mut req = join_req("", "a", &[("p", "")]);
        req.protocol_type = "connect".into();
        req.require_known_member_id = false;
        g.join(req, 0, 0, &limits(), &mut out);
        assert!(g.upgrade_to_consumer(&topics(), 100, 1, &mut out).is_err());
        assert!(g.consumer.is_none());
        assert_eq!(g.member_count(), 1);
    }
}

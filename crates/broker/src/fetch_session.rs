//! KIP-227 incremental fetch sessions, sans I/O: the broker's bounded cache of sessions and
//! the rules that turn a Fetch request's (session id, epoch, partitions, forgotten) into the
//! partitions to read, and a read's outcome into the partitions to answer.
//!
//! A session remembers, per partition, what the fetcher last asked (fetch offset, max bytes,
//! epochs) so an incremental request lists only what changed, and what it was last told
//! (high watermark, last stable offset, log start) so an incremental answer carries only
//! partitions with something new. The handler (`handlers/fetch.rs`) does the reading; this
//! module owns no clock, socket or log: time comes in as `now_ms`, session ids from a seeded
//! generator.
//!
//! Facts from Kafka (`server/.../FetchManager.java`, `FetchSession.java`,
//! `FetchSessionCacheShard.java`, `FetchContext.java`):
//! - epoch 0 is a full request that creates a session (closing the named one, if any);
//!   epoch -1 a full request that creates none (closing the named one: FINAL); any other
//!   epoch is incremental and must be the session's next one, else
//!   INVALID_FETCH_SESSION_EPOCH; an unknown id is FETCH_SESSION_ID_NOT_FOUND.
//! - A session made with topic ids (v13+) can't be used without them and vice versa:
//!   FETCH_SESSION_TOPIC_ID_ERROR.
//! - An incremental request that forgets every partition closes its session and is answered
//!   sessionless.
//! - When the cache is full, a new session may evict a stale one (unused for longer than
//!   the eviction time), else the least valuable one that is old enough: followers'
//!   sessions (privileged) are worth more than consumers', then larger ones more than
//!   smaller; a session of equal worth is never evicted for a new one.
//!
//! Weir's own rules on top: a session belongs to the kind of fetcher that made it (a given
//! replica, or consumers); another kind naming it is told FETCH_SESSION_ID_NOT_FOUND, so a
//! consumer can't move a follower's cached positions, which feed the high watermark. And a
//! session holds at most [`SESSION_PARTITIONS_MAX`] partitions: a full request with more
//! gets no session, an incremental one that would pass it closes the session and is
//! answered sessionless. Memory is therefore bounded by slots × that many cached partitions.

use std::collections::HashMap;

use weir_protocol::error_code::ErrorCode;

/// Kafka's `max.incremental.fetch.session.cache.slots` default.
pub const CACHE_SLOTS_DEFAULT: usize = 1000;
/// Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`: a session is evictable for a new one
/// only after this long (since its creation for the worth-based rule, since its last use for
/// the stale rule).
pub const EVICTION_MS_MIN: u64 = 120_000;
/// The most partitions one session caches. Kafka has no such limit; Weir bounds memory with
/// it: each cached partition is ~100 bytes plus its topic name, so 1000 slots of full
/// sessions stay under ~200 MB. A fetcher with more partitions on one broker is answered
/// with full (sessionless) fetches, as when the cache is full.
pub const SESSION_PARTITIONS_MAX: usize = 2000;
/// A session id of 0 means "no session" on the wire.
pub const NO_SESSION: i32 = 0;
/// Session epoch 0: a full request asking for a new session.
pub const INITIAL_EPOCH: i32 = 0;
/// Session epoch -1: a full request that creates no session (and closes the named one).
pub const FINAL_EPOCH: i32 = -1;

/// The epoch after `epoch` (Kafka's `FetchMetadata.nextEpoch`): it wraps to 1, never to the
/// reserved 0 or -1.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// Who made a session. A session answers only to the same kind of fetcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A follower broker with this id (Kafka's "privileged" sessions).
    Replica(i32),
    Consumer,
}

impl Owner {
    fn privileged(self) -> bool {
        matches!(self, Owner::Replica(_))
    }
}

/// A partition as a Fetch request names it: by topic id (v13+, `topic` empty) or by name
/// (`topic_id` zero).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic: String,
    pub topic_id: [u8; 16],
    pub index: i32,
}

/// What a fetcher asks of one partition; an incremental request that does not list a
/// partition asks what it asked last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
    /// The fetcher's own log start (followers), -1 for consumers.
    pub log_start_offset: i64,
}

/// What a read of one partition produced, as far as deciding whether an incremental answer
/// must carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub records_bytes: usize,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub error_code: i16,
    /// A diverging epoch (KIP-320) or a leader hint: always answered.
    pub must_answer: bool,
}

#[derive(Debug, Clone)]
struct CachedPartition {
    key: PartitionKey,
    params: FetchParams,
    /// Last told the fetcher; -1 when never told or after an error, so the partition is
    /// answered again once the error is gone.
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

#[derive(Debug)]
struct Session {
    owner: Owner,
    uses_topic_ids: bool,
    /// In answer order; a partition that returned records moves to the back, so one busy
    /// partition can't take every answer's byte budget (Kafka does the same).
    partitions: Vec<CachedPartition>,
    /// The epoch the next incremental request must carry.
    next_epoch: i32,
    created_ms: u64,
    last_used_ms: u64,
}

impl Session {
    fn find(&self, key: &PartitionKey) -> Option<usize> {
        self.partitions.iter().position(|p| &p.key == key)
    }

    /// Kafka's `EvictableKey` order: unprivileged before privileged, then smaller first,
    /// then by id.
    fn worth(&self, id: i32) -> (bool, usize, i32) {
        (self.owner.privileged(), self.partitions.len(), id)
    }
}

/// What the handler reads for a request, and how it answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Context {
    /// Answer the listed partitions in full with session id 0 (epoch -1, an emptied session,
    /// or a session that would grow past its bound).
    Sessionless(Vec<(PartitionKey, FetchParams)>),
    /// Answer the listed partitions in full, then offer them to [`SessionCache::create`].
    Full(Vec<(PartitionKey, FetchParams)>),
    /// Read every partition of the session (in this order), then filter with
    /// [`SessionCache::answer`].
    Incremental {
        session_id: i32,
        /// The epoch the request carried.
        epoch: i32,
        partitions: Vec<(PartitionKey, FetchParams)>,
    },
    /// Answer with this top-level error, no partitions, session id 0.
    Error(ErrorCode),
}

/// Counters a test or an operator can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub created: u64,
    pub incremental_fetches: u64,
    pub evicted: u64,
}

/// The broker's fetch sessions, at most `slots_max` of them.
#[derive(Debug)]
pub struct SessionCache {
    slots_max: usize,
    eviction_ms: u64,
    sessions: HashMap<i32, Session>,
    ids: fastrand::Rng,
    stats: Stats,
}

impl SessionCache {
    /// `seed` feeds the session id generator (ids need to be unguessable only as far as a
    /// fetcher can't collide with another's by accident; the owner check does the rest).
    pub fn new(slots_max: usize, eviction_ms: u64, seed: u64) -> SessionCache {
        SessionCache {
            slots_max,
            eviction_ms,
            sessions: HashMap::new(),
            ids: fastrand::Rng::with_seed(seed),
            stats: Stats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every cached partition, over all sessions.
    pub fn cached_partitions(&self) -> usize {
        self.sessions.values().map(|s| s.partitions.len()).sum()
    }

    /// Kafka's `FetchManager.newContext`: decides what a request reads. An incremental
    /// request updates the session here (its listed partitions' parameters, the forgotten
    /// ones, the epoch), before anything is read, so a concurrent duplicate is caught by
    /// [`SessionCache::answer`].
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        &mut self,
        now_ms: u64,
        owner: Owner,
        uses_topic_ids: bool,
        session_id: i32,
        epoch: i32,
        listed: Vec<(PartitionKey, FetchParams)>,
        forgotten: &[PartitionKey],
    ) -> Context {
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            // A full request closes the session it names, if it is the fetcher's own.
            if session_id != NO_SESSION
                && self
                    .sessions
                    .get(&session_id)
                    .is_some_and(|s| s.owner == owner)
            {
                self.sessions.remove(&session_id);
            }
            return if epoch == FINAL_EPOCH {
                Context::Sessionless(listed)
            } else {
                Context::Full(listed)
            };
        }
        let Some(session) = self
            .sessions
            .get_mut(&session_id)
            .filter(|s| s.owner == owner)
        else {
            return Context::Error(ErrorCode::FetchSessionIdNotFound);
        };
        if session.next_epoch != epoch {
            return Context::Error(ErrorCode::InvalidFetchSessionEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return Context::Error(ErrorCode::FetchSessionTopicIdError);
        }
        for (key, params) in &listed {
            match session.find(key) {
                Some(i) => session.partitions[i].params = *params,
                None => session.partitions.push(CachedPartition {
                    key: key.clone(),
                    params: *params,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                }),
            }
        }
        session.partitions.retain(|p| !forgotten.contains(&p.key));
        if session.partitions.is_empty() || session.partitions.len() > SESSION_PARTITIONS_MAX {
            self.sessions.remove(&session_id);
            return Context::Sessionless(listed);
        }
        session.next_epoch = next_epoch(epoch);
        session.last_used_ms = now_ms;
        self.stats.incremental_fetches += 1;
        Context::Incremental {
            session_id,
            epoch,
            partitions: session
                .partitions
                .iter()
                .map(|p| (p.key.clone(), p.params))
                .collect(),
        }
    }

    /// Kafka's `FullFetchContext`: after a full request was read, cache a session of its
    /// partitions with what they were told. Returns the new session's id, or 0 when the
    /// cache has no room (the fetcher goes on with full fetches).
    pub fn create(
        &mut self,
        now_ms: u64,
        owner: Owner,
        uses_topic_ids: bool,
        partitions: Vec<(PartitionKey, FetchParams, Outcome)>,
    ) -> i32 {
        if partitions.len() > SESSION_PARTITIONS_MAX {
            return NO_SESSION;
        }
        if self.sessions.len() >= self.slots_max
            && !self.try_evict(owner.privileged(), partitions.len(), now_ms)
        {
            return NO_SESSION;
        }
        let id = loop {
            let id = self.ids.i32(1..=i32::MAX);
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let partitions = partitions
            .into_iter()
            .map(|(key, params, outcome)| CachedPartition {
                key,
                params,
                high_watermark: if outcome.error_code == 0 {
                    outcome.high_watermark
                } else {
                    -1
                },
                last_stable_offset: outcome.last_stable_offset,
                log_start_offset: outcome.log_start_offset,
            })
            .collect();
        self.sessions.insert(
            id,
            Session {
                owner,
                uses_topic_ids,
                partitions,
                next_epoch: next_epoch(INITIAL_EPOCH),
                created_ms: now_ms,
                last_used_ms: now_ms,
            },
        );
        self.stats.created += 1;
        id
    }

    /// Kafka's `tryEvict`: the least recently used session if it is stale; else the least
    /// worth among those old enough (for a follower, also any consumer's), if the new one is
    /// worth more. The new session's own id sorts first, so equal worth never evicts.
    fn try_evict(&mut self, privileged: bool, size: usize, now_ms: u64) -> bool {
        let Some((&lru_id, lru)) = self
            .sessions
            .iter()
            .min_by_key(|(id, s)| (s.last_used_ms, **id))
        else {
            return false;
        };
        if now_ms.saturating_sub(lru.last_used_ms) > self.eviction_ms {
            self.sessions.remove(&lru_id);
            self.stats.evicted += 1;
            return true;
        }
        let eviction_ms = self.eviction_ms;
        let old_enough = |s: &Session| now_ms.saturating_sub(s.created_ms) > eviction_ms;
        let victim = self
            .sessions
            .iter()
            .filter(|(_, s)| old_enough(s) || (privileged && !s.owner.privileged()))
            .map(|(id, s)| s.worth(*id))
            .min();
        match victim {
            Some(worth) if (privileged, size, 0) > worth => {
                self.sessions.remove(&worth.2);
                self.stats.evicted += 1;
                true
            }
            _ => false,
        }
    }

    /// Kafka's `IncrementalFetchContext.updateAndGenerateResponseData`: after an incremental
    /// request was read (`outcomes` in the order [`Context::Incremental`] gave), says which
    /// partitions the answer carries and remembers what they were told. A partition is
    /// answered when it has records, an error, a changed high watermark, last stable offset or
    /// log start, or something that must always be answered (divergence, a leader hint).
    /// Errors with INVALID_FETCH_SESSION_EPOCH if another request of the session came in
    /// meanwhile, FETCH_SESSION_ID_NOT_FOUND if the session is gone (evicted or closed).
    pub fn answer(
        &mut self,
        session_id: i32,
        epoch: i32,
        outcomes: &[(PartitionKey, Outcome)],
    ) -> Result<Vec<bool>, ErrorCode> {
        let session = self
            .sessions
            .get_mut(&session_id)
            .ok_or(ErrorCode::FetchSessionIdNotFound)?;
        if session.next_epoch != next_epoch(epoch) {
            return Err(ErrorCode::InvalidFetchSessionEpoch);
        }
        let mut keep = Vec::with_capacity(outcomes.len());
        let mut moved_back = Vec::new();
        for (key, outcome) in outcomes {
            let Some(i) = session.find(key) else {
                keep.push(false);
                continue;
            };
            let cached = &mut session.partitions[i];
            let mut answer = outcome.records_bytes > 0 || outcome.must_answer;
            if cached.high_watermark != outcome.high_watermark {
                answer = true;
                cached.high_watermark = outcome.high_watermark;
            }
            if cached.last_stable_offset != outcome.last_stable_offset {
                answer = true;
                cached.last_stable_offset = outcome.last_stable_offset;
            }
            if cached.log_start_offset != outcome.log_start_offset {
                answer = true;
                cached.log_start_offset = outcome.log_start_offset;
            }
            if outcome.error_code != 0 {
                answer = true;
                // So that the partition is answered again once the error is gone.
                cached.high_watermark = -1;
            }
            if outcome.records_bytes > 0 {
                moved_back.push(i);
            }
            keep.push(answer);
        }
        // Stable: the moved partitions keep their relative order behind the others.
        if !moved_back.is_empty() {
            let mut moved = Vec::with_capacity(moved_back.len());
            for &i in moved_back.iter().rev() {
                moved.push(session.partitions.remove(i));
            }
            moved.reverse();
            session.partitions.extend(moved);
        }
        Ok(keep)
    }

    /// Removes a session (tests; a full request closes through [`SessionCache::begin`]).
    pub fn remove(&mut self, session_id: i32) -> bool {
        self.sessions.remove(&session_id).is_some()
    }
}

/// The fetcher's half of a session (Kafka's `FetchSessionHandler`), as a replica fetcher
/// keeps it with one leader: the first request is full (epoch 0); once the leader answers
/// with a session id, each request lists only the partitions whose parameters changed since
/// they were last sent (a follower's fetch offset is its durable end, so a partition is
/// listed again whenever that end moves) and forgets those no longer wanted. Any session
/// error, a refused request or a lost connection starts a new full session.
#[derive(Debug, Default)]
pub struct FetcherSession {
    /// 0 until the leader grants a session.
    session_id: i32,
    /// The epoch the next request carries: 0 (full) until a session is granted.
    epoch: i32,
    /// What the leader's session holds for each partition, as last acknowledged.
    sent: HashMap<PartitionKey, FetchParams>,
    /// What the request in flight would make of `sent`, applied when it is answered.
    pending: Option<HashMap<PartitionKey, FetchParams>>,
}

/// One request a [`FetcherSession`] builds.
#[derive(Debug, PartialEq, Eq)]
pub struct FetcherRequest {
    pub session_id: i32,
    pub epoch: i32,
    /// The partitions to list, in the order wanted.
    pub to_send: Vec<(PartitionKey, FetchParams)>,
    pub to_forget: Vec<PartitionKey>,
}

impl FetcherSession {
    /// The session id and epoch the next request carries.
    pub fn state(&self) -> (i32, i32) {
        (self.session_id, self.epoch)
    }

    /// Builds the next request for exactly the `wanted` partitions.
    pub fn build(&mut self, wanted: Vec<(PartitionKey, FetchParams)>) -> FetcherRequest {
        let next: HashMap<PartitionKey, FetchParams> = wanted.iter().cloned().collect();
        let request = if self.epoch == INITIAL_EPOCH {
            FetcherRequest {
                session_id: self.session_id,
                epoch: INITIAL_EPOCH,
                to_send: wanted,
                to_forget: Vec::new(),
            }
        } else {
            let mut to_forget: Vec<PartitionKey> = self
                .sent
                .keys()
                .filter(|k| !next.contains_key(*k))
                .cloned()
                .collect();
            to_forget.sort();
            FetcherRequest {
                session_id: self.session_id,
                epoch: self.epoch,
                to_send: wanted
                    .into_iter()
                    .filter(|(k, p)| self.sent.get(k) != Some(p))
                    .collect(),
                to_forget,
            }
        };
        self.pending = Some(next);
        request
    }

    /// The answer to the last built request: its top-level error and session id.
    pub fn answered(&mut self, error_code: i16, session_id: i32) {
        let pending = self.pending.take();
        if error_code != 0 {
            // Kafka's handler: an unknown session starts from scratch; any other error
            // closes the session we have with the next, full, request.
            if error_code == ErrorCode::FetchSessionIdNotFound.code() {
                self.session_id = NO_SESSION;
            }
            self.restart();
            return;
        }
        if session_id == NO_SESSION {
            // No session granted (full request), or the leader closed ours (incremental):
            // keep asking for one with full requests.
            self.session_id = NO_SESSION;
            self.restart();
            return;
        }
        if self.epoch != INITIAL_EPOCH && session_id != self.session_id {
            // Not the session we spoke to: trust nothing cached.
            self.session_id = NO_SESSION;
            self.restart();
            return;
        }
        self.session_id = session_id;
        self.epoch = next_epoch(self.epoch);
        self.sent = pending.unwrap_or_default();
    }

    /// A request that got no answer (timeout, lost connection): what the leader's session
    /// holds is unknown, so the next request is full and closes it.
    pub fn failed(&mut self) {
        self.pending = None;
        self.restart();
    }

    fn restart(&mut self) {
        self.epoch = INITIAL_EPOCH;
        self.sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, index: i32) -> PartitionKey {
        PartitionKey {
            topic: topic.to_string(),
            topic_id: [0; 16],
            index,
        }
    }

    fn params(fetch_offset: i64) -> FetchParams {
        FetchParams {
            fetch_offset,
            max_bytes: 1 << 20,
            current_leader_epoch: 0,
            last_fetched_epoch: -1,
            log_start_offset: -1,
        }
    }

    fn outcome(hw: i64) -> Outcome {
        Outcome {
            high_watermark: hw,
            last_stable_offset: hw,
            log_start_offset: 0,
            ..Outcome::default()
        }
    }

    /// A session of `n` partitions `t-0..t-n` made at `now_ms`, each told hw 10.
    fn session_of(cache: &mut SessionCache, now_ms: u64, owner: Owner, n: i32) -> i32 {
        let parts = (0..n)
            .map(|i| (key("t", i), params(0), outcome(10)))
            .collect();
        cache.create(now_ms, owner, false, parts)
    }

    fn incremental(
        cache: &mut SessionCache,
        id: i32,
        epoch: i32,
        listed: Vec<(PartitionKey, FetchParams)>,
        forgotten: &[PartitionKey],
    ) -> Vec<(PartitionKey, FetchParams)> {
        match cache.begin(0, Owner::Consumer, false, id, epoch, listed, forgotten) {
            Context::Incremental { partitions, .. } => partitions,
            other => panic!("expected an incremental context, got {other:?}"),
        }
    }

    #[test]
    fn epochs_wrap_to_one_and_final_stays_final() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), -1);
    }

    #[test]
    fn full_request_creates_a_session_that_takes_epoch_one_then_two() {
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 7);
        let ctx = cache.begin(
            0,
            Owner::Consumer,
            false,
            0,
            0,
            vec![(key("t", 0), params(5))],
            &[],
        );
        assert_eq!(ctx, Context::Full(vec![(key("t", 0), params(5))]));
        let id = session_of(&mut cache, 0, Owner::Consumer, 1);
        assert_ne!(id, NO_SESSION);
        // The cached fetch offset stands in for a partition the request does not list.
        assert_eq!(
            incremental(&mut cache, id, 1, vec![], &[]),
            vec![(key("t", 0), params(0))]
        );
        assert_eq!(
            incremental(&mut cache, id, 2, vec![(key("t", 0), params(9))], &[]),
            vec![(key("t", 0), params(9))]
        );
        // And the updated offset is what the next unlisted fetch uses.
        assert_eq!(
            incremental(&mut cache, id, 3, vec![], &[]),
            vec![(key("t", 0), params(9))]
        );
        assert_eq!(cache.stats().incremental_fetches, 3);
    }

    #[test]
    fn a_wrong_epoch_an_unknown_id_or_a_topic_id_change_is_refused() {
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 7);
        let id = session_of(&mut cache, 0, Owner::Consumer, 1);
        for epoch in [2, 5, i32::MAX] {
            assert_eq!(
                cache.begin(0, Owner::Consumer, false, id, epoch, vec![], &[]),
                Context::Error(ErrorCode::InvalidFetchSessionEpoch)
            );
        }
        assert_eq!(
            cache.begin(
                0,
                Owner::Consumer,
                false,
                id.wrapping_add(1).max(1),
                1,
                vec![],
                &[]
            ),
            Context::Error(ErrorCode::FetchSessionIdNotFound)
        );
        // Session id 0 with an incremental epoch names no session.
        assert_eq!(
            cache.begin(0, Owner::Consumer, false, 0, 1, vec![], &[]),
            Context::Error(ErrorCode::FetchSessionIdNotFound)
        );
        assert_eq!(
            cache.begin(0, Owner::Consumer, true, id, 1, vec![], &[]),
            Context::Error(ErrorCode::FetchSessionTopicIdError)
        );
        // A refused request does not use up the epoch.
        assert_eq!(incremental(&mut cache, id, 1, vec![], &[]).len(), 1);
    }

    #[test]
    fn a_session_answers_only_to_the_fetcher_kind_that_made_it() {
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 7);
        let id = session_of(&mut cache, 0, Owner::Replica(2), 1);
        for other in [Owner::Consumer, Owner::Replica(3)] {
            assert_eq!(
                cache.begin(0, other, false, id, 1, vec![], &[]),
                Context::Error(ErrorCode::FetchSessionIdNotFound)
            );
            // Nor can it close it.
            cache.begin(0, other, false, id, FINAL_EPOCH, vec![], &[]);
        }
        assert!(matches!(
            cache.begin(0, Owner::Replica(2), false, id, 1, vec![], &[]),
            Context::Incremental { .. }
        ));
    }

    #[test]
    fn final_and_initial_epochs_close_the_named_session() {
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 7);
        let a = session_of(&mut cache, 0, Owner::Consumer, 1);
        let ctx = cache.begin(0, Owner::Consumer, false, a, FINAL_EPOCH, vec![], &[]);
        assert_eq!(ctx, Context::Sessionless(vec![]));
        assert!(cache.is_empty());
        let b = session_of(&mut cache, 0, Owner::Consumer, 1);
        assert!(matches!(
            cache.begin(0, Owner::Consumer, false, b, INITIAL_EPOCH, vec![], &[]),
            Context::Full(_)
        ));
        assert!(cache.is_empty());
        assert_eq!(
            cache.begin(0, Owner::Consumer, false, b, 1, vec![], &[]),
            Context::Error(ErrorCode::FetchSessionIdNotFound)
        );
    }

    #[test]
    fn forgotten_partitions_leave_and_forgetting_all_closes_the_session() {
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 7);
        let id = session_of(&mut cache, 0, Owner::Consumer, 3);
        let left = incremental(
            &mut cache,
            id,
            1,
            vec![(key("u", 0), params(4))],
            &[key("t", 1)],
        );
        let keys: Vec<_> = left.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![key("t", 0), key("t", 2), key("u", 0)]);
        let ctx = cache.begin(
            0,
            Owner::Consumer,
            false,
            id,
            2,
            vec![],
            &[key("t", 0), key("t", 2), key("u", 0)],
        );
        assert_eq!(ctx, Context::Sessionless(vec![]));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_session_never_grows_past_its_partition_bound() {
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 7);
        let too_many = SESSION_PARTITIONS_MAX as i32 + 1;
        assert_eq!(
            session_of(&mut cache, 0, Owner::Consumer, too_many),
            NO_SESSION
        );
        let id = session_of(
            &mut cache,
            0,
            Owner::Consumer,
            SESSION_PARTITIONS_MAX as i32,
        );
        assert_ne!(id, NO_SESSION);
        let ctx = cache.begin(
            0,
            Owner::Consumer,
            false,
            id,
            1,
            vec![(key("x", 0), params(0))],
            &[],
        );
        assert_eq!(ctx, Context::Sessionless(vec![(key("x", 0), params(0))]));
        assert!(cache.is_empty());
    }

    #[test]
    fn incremental_answers_carry_only_partitions_with_something_new() {
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 7);
        let id = session_of(&mut cache, 0, Owner::Consumer, 6);
        incremental(&mut cache, id, 1, vec![], &[]);
        let same = outcome(10);
        let outcomes = vec![
            (key("t", 0), same),
            (
                key("t", 1),
                Outcome {
                    records_bytes: 100,
                    ..same
                },
            ),
            (key("t", 2), outcome(11)),
            (
                key("t", 3),
                Outcome {
                    log_start_offset: 3,
                    ..same
                },
            ),
            (
                key("t", 4),
                Outcome {
                    error_code: 6,
                    ..same
                },
            ),
            (
                key("t", 5),
                Outcome {
                    must_answer: true,
                    ..same
                },
            ),
        ];
        assert_eq!(
            cache.answer(id, 1, &outcomes),
            Ok(vec![false, true, true, true, true, true])
        );
        // Told once, the same values are not answered again; the error's partition is
        // answered when its error is gone, though its watermark did not change.
        incremental(&mut cache, id, 2, vec![], &[]);
        let again = vec![
            (key("t", 0), same),
            (key("t", 2), outcome(11)),
            (
                key("t", 3),
                Outcome {
                    log_start_offset: 3,
                    ..same
                },
            ),
            (key("t", 4), same),
            (key("t", 5), same),
            (
                key("t", 1),
                Outcome {
                    last_stable_offset: 9,
                    ..same
                },
            ),
        ];
        assert_eq!(
            cache.answer(id, 2, &again),
            Ok(vec![false, false, false, true, false, true])
        );
    }

    #[test]
    fn partitions_that_returned_records_move_to_the_back() {
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 7);
        let id = session_of(&mut cache, 0, Owner::Consumer, 3);
        let order = incremental(&mut cache, id, 1, vec![], &[]);
        let outcomes: Vec<_> = order
            .iter()
            .map(|(k, _)| {
                let records_bytes = if k.index == 0 { 10 } else { 0 };
                (
                    k.clone(),
                    Outcome {
                        records_bytes,
                        ..outcome(10)
                    },
                )
            })
            .collect();
        cache.answer(id, 1, &outcomes).unwrap();
        let keys: Vec<i32> = incremental(&mut cache, id, 2, vec![], &[])
            .iter()
            .map(|(k, _)| k.index)
            .collect();
        assert_eq!(keys, vec![1, 2, 0]);
    }

    #[test]
    fn a_duplicate_request_in_flight_gets_an_epoch_error_at_answer_time() {
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 7);
        let id = session_of(&mut cache, 0, Owner::Consumer, 1);
        incremental(&mut cache, id, 1, vec![], &[]);
        incremental(&mut cache, id, 2, vec![], &[]);
        assert_eq!(
            cache.answer(id, 1, &[(key("t", 0), outcome(10))]),
            Err(ErrorCode::InvalidFetchSessionEpoch)
        );
        assert!(cache.answer(id, 2, &[(key("t", 0), outcome(10))]).is_ok());
        cache.remove(id);
        assert_eq!(
            cache.answer(id, 2, &[]),
            Err(ErrorCode::FetchSessionIdNotFound)
        );
    }

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let mut cache = SessionCache::new(5000, EVICTION_MS_MIN, 1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5000 {
            let id = session_of(&mut cache, 0, Owner::Consumer, 1);
            assert!(id > 0);
            assert!(seen.insert(id), "id {id} handed out twice");
        }
        assert_eq!(cache.len(), 5000);
    }

    #[test]
    fn a_full_cache_refuses_a_new_session_until_one_is_evictable() {
        let mut cache = SessionCache::new(2, EVICTION_MS_MIN, 3);
        session_of(&mut cache, 0, Owner::Consumer, 5);
        session_of(&mut cache, 0, Owner::Consumer, 5);
        // Young sessions are kept, even for a larger newcomer.
        assert_eq!(
            session_of(&mut cache, 1_000, Owner::Consumer, 50),
            NO_SESSION
        );
        assert_eq!(cache.stats().evicted, 0);
    }

    #[test]
    fn a_stale_session_is_evicted_first() {
        let mut cache = SessionCache::new(2, EVICTION_MS_MIN, 3);
        let stale = session_of(&mut cache, 0, Owner::Replica(2), 50);
        let fresh = session_of(&mut cache, 100_000, Owner::Consumer, 1);
        let now = EVICTION_MS_MIN + 1_000;
        let new = session_of(&mut cache, now, Owner::Consumer, 1);
        assert_ne!(new, NO_SESSION);
        assert_eq!(
            cache.begin(now, Owner::Replica(2), false, stale, 1, vec![], &[]),
            Context::Error(ErrorCode::FetchSessionIdNotFound)
        );
        assert!(matches!(
            cache.begin(now, Owner::Consumer, false, fresh, 1, vec![], &[]),
            Context::Incremental { .. }
        ));
    }

    #[test]
    fn larger_or_follower_sessions_evict_smaller_old_ones_but_equals_do_not() {
        let mut cache = SessionCache::new(2, EVICTION_MS_MIN, 3);
        let small = session_of(&mut cache, 0, Owner::Consumer, 2);
        let big = session_of(&mut cache, 0, Owner::Consumer, 8);
        // Old enough (created long ago) but used recently, so not stale.
        let now = EVICTION_MS_MIN + 10;
        for id in [small, big] {
            incremental(&mut cache, id, 1, vec![], &[]);
            cache.sessions.get_mut(&id).unwrap().last_used_ms = now;
        }
        // Equal worth: no eviction.
        assert_eq!(session_of(&mut cache, now, Owner::Consumer, 2), NO_SESSION);
        // Larger: evicts the smallest.
        let larger = session_of(&mut cache, now, Owner::Consumer, 3);
        assert_ne!(larger, NO_SESSION);
        assert!(!cache.sessions.contains_key(&small));
        assert!(cache.sessions.contains_key(&big));
        // A follower's session, however small, evicts a consumer's, even a young one.
        let follower = session_of(&mut cache, now, Owner::Replica(2), 1);
        assert_ne!(follower, NO_SESSION);
        assert!(!cache.sessions.contains_key(&larger));
        // And a consumer can't evict a follower's session, even a larger consumer.
        let later = now + 10;
        cache.sessions.get_mut(&big).unwrap().last_used_ms = later;
        cache.sessions.get_mut(&follower).unwrap().last_used_ms = later;
        // Make the follower's session old enough to be evictable at all.
        cache.sessions.get_mut(&follower).unwrap().created_ms = 0;
        assert_eq!(
            session_of(&mut cache, later, Owner::Consumer, 1),
            NO_SESSION
        );
        // A consumer with more partitions evicts the old consumer session, not the follower's.
        assert_ne!(
            session_of(&mut cache, later, Owner::Consumer, 9),
            NO_SESSION
        );
        assert!(cache.sessions.contains_key(&follower));
        assert!(!cache.sessions.contains_key(&big));
    }

    #[test]
    fn a_young_follower_session_is_safe_from_a_larger_consumer() {
        let mut cache = SessionCache::new(1, EVICTION_MS_MIN, 3);
        let follower = session_of(&mut cache, 0, Owner::Replica(2), 1);
        assert_eq!(session_of(&mut cache, 10, Owner::Consumer, 100), NO_SESSION);
        assert!(cache.sessions.contains_key(&follower));
    }

    fn fetcher_round(
        fetcher: &mut FetcherSession,
        wanted: &[(PartitionKey, FetchParams)],
        granted: i32,
    ) -> FetcherRequest {
        let request = fetcher.build(wanted.to_vec());
        fetcher.answered(0, granted);
        request
    }

    #[test]
    fn a_fetcher_lists_only_what_changed_and_forgets_what_it_dropped() {
        let mut fetcher = FetcherSession::default();
        let a = (key("t", 0), params(0));
        let b = (key("t", 1), params(0));
        let first = fetcher_round(&mut fetcher, &[a.clone(), b.clone()], 77);
        assert_eq!((first.session_id, first.epoch), (0, 0));
        assert_eq!(first.to_send.len(), 2);
        // Nothing moved: an incremental request listing nothing.
        let second = fetcher_round(&mut fetcher, &[a.clone(), b.clone()], 77);
        assert_eq!((second.session_id, second.epoch), (77, 1));
        assert!(second.to_send.is_empty() && second.to_forget.is_empty());
        // b's end moved: only b is listed again.
        let b2 = (key("t", 1), params(5));
        let third = fetcher_round(&mut fetcher, &[a.clone(), b2.clone()], 77);
        assert_eq!(third.epoch, 2);
        assert_eq!(third.to_send, vec![b2.clone()]);
        // a dropped (backing off), c added.
        let c = (key("u", 0), params(3));
        let fourth = fetcher_round(&mut fetcher, &[b2.clone(), c.clone()], 77);
        assert_eq!(fourth.to_send, vec![c.clone()]);
        assert_eq!(fourth.to_forget, vec![key("t", 0)]);
        // a back: listed in full again.
        let fifth = fetcher_round(&mut fetcher, &[a.clone(), b2, c], 77);
        assert_eq!(fifth.to_send, vec![a]);
        assert_eq!(fifth.epoch, 4);
    }

    #[test]
    fn a_fetcher_starts_a_full_session_after_any_error() {
        let wanted = vec![(key("t", 0), params(0))];
        let mut fetcher = FetcherSession::default();
        fetcher_round(&mut fetcher, &wanted, 9);
        assert_eq!(fetcher.state(), (9, 1));
        fetcher.build(wanted.clone());
        fetcher.answered(ErrorCode::InvalidFetchSessionEpoch.code(), 0);
        // Close the old session and open a new one: full, naming the old id.
        let full = fetcher.build(wanted.clone());
        assert_eq!((full.session_id, full.epoch, full.to_send.len()), (9, 0, 1));
        fetcher.answered(0, 10);
        assert_eq!(fetcher.state(), (10, 1));
        fetcher.build(wanted.clone());
        fetcher.answered(ErrorCode::FetchSessionIdNotFound.code(), 0);
        assert_eq!(fetcher.state(), (0, 0));
        fetcher_round(&mut fetcher, &wanted, 11);
        fetcher.build(wanted.clone());
        fetcher.failed();
        let after_loss = fetcher.build(wanted.clone());
        assert_eq!((after_loss.session_id, after_loss.epoch), (11, 0));
        assert_eq!(after_loss.to_send, wanted);
        // The leader granting no session: full requests go on.
        fetcher.answered(0, 0);
        assert_eq!(fetcher.state(), (0, 0));
        assert_eq!(fetcher.build(wanted.clone()).to_send, wanted);
    }

    #[test]
    fn a_fetcher_and_the_cache_agree_on_the_session_partitions() {
        // Both halves driven together: every partition the fetcher wants is read by the
        // leader with the fetcher's current parameters, listed or not.
        let mut cache = SessionCache::new(10, EVICTION_MS_MIN, 5);
        let mut fetcher = FetcherSession::default();
        let owner = Owner::Replica(2);
        let mut offsets = [0i64, 0, 0];
        for round in 0..20u32 {
            if round % 3 == 1 {
                offsets[(round as usize) % 3] += 7;
            }
            let wanted: Vec<_> = (0..3)
                .filter(|i| !(round % 5 == 4 && *i == 2))
                .map(|i| (key("t", i), params(offsets[i as usize])))
                .collect();
            let request = fetcher.build(wanted.clone());
            let ctx = cache.begin(
                u64::from(round),
                owner,
                false,
                request.session_id,
                request.epoch,
                request.to_send,
                &request.to_forget,
            );
            let (read, granted) = match ctx {
                Context::Full(parts) => {
                    let with = parts
                        .iter()
                        .map(|(k, p)| (k.clone(), *p, outcome(1)))
                        .collect();
                    let id = cache.create(u64::from(round), owner, false, with);
                    (parts, id)
                }
                Context::Incremental {
                    partitions,
                    session_id,
                    epoch,
                } => {
                    let outcomes: Vec<_> = partitions
                        .iter()
                        .map(|(k, _)| (k.clone(), outcome(1)))
                        .collect();
                    cache.answer(session_id, epoch, &outcomes).unwrap();
                    (partitions, session_id)
                }
                other => panic!("round {round}: {other:?}"),
            };
            let mut read = read;
            read.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(read, wanted, "round {round}");
            fetcher.answered(0, granted);
        }
        assert!(cache.stats().incremental_fetches >= 15);
    }
}

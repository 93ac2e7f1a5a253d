//! KIP-227 incremental fetch sessions as a consumer sees them, with raw Fetch requests: the
//! session id, epochs and the partitions an incremental answer leaves out are wire details
//! no client exposes. (A follower's session: `replica_fetch.rs`; a real client using
//! sessions: `tests/compat/test_fetch_sessions.py`, kafka-python.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_protocol::api::ApiKey;
use weir_protocol::messages::fetch::{
    FetchPartition, FetchRequest, FetchResponse, FetchTopic, ForgottenTopic, ReplicaState,
};

use super::cluster_harness::{call, metadata};
use super::harness::{Broker, create_topic};

const TOPIC: &str = "fetch-sessions";
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const UNKNOWN_TOPIC_ID: i16 = 100;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;
/// Topic ids on the wire from v13; v12 names topics.
const VERSION: i16 = 16;
const VERSION_BY_NAME: i16 = 12;

fn produce_to(broker: &Broker, partition: i32, value: &str) {
    let producer: BaseProducer = broker
        .client_config()
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::<(), str>::to(TOPIC)
                .partition(partition)
                .payload(value),
        )
        .expect("queue record");
    producer
        .flush(Duration::from_secs(10))
        .expect("record acknowledged");
}

fn partition(index: i32, fetch_offset: i64) -> FetchPartition {
    FetchPartition {
        partition: index,
        current_leader_epoch: -1,
        fetch_offset,
        last_fetched_epoch: -1,
        log_start_offset: -1,
        partition_max_bytes: 1 << 20,
        ..Default::default()
    }
}

/// A consumer's Fetch (no waiting) at `version`.
fn request(
    session_id: i32,
    session_epoch: i32,
    topics: Vec<FetchTopic>,
    forgotten: Vec<ForgottenTopic>,
) -> FetchRequest {
    FetchRequest {
        replica_id: -1,
        replica_state: ReplicaState {
            replica_id: -1,
            replica_epoch: -1,
        },
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
        session_id,
        session_epoch,
        topics,
        forgotten_topics_data: forgotten,
        ..Default::default()
    }
}

fn fetch(addr: SocketAddr, version: i16, request: &FetchRequest) -> FetchResponse {
    call(addr, ApiKey::Fetch, version, request).expect("fetch")
}

/// partition index -> (error code, high watermark, record bytes) of an answer.
fn answered(response: &FetchResponse) -> BTreeMap<i32, (i16, i64, usize)> {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            (
                p.partition_index,
                (
                    p.error_code,
                    p.high_watermark,
                    p.records.as_ref().map_or(0, |r| r.len()),
                ),
            )
        })
        .collect()
}

fn by_id(topic_id: [u8; 16], partitions: Vec<FetchPartition>) -> Vec<FetchTopic> {
    vec![FetchTopic {
        topic: String::new(),
        topic_id,
        partitions,
    }]
}

fn forget(topic_id: [u8; 16], partitions: Vec<i32>) -> Vec<ForgottenTopic> {
    vec![ForgottenTopic {
        topic: String::new(),
        topic_id,
        partitions,
    }]
}

#[test]
fn consumer_session_goes_incremental_forgets_and_closes() {
    let broker = Broker::start(&[]);
    create_topic(&broker, TOPIC, 3, &[]);
    produce_to(&broker, 0, "first");
    let addr = broker.addr;
    let topic_id = metadata(addr, Some(&[TOPIC])).expect("metadata").topics[0].topic_id;

    // Full request, epoch 0: a session is created and every partition answered.
    let full = fetch(
        addr,
        VERSION,
        &request(
            0,
            0,
            by_id(topic_id, (0..3).map(|i| partition(i, 0)).collect()),
            vec![],
        ),
    );
    assert_eq!(full.error_code, 0);
    let session = full.session_id;
    assert_ne!(
        session, 0,
        "a full request with epoch 0 must create a session"
    );
    let parts = answered(&full);
    assert_eq!(parts.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(parts[&0].2 > 0, "partition 0's record: {parts:?}");

    // Epoch 1, moving partition 0 past its record: nothing is new anywhere, so the answer
    // lists no partition at all.
    let quiet = fetch(
        addr,
        VERSION,
        &request(session, 1, by_id(topic_id, vec![partition(0, 1)]), vec![]),
    );
    assert_eq!((quiet.error_code, quiet.session_id), (0, session));
    assert!(answered(&quiet).is_empty(), "{quiet:?}");

    // A record on partition 1, fetched from the session's cached offset 0: only partition 1
    // is answered, with the record and its new high watermark.
    produce_to(&broker, 1, "second");
    let news = fetch(addr, VERSION, &request(session, 2, vec![], vec![]));
    assert_eq!((news.error_code, news.session_id), (0, session));
    let parts = answered(&news);
    assert_eq!(
        parts.keys().copied().collect::<Vec<_>>(),
        vec![1],
        "{parts:?}"
    );
    assert_eq!(parts[&1].1, 1);
    assert!(parts[&1].2 > 0);

    // The same epoch again is a stale request; an epoch ahead is one too.
    for epoch in [2, 9] {
        let stale = fetch(addr, VERSION, &request(session, epoch, vec![], vec![]));
        assert_eq!(
            stale.error_code, INVALID_FETCH_SESSION_EPOCH,
            "epoch {epoch}"
        );
        assert!(stale.responses.is_empty());
    }
    // Named by topic (v12) a session made with topic ids can't be used.
    let by_name = fetch(addr, VERSION_BY_NAME, &request(session, 3, vec![], vec![]));
    assert_eq!(by_name.error_code, FETCH_SESSION_TOPIC_ID_ERROR);
    // A replica's request can't use a consumer's session.
    let mut as_replica = request(session, 3, vec![], vec![]);
    as_replica.replica_state = ReplicaState {
        replica_id: 2,
        replica_epoch: 5,
    };
    assert_eq!(
        fetch(addr, VERSION, &as_replica).error_code,
        FETCH_SESSION_ID_NOT_FOUND
    );

    // None of those used up epoch 3. Forget partitions 1 and 2 and add an unknown topic id:
    // its partition is answered with UNKNOWN_TOPIC_ID, and partition 1's new record is not
    // (forgotten).
    produce_to(&broker, 1, "third");
    let unknown = [7u8; 16];
    let topics = by_id(unknown, vec![partition(0, 0)]);
    let forgot = fetch(
        addr,
        VERSION,
        &request(session, 3, topics, forget(topic_id, vec![1, 2])),
    );
    assert_eq!((forgot.error_code, forgot.session_id), (0, session));
    let codes: Vec<([u8; 16], i32, i16)> = forgot
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.topic_id, p.partition_index, p.error_code))
        })
        .collect();
    assert_eq!(codes, vec![(unknown, 0, UNKNOWN_TOPIC_ID)]);

    // Epoch 4 forgets the unknown topic too; partition 0 gets a record and is the only one
    // answered.
    produce_to(&broker, 0, "fourth");
    let only_zero = fetch(
        addr,
        VERSION,
        &request(session, 4, vec![], forget(unknown, vec![0])),
    );
    let parts = answered(&only_zero);
    assert_eq!(
        parts.keys().copied().collect::<Vec<_>>(),
        vec![0],
        "{parts:?}"
    );
    assert_eq!(parts[&0].1, 2);

    // FINAL (epoch -1) closes the session; the answer is a sessionless full one.
    let closed = fetch(
        addr,
        VERSION,
        &request(session, -1, by_id(topic_id, vec![partition(2, 0)]), vec![]),
    );
    assert_eq!((closed.error_code, closed.session_id), (0, 0));
    assert_eq!(
        answered(&closed).keys().copied().collect::<Vec<_>>(),
        vec![2]
    );
    let gone = fetch(addr, VERSION, &request(session, 5, vec![], vec![]));
    assert_eq!(gone.error_code, FETCH_SESSION_ID_NOT_FOUND);
    assert!(gone.responses.is_empty());
}

#[test]
fn forgetting_every_partition_closes_the_session_and_sessionless_fetches_stay_full() {
    let broker = Broker::start(&[]);
    create_topic(&broker, TOPIC, 1, &[]);
    let addr = broker.addr;
    let topic_id = metadata(addr, Some(&[TOPIC])).expect("metadata").topics[0].topic_id;
    let full = fetch(
        addr,
        VERSION,
        &request(0, 0, by_id(topic_id, vec![partition(0, 0)]), vec![]),
    );
    let session = full.session_id;
    assert_ne!(session, 0);
    // Forgetting the last partition: the session closes and the answer is sessionless.
    let emptied = fetch(
        addr,
        VERSION,
        &request(session, 1, vec![], forget(topic_id, vec![0])),
    );
    assert_eq!((emptied.error_code, emptied.session_id), (0, 0));
    assert_eq!(
        fetch(addr, VERSION, &request(session, 2, vec![], vec![])).error_code,
        FETCH_SESSION_ID_NOT_FOUND
    );
    // Session id 0 with epoch -1 (librdkafka, older clients): full answers, no session, the
    // unchanged partition answered every time.
    for _ in 0..2 {
        let sessionless = fetch(
            addr,
            VERSION,
            &request(0, -1, by_id(topic_id, vec![partition(0, 0)]), vec![]),
        );
        assert_eq!((sessionless.error_code, sessionless.session_id), (0, 0));
        assert_eq!(answered(&sessionless).len(), 1);
    }
    // Epoch 0 naming the old (closed) id: a new session, never the same id while live.
    let again = fetch(
        addr,
        VERSION,
        &request(session, 0, by_id(topic_id, vec![partition(0, 0)]), vec![]),
    );
    assert_eq!(again.error_code, 0);
    assert_ne!(again.session_id, 0);
}

#[test]
fn a_broker_with_no_session_slots_answers_every_fetch_in_full() {
    let broker = Broker::start(&["--max-incremental-fetch-session-cache-slots", "0"]);
    create_topic(&broker, TOPIC, 1, &[]);
    let addr = broker.addr;
    let topic_id = metadata(addr, Some(&[TOPIC])).expect("metadata").topics[0].topic_id;
    let full = fetch(
        addr,
        VERSION,
        &request(0, 0, by_id(topic_id, vec![partition(0, 0)]), vec![]),
    );
    assert_eq!((full.error_code, full.session_id), (0, 0));
    assert_eq!(answered(&full).len(), 1);
}

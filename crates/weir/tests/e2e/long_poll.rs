//! A librdkafka consumer's long-poll fetch (fetch.wait.max.ms = 10 s) is
//! answered as soon as a record lands in the partition it waits on. Fetches
//! wait on per-partition notifications, so this checks that the partition's
//! own wake-up works; a record in another topic must not reach the consumer.
//! (That another partition's append no longer wakes the fetch at all is not
//! visible from outside: a spurious wake re-reads and parks again.)

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::harness::{Broker, create_topic};

/// The broker may hold an empty fetch this long.
const FETCH_WAIT_MS: u64 = 10_000;
/// A woken fetch answers well inside the wait; a missed wake-up would not.
const WAKE_WITHIN: Duration = Duration::from_secs(3);

fn produce_one(broker: &Broker, topic: &str, value: &str) {
    let producer: BaseProducer = broker
        .client_config()
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    producer
        .send(BaseRecord::<(), str>::to(topic).payload(value))
        .expect("queue record");
    producer
        .flush(Duration::from_secs(10))
        .expect("record acknowledged");
}

#[test]
fn long_poll_fetch_wakes_on_its_partitions_append() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "lp-watched", 1, &[]);
    create_topic(&broker, "lp-other", 1, &[]);

    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "lp-test")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS.to_string())
        .set("fetch.min.bytes", "1")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("lp-watched", 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&assignment).expect("assign");
    // Let the consumer settle into a parked fetch on the empty partition.
    let settle_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle_until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            panic!("empty partition returned a record at offset {}", m.offset());
        }
    }

    // A record elsewhere is not for this consumer.
    produce_one(&broker, "lp-other", "elsewhere");
    let quiet_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < quiet_until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            panic!("got a record from {} it did not ask for", m.topic());
        }
    }

    produce_one(&broker, "lp-watched", "here");
    let acked = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                assert_eq!(m.payload(), Some(&b"here"[..]));
                break;
            }
            Some(Err(e)) if e.to_string().contains("oordinator") => {}
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
        assert!(
            acked.elapsed() < WAKE_WITHIN,
            "the parked fetch was not answered within {WAKE_WITHIN:?} of the append"
        );
    }
    // The consumer has its next fetch parked; stopping the broker first
    // spares its close the wait for that fetch's 10 s.
    drop(broker);
}

//! The librdkafka idempotent producer (enable.idempotence=true, 5 in flight,
//! acks=all) keeps producing while the broker is killed with kill -9 and
//! restarted 20 times. Requests in flight at each kill are retried with the
//! same producer id and sequences; the broker's producer state, rebuilt from
//! its snapshot and the log after each restart, must recognise the ones it
//! had already written. Every record ends up in the log exactly once, in
//! order, with no gap.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use super::harness::{Broker, create_topic};
use super::rdkafka_roundtrip::{AckContext, Acks, consume_all};

const PARTITIONS: i32 = 3;
const KILLS: usize = 20;
/// A cap on records sent, so the read-back stays quick whatever the pace.
const RECORDS_MAX: usize = 1_000_000;
/// Records sent per millisecond: about 10k/s, a steady stream through every kill.
const RECORDS_PER_MS: usize = 10;
/// Acks that must arrive after a restart before the next kill: the producer is back.
const ACKS_BETWEEN_KILLS_MIN: usize = 500;

#[test]
fn idempotent_producer_writes_each_record_once_across_kill9_restarts() {
    let broker = Broker::start(&[]);
    let topic = "idempotent-crash";
    create_topic(&broker, topic, PARTITIONS, &[]);
    let acks = Arc::new(Acks::default());
    let producer: ThreadedProducer<AckContext> = broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        // Records wait out every restart instead of failing.
        .set("message.timeout.ms", "300000")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "200")
        .create_with_context(AckContext(acks.clone()))
        .expect("producer");

    let killing_done = Arc::new(AtomicBool::new(false));
    let killer = {
        let done = Arc::clone(&killing_done);
        let acks = Arc::clone(&acks);
        let mut broker = broker;
        std::thread::spawn(move || {
            for kill in 0..KILLS {
                // Let some acks in first, so each kill lands mid-stream.
                let before = acks.placed.lock().unwrap().len();
                let started = Instant::now();
                while acks.placed.lock().unwrap().len() < before + ACKS_BETWEEN_KILLS_MIN
                    && started.elapsed() < Duration::from_secs(20)
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::thread::sleep(Duration::from_millis(20 + (37 * kill as u64) % 150));
                broker.kill9();
                broker.restart();
                eprintln!(
                    "kill {kill}: {} acks, {:?} since the previous restart",
                    acks.placed.lock().unwrap().len(),
                    started.elapsed()
                );
            }
            done.store(true, Ordering::SeqCst);
            broker
        })
    };

    let mut sent = 0usize;
    let started = Instant::now();
    while !killing_done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(240) {
        if sent >= RECORDS_MAX {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let key = format!("k{sent}");
        let value = format!("v{sent}");
        let record: BaseRecord<'_, String, String, Box<usize>> =
            BaseRecord::with_opaque_to(topic, Box::new(sent))
                .partition(sent as i32 % PARTITIONS)
                .key(&key)
                .payload(&value);
        match producer.send(record) {
            Ok(()) => sent += 1,
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
        if sent.is_multiple_of(RECORDS_PER_MS) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let broker = killer.join().expect("killer thread");
    assert!(
        killing_done.load(Ordering::SeqCst),
        "the kills did not finish in time"
    );
    producer.flush(Duration::from_secs(120)).expect("flush");
    drop(producer);

    let failed = acks.failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} deliveries failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let acked: HashMap<(i32, i64), usize> = acks.placed.lock().unwrap().clone();
    assert_eq!(acked.len(), sent, "every record sent was acknowledged");

    let seen = consume_all(&broker, topic, PARTITIONS, sent);
    let mut times_seen: HashMap<usize, usize> = HashMap::new();
    let mut next_in_partition: HashMap<i32, (i64, usize)> = HashMap::new();
    for (partition, offset, record) in &seen {
        let key = String::from_utf8(record.key.clone().expect("key")).unwrap();
        let index: usize = key[1..].parse().unwrap();
        assert_eq!(
            record.value.as_deref(),
            Some(format!("v{index}").as_bytes())
        );
        *times_seen.entry(index).or_default() += 1;
        assert_eq!(
            times_seen[&index], 1,
            "record {index} is in the log twice (second at {partition}/{offset}): a retry was appended again"
        );
        // Partition p holds p, p+3, p+6, ... at offsets 0, 1, 2, ...: no gap, no reordering.
        let (want_offset, want_index) = next_in_partition
            .get(partition)
            .copied()
            .unwrap_or((0, *partition as usize));
        assert_eq!(
            (*offset, index),
            (want_offset, want_index),
            "partition {partition}: expected record {want_index} at offset {want_offset}"
        );
        next_in_partition.insert(*partition, (offset + 1, index + PARTITIONS as usize));
        assert_eq!(
            acked.get(&(*partition, *offset)),
            Some(&index),
            "the ack of record {index} named another position"
        );
    }
    assert_eq!(seen.len(), sent, "every record is in the log exactly once");
    drop(broker);
}

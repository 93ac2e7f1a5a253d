//! kill -9 during an acks=all producer run: after restart every acknowledged
//! record is present exactly once, in order, and nothing is corrupt.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use super::harness::{Broker, create_topic};
use super::rdkafka_roundtrip::{AckContext, Acks, consume_all};

const PARTITIONS: i32 = 3;

#[test]
fn acked_records_survive_kill_during_produce() {
    let mut broker = Broker::start(&[]);
    let topic = "crash";
    create_topic(&broker, topic, PARTITIONS, &[]);
    let acks = std::sync::Arc::new(Acks::default());
    let producer: ThreadedProducer<AckContext> = broker
        .client_config()
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "3000")
        .set("retries", "0")
        .create_with_context(AckContext(acks.clone()))
        .expect("producer");

    // Produce until a good number of acks are in, then kill the broker mid-stream.
    let started = Instant::now();
    let mut sent = 0usize;
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(60) {
        let key = format!("k{sent}");
        let value = format!("v{sent}");
        let record: BaseRecord<'_, String, String, Box<usize>> =
            BaseRecord::with_opaque_to(topic, Box::new(sent))
                .key(&key)
                .payload(&value);
        if producer.send(record).is_ok() {
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !killed && acks.placed.lock().unwrap().len() >= 20_000 {
            broker.kill9();
            killed = true;
        }
        if killed && sent % 1000 == 0 {
            break;
        }
    }
    assert!(killed, "broker was never killed: too few acks in 60 s");
    let _ = producer.flush(Duration::from_secs(10));
    drop(producer);

    let acked: HashMap<(i32, i64), usize> = acks.placed.lock().unwrap().clone();
    assert!(acked.len() >= 20_000);
    broker.restart();

    // Read back everything that is there (acked or not) and check it.
    let total_expected = acked.len();
    let seen = consume_all(&broker, topic, PARTITIONS, total_expected);
    let mut by_position: HashMap<(i32, i64), usize> = HashMap::new();
    let mut times_seen: HashMap<usize, usize> = HashMap::new();
    let mut last_in_partition: HashMap<i32, (i64, usize)> = HashMap::new();
    for (partition, offset, record) in &seen {
        let key = String::from_utf8(record.key.clone().expect("every record has a key")).unwrap();
        let index: usize = key[1..].parse().unwrap();
        assert_eq!(
            record.value.as_deref(),
            Some(format!("v{index}").as_bytes()),
            "record {index} is corrupt"
        );
        by_position.insert((*partition, *offset), index);
        *times_seen.entry(index).or_default() += 1;
        if let Some((prev_offset, prev_index)) =
            last_in_partition.insert(*partition, (*offset, index))
        {
            assert_eq!(
                *offset,
                prev_offset + 1,
                "offsets must stay dense after recovery"
            );
            assert!(
                index > prev_index,
                "partition {partition}: order broken ({prev_index} then {index})"
            );
        }
    }
    for ((partition, offset), index) in &acked {
        assert_eq!(
            by_position.get(&(*partition, *offset)),
            Some(index),
            "acknowledged record {index} at {partition}/{offset} is missing after kill -9"
        );
        assert_eq!(
            times_seen.get(index),
            Some(&1),
            "acknowledged record {index} must appear exactly once"
        );
    }
}

/// The Kafka port opens only once every log is recovered: a client that can
/// connect never talks to a broker still scanning its logs. After kill -9 with
/// ~360 MiB not covered by any recovery point (each partition stays under the
/// 16 MiB recovery-point interval), recovery has real work to do.
#[test]
fn port_opens_only_after_recovery() {
    let mut broker = Broker::start(&[]);
    let topic = "ready";
    const PARTITIONS: usize = 24;
    create_topic(&broker, topic, PARTITIONS as i32, &[]);
    let acks = std::sync::Arc::new(Acks::default());
    let producer: ThreadedProducer<AckContext> = broker
        .client_config()
        .set("acks", "1")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create_with_context(AckContext(acks.clone()))
        .expect("producer");
    let value = vec![b'r'; 1024];
    for i in 0..PARTITIONS * 15_000 {
        let record: BaseRecord<'_, [u8], [u8], Box<usize>> =
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .partition((i % PARTITIONS) as i32)
                .payload(&value);
        let mut pending = record;
        while let Err((_, back)) = producer.send(pending) {
            pending = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    assert!(acks.failed.lock().unwrap().is_empty());
    broker.kill9();
    broker.restart_without_waiting();
    let started = Instant::now();
    while std::net::TcpStream::connect(broker.addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "broker did not listen:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    let log = broker.log();
    let restarted = log
        .rfind("effective configuration")
        .expect("second start logged");
    let after = &log[restarted..];
    assert!(
        after.contains("recovered log after unclean shutdown"),
        "the restart had recovery to do:\n{after}"
    );
    assert!(
        after.contains("broker opened"),
        "the port accepted a connection before recovery finished:\n{after}"
    );
}

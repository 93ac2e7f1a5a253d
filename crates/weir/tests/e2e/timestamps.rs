//! Batch max timestamps: a client that sends maxTimestamp = -1 in its batch
//! headers (older Sarama does) must not hide its records from time lookups.
//! The broker derives the max from the records, as Kafka's validator does.

use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use weir_protocol::compression::Compression;
use weir_protocol::record::{Record, RecordBatchBuilder};

use super::harness::{Broker, create_topic};
use super::hostile::{exchange, produce_error_code, produce_frame};

/// Three records at `base_ms`, `base_ms + 1`, `base_ms + 2`, in a batch whose
/// header claims no max timestamp.
fn sarama_style_batch(compression: Compression, base_ms: i64) -> Bytes {
    let mut builder = RecordBatchBuilder::new(compression)
        .base_timestamp(base_ms)
        .max_timestamp(-1);
    for i in 0..3 {
        builder = builder.record(Record {
            offset_delta: i,
            timestamp_delta: i64::from(i),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
        });
    }
    builder.build().expect("batch")
}

#[test]
fn batches_without_max_timestamp_are_found_by_time() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "no-max-ts", 1, &[]);
    let base_ms = 1_700_000_000_000;
    for (n, compression) in [Compression::None, Compression::Lz4, Compression::Zstd]
        .into_iter()
        .enumerate()
    {
        let batch = sarama_style_batch(compression, base_ms + 1_000 * n as i64);
        let reply = exchange(&broker, &produce_frame("no-max-ts", batch)).expect("reply");
        assert_eq!(produce_error_code(&reply), 0, "{compression:?}");
    }

    let consumer: BaseConsumer = broker.client_config().create().expect("consumer");
    for (ts, expected) in [
        (0, 0),
        (base_ms + 1, 1),
        (base_ms + 1_000, 3),
        (base_ms + 2_002, 8),
        (base_ms + 2_003, -1),
    ] {
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset("no-max-ts", 0, Offset::Offset(ts))
            .unwrap();
        let answer = consumer
            .offsets_for_times(query, Duration::from_secs(10))
            .expect("offsets_for_times");
        let offset = answer.elements()[0].offset();
        let expected = if expected < 0 {
            Offset::End
        } else {
            Offset::Offset(expected)
        };
        assert_eq!(offset, expected, "timestamp {ts}");
    }
}

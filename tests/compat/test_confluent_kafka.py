"""confluent-kafka (librdkafka bundled in the wheel) against Weir: metadata,
produce, consume by assignment, watermarks and offsets-for-times."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from confluent_util import (
    CALL_TIMEOUT_S,
    admin_client,
    consume_all,
    consumer_config,
    create_topic,
    produce_all,
    producer_config,
)
from weir_compat import (
    FUTURE_TIMESTAMP_MS,
    RECORD_COUNT,
    SPLIT_INDEX,
    assert_records_exact,
    assert_timestamps_split,
    binary_records,
    now_ms,
    unique_topic,
    wait_past_gap,
)


@pytest.fixture(scope="module")
def produced(broker):
    """A topic holding the standard two batches; returns (topic, records, probe_ms)."""
    topic = unique_topic("confluent")
    create_topic(admin_client(broker), topic)
    records = binary_records()
    produce_all(broker, topic, records[:SPLIT_INDEX], first_offset=0)
    probe_ms = wait_past_gap(now_ms())
    produce_all(broker, topic, records[SPLIT_INDEX:], first_offset=SPLIT_INDEX)
    return topic, records, probe_ms


def test_confluent_metadata_lists_the_single_broker_and_created_topic(broker):
    admin = admin_client(broker)
    topic = unique_topic("confluent-meta")
    create_topic(admin, topic, partitions=3)
    metadata = admin.list_topics(timeout=CALL_TIMEOUT_S)
    assert sorted(metadata.brokers) == [1]
    node = metadata.brokers[1]
    assert (node.host, node.port) == (broker.host, broker.port)
    assert metadata.controller_id == 1
    assert topic in metadata.topics, f"{topic} missing from {sorted(metadata.topics)}"
    topic_meta = metadata.topics[topic]
    assert topic_meta.error is None
    assert sorted(topic_meta.partitions) == [0, 1, 2]
    for partition in topic_meta.partitions.values():
        assert partition.error is None
        assert partition.leader == 1
        assert list(partition.replicas) == [1]
        assert list(partition.isrs) == [1]
    # A single-topic request must return just that topic.
    one = admin.list_topics(topic=topic, timeout=CALL_TIMEOUT_S)
    assert list(one.topics) == [topic]


def test_confluent_consume_from_beginning_returns_every_record_exactly(broker, produced):
    topic, records, _ = produced
    assert_records_exact(records, consume_all(broker, topic))


def test_confluent_record_timestamps_are_kept_as_produced(broker, produced):
    topic, _, probe_ms = produced
    assert_timestamps_split(consume_all(broker, topic), probe_ms)


def test_confluent_watermarks_are_zero_and_record_count(broker, produced):
    topic, _, _ = produced
    consumer = Consumer(consumer_config(broker))
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, 0), timeout=CALL_TIMEOUT_S, cached=False
        )
    finally:
        consumer.close()
    assert (low, high) == (0, RECORD_COUNT)


def test_confluent_offsets_for_times_finds_first_record_of_second_batch(broker, produced):
    topic, _, probe_ms = produced
    consumer = Consumer(consumer_config(broker))
    try:
        for timestamp_ms, expected_offset in (
            (probe_ms, SPLIT_INDEX),
            (0, 0),
            # No record at or after the timestamp: Kafka answers offset -1.
            (FUTURE_TIMESTAMP_MS, -1),
        ):
            [result] = consumer.offsets_for_times(
                [TopicPartition(topic, 0, timestamp_ms)], timeout=CALL_TIMEOUT_S
            )
            assert result.error is None, f"ts {timestamp_ms}: {result.error}"
            assert result.offset == expected_offset, f"ts {timestamp_ms}: offset {result.offset}"
    finally:
        consumer.close()


def test_confluent_admin_list_offsets_earliest_latest_and_by_timestamp(broker, produced):
    topic, _, probe_ms = produced
    admin = admin_client(broker)
    tp = TopicPartition(topic, 0)
    for label, spec, expected_offset in (
        ("earliest", OffsetSpec.earliest(), 0),
        ("latest", OffsetSpec.latest(), RECORD_COUNT),
        (f"timestamp {probe_ms}", OffsetSpec.for_timestamp(probe_ms), SPLIT_INDEX),
    ):
        futures = admin.list_offsets({tp: spec}, request_timeout=CALL_TIMEOUT_S)
        info = futures[tp].result(timeout=CALL_TIMEOUT_S)
        assert info.offset == expected_offset, f"{label}: offset {info.offset}, expected {expected_offset}"


def test_confluent_admin_list_offsets_max_timestamp_names_the_record_not_its_batch(broker):
    """ListOffsets MAX_TIMESTAMP (-3) answers with the record that holds the
    largest timestamp (Kafka 3.8+, KAFKA-16310), not its batch's base offset."""
    admin = admin_client(broker)
    topic = unique_topic("confluent-maxts")
    create_topic(admin, topic)
    base_ms = now_ms() - 60_000
    # Two batches (flushed apart; the long linger keeps each together): the
    # largest timestamp is on the third record of the second batch.
    producer = Producer({**producer_config(broker), "linger.ms": 1000})
    for delta in (0, 10, 5):
        producer.produce(topic, value=b"a", partition=0, timestamp=base_ms + delta)
    assert producer.flush(CALL_TIMEOUT_S) == 0
    for delta in (20, 25, 40, 30):
        producer.produce(topic, value=b"b", partition=0, timestamp=base_ms + delta)
    assert producer.flush(CALL_TIMEOUT_S) == 0
    tp = TopicPartition(topic, 0)
    futures = admin.list_offsets({tp: OffsetSpec.max_timestamp()}, request_timeout=CALL_TIMEOUT_S)
    info = futures[tp].result(timeout=CALL_TIMEOUT_S)
    assert (info.offset, info.timestamp) == (5, base_ms + 40)

"""kafka-python (pure Python) against Weir: version negotiation, metadata,
produce, consume by assignment, watermarks and offsets-for-times.

No client here is given api_version: kafka-python must infer the broker
version from ApiVersions, and with a wrong guess it would fall back to old
message formats that the broker does not accept."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from weir_compat import (
    FUTURE_TIMESTAMP_MS,
    RECORD_COUNT,
    SPLIT_INDEX,
    ConsumedRecord,
    Record,
    assert_records_exact,
    assert_timestamps_split,
    binary_records,
    now_ms,
    unique_topic,
    wait_past_gap,
)

CALL_TIMEOUT_MS = 30_000
POLL_ROUNDS_MAX = 240
# kafka-python's ConsumerRecord.timestamp_type for CreateTime.
TIMESTAMP_TYPE_CREATE = 0
# The oldest version with record batches (magic 2) and headers.
BROKER_VERSION_MIN = (0, 11)


def admin_client(broker) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=broker.bootstrap, client_id="weir-compat-admin", request_timeout_ms=CALL_TIMEOUT_MS
    )


def make_producer(broker) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        client_id="weir-compat-producer",
        acks="all",
        linger_ms=5,
        request_timeout_ms=CALL_TIMEOUT_MS,
    )


def make_consumer(broker) -> KafkaConsumer:
    # No group_id: no coordinator is looked up and nothing is committed.
    return KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        client_id="weir-compat-consumer",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=CALL_TIMEOUT_MS,
    )


def produce_all(broker, topic: str, records: list[Record], first_offset: int) -> None:
    producer = make_producer(broker)
    try:
        futures = [
            producer.send(
                topic,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                partition=0,
            )
            for record in records
        ]
        producer.flush(timeout=CALL_TIMEOUT_MS / 1000)
        for index, future in enumerate(futures):
            metadata = future.get(timeout=CALL_TIMEOUT_MS / 1000)
            assert metadata.offset == first_offset + index, (
                f"record {index} acked at offset {metadata.offset}, expected {first_offset + index}"
            )
    finally:
        producer.close()


def consume_all(broker, topic: str) -> list[ConsumedRecord]:
    """Read partition 0 from the beginning to the high watermark it reports."""
    consumer = make_consumer(broker)
    tp = TopicPartition(topic, 0)
    consumed: list[ConsumedRecord] = []
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end_offset = consumer.end_offsets([tp], timeout_ms=CALL_TIMEOUT_MS)[tp]
        for _ in range(POLL_ROUNDS_MAX):
            if consumer.position(tp, timeout_ms=CALL_TIMEOUT_MS) >= end_offset:
                break
            for record in consumer.poll(timeout_ms=500).get(tp, []):
                assert record.timestamp_type == TIMESTAMP_TYPE_CREATE, (
                    f"offset {record.offset}: timestamp type {record.timestamp_type}"
                )
                consumed.append(
                    ConsumedRecord(
                        offset=record.offset,
                        key=record.key,
                        value=record.value,
                        headers=tuple(record.headers or ()),
                        timestamp_ms=record.timestamp,
                    )
                )
        else:
            pytest.fail(f"did not reach offset {end_offset} in {POLL_ROUNDS_MAX} polls; read {len(consumed)}")
        # Nothing may come after the high watermark.
        assert consumer.poll(timeout_ms=500).get(tp, []) == []
    finally:
        consumer.close()
    return consumed


@pytest.fixture(scope="module")
def produced(broker):
    """A topic holding the standard two batches; returns (topic, records, probe_ms)."""
    topic = unique_topic("kafka-python")
    admin = admin_client(broker)
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
    finally:
        admin.close()
    records = binary_records()
    produce_all(broker, topic, records[:SPLIT_INDEX], first_offset=0)
    probe_ms = wait_past_gap(now_ms())
    produce_all(broker, topic, records[SPLIT_INDEX:], first_offset=SPLIT_INDEX)
    return topic, records, probe_ms


def test_kafka_python_infers_a_record_batch_broker_version_without_api_version(broker):
    consumer = make_consumer(broker)
    producer = make_producer(broker)
    try:
        consumer_version = consumer.config["api_version"]
        producer_version = producer.config["api_version"]
    finally:
        consumer.close()
        producer.close()
    assert isinstance(consumer_version, tuple), f"api_version {consumer_version!r}"
    assert consumer_version >= BROKER_VERSION_MIN, f"inferred broker version {consumer_version}"
    assert producer_version == consumer_version
    assert KafkaProducer.max_usable_produce_magic(producer_version) == 2


def test_kafka_python_metadata_lists_the_single_broker_and_created_topic(broker):
    admin = admin_client(broker)
    topic = unique_topic("kafka-python-meta")
    try:
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
        cluster = admin.describe_cluster()
        topics = admin.list_topics()
    finally:
        admin.close()
    assert [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [
        (1, broker.host, broker.port)
    ]
    assert cluster["controller_id"] == 1
    assert topic in topics, f"{topic} missing from {sorted(topics)}"
    consumer = make_consumer(broker)
    try:
        assert topic in consumer.topics()
        assert consumer.partitions_for_topic(topic) == {0, 1}
    finally:
        consumer.close()


def test_kafka_python_consume_from_beginning_returns_every_record_exactly(broker, produced):
    topic, records, _ = produced
    assert_records_exact(records, consume_all(broker, topic))


def test_kafka_python_record_timestamps_are_kept_as_produced(broker, produced):
    topic, _, probe_ms = produced
    assert_timestamps_split(consume_all(broker, topic), probe_ms)


def test_kafka_python_watermarks_are_zero_and_record_count(broker, produced):
    topic, _, _ = produced
    tp = TopicPartition(topic, 0)
    consumer = make_consumer(broker)
    try:
        assert consumer.beginning_offsets([tp], timeout_ms=CALL_TIMEOUT_MS) == {tp: 0}
        assert consumer.end_offsets([tp], timeout_ms=CALL_TIMEOUT_MS) == {tp: RECORD_COUNT}
    finally:
        consumer.close()


def test_kafka_python_offsets_for_times_finds_first_record_of_second_batch(broker, produced):
    topic, _, probe_ms = produced
    tp = TopicPartition(topic, 0)
    consumer = make_consumer(broker)
    try:
        found = consumer.offsets_for_times({tp: probe_ms}, timeout_ms=CALL_TIMEOUT_MS)
        assert found[tp] is not None, "no offset for a timestamp inside the topic"
        assert found[tp].offset == SPLIT_INDEX
        assert found[tp].timestamp > probe_ms
        found = consumer.offsets_for_times({tp: 0}, timeout_ms=CALL_TIMEOUT_MS)
        assert found[tp] is not None and found[tp].offset == 0
        # kafka-python reports "no record at or after this time" as None.
        found = consumer.offsets_for_times({tp: FUTURE_TIMESTAMP_MS}, timeout_ms=CALL_TIMEOUT_MS)
        assert found[tp] is None, f"future timestamp gave {found[tp]}"
    finally:
        consumer.close()

"""confluent-kafka helpers shared by the confluent test modules.

The data-path tests read with assign() so that each check is about one
partition's bytes, not about group assignment (test_groups.py covers groups).
confluent-kafka insists on a group.id even for assign(); it is set but never
used for subscribe or commit."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from weir_compat import ConsumedRecord, Record

CALL_TIMEOUT_S = 30.0
CONSUME_DEADLINE_S = 120.0


def admin_client(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap, "client.id": "weir-compat-admin"})


def producer_config(broker) -> dict:
    return {
        "bootstrap.servers": broker.bootstrap,
        "client.id": "weir-compat-producer",
        "acks": "all",
        "linger.ms": 5,
    }


def consumer_config(broker) -> dict:
    return {
        "bootstrap.servers": broker.bootstrap,
        "client.id": "weir-compat-consumer",
        # Required by confluent-kafka even for assign(); never subscribed or committed.
        "group.id": "weir-compat-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    }


def create_topic(admin: AdminClient, topic: str, partitions: int = 1, config: dict | None = None) -> None:
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=CALL_TIMEOUT_S,
    )
    futures[topic].result(timeout=CALL_TIMEOUT_S)


def produce_all(broker, topic: str, records: list[Record], first_offset: int, partition: int = 0) -> None:
    """Produce and check that record i is acknowledged at first_offset + i."""
    producer = Producer(producer_config(broker))
    outcomes: list[tuple[int, KafkaError | None, int]] = []

    def on_delivery(index: int):
        def callback(err, msg):
            outcomes.append((index, err, -1 if err else msg.offset()))

        return callback

    for index, record in enumerate(records):
        producer.produce(
            topic,
            key=record.key,
            value=record.value,
            partition=partition,
            headers=list(record.headers) or None,
            on_delivery=on_delivery(index),
        )
        if index % 1000 == 999:
            producer.poll(0)
    remaining = producer.flush(CALL_TIMEOUT_S)
    assert remaining == 0, f"{remaining} records still undelivered after {CALL_TIMEOUT_S}s"
    errors = [(index, err) for index, err, _ in outcomes if err is not None]
    assert not errors, f"delivery errors (first 5): {errors[:5]}"
    assert len(outcomes) == len(records)
    for index, _, offset in sorted(outcomes):
        assert offset == first_offset + index, f"record {index} acked at offset {offset}, expected {first_offset + index}"


def is_group_coordinator_error(msg) -> bool:
    """librdkafka looks up a group coordinator whenever group.id is set, even
    for assign()-only consumers, and may pass a failed lookup on to the
    application. Such group-level errors (no topic) are not the data path's
    failure."""
    err = msg.error()
    return msg.topic() is None and not err.fatal() and "coordinator" in err.str().lower()


def consume_all(broker, topic: str, partition: int = 0) -> list[ConsumedRecord]:
    """Read the partition from the beginning up to its end-of-partition event.
    Callers consume only after every record was acknowledged, so the first
    end-of-partition event marks the end of what the broker holds."""
    consumer = Consumer(consumer_config(broker))
    consumed: list[ConsumedRecord] = []
    try:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        reached_eof = False
        while not reached_eof:
            assert time.monotonic() < deadline, (
                f"no end of partition after {CONSUME_DEADLINE_S}s; {len(consumed)} records read"
            )
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        reached_eof = True
                        continue
                    if is_group_coordinator_error(msg):
                        continue
                    pytest.fail(f"consume error: {err}")
                ts_type, ts = msg.timestamp()
                assert ts_type == TIMESTAMP_CREATE_TIME, f"offset {msg.offset()}: timestamp type {ts_type}"
                consumed.append(
                    ConsumedRecord(
                        offset=msg.offset(),
                        key=msg.key(),
                        value=msg.value(),
                        headers=tuple(msg.headers() or ()),
                        timestamp_ms=ts,
                    )
                )
    finally:
        consumer.close()
    return consumed

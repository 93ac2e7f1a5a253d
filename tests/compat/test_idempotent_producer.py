"""Idempotent producers on their default settings, and transactional clients
refused at once.

kafka-python 3 turns idempotence on by default: before InitProducerId it
failed at the first send (IncompatibleBrokerVersion). Transactional clients
used to be told COORDINATOR_NOT_AVAILABLE and retried until their timeout;
now they get TRANSACTIONAL_ID_AUTHORIZATION_FAILED, fatal in every client."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka import errors as kafka_errors

from weir_compat import unique_topic

CALL_TIMEOUT_MS = 30_000
RECORDS_PER_PARTITION = 2_000
PARTITIONS = 3
POLL_ROUNDS_MAX = 240
# A fatal error comes back within a round trip or two; a retried one only at
# the caller's timeout.
REFUSAL_SECONDS_MAX = 5.0
INIT_TIMEOUT_S = 15.0


def test_kafka_python_default_producer_is_idempotent_and_round_trips(broker):
    topic = unique_topic("idem-kafka-python")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=CALL_TIMEOUT_MS)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        admin.close()

    # Default settings: no enable_idempotence, acks or retries given.
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=CALL_TIMEOUT_MS)
    try:
        assert producer.config["enable_idempotence"], "kafka-python 3 defaults to idempotence"
        futures = []
        for partition in range(PARTITIONS):
            for n in range(RECORDS_PER_PARTITION):
                value = f"{partition}:{n}".encode()
                futures.append((partition, n, producer.send(topic, value=value, partition=partition)))
        producer.flush(timeout=CALL_TIMEOUT_MS / 1000)
        for partition, n, future in futures:
            metadata = future.get(timeout=CALL_TIMEOUT_MS / 1000)
            assert (metadata.partition, metadata.offset) == (partition, n)
        pid = producer._transaction_manager.producer_id_and_epoch.producer_id
        assert pid >= 0, "the producer got a producer id from InitProducerId"
    finally:
        producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=CALL_TIMEOUT_MS,
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        for _ in range(POLL_ROUNDS_MAX):
            if all(len(v) >= RECORDS_PER_PARTITION for v in got.values()):
                break
            for tp, records in consumer.poll(timeout_ms=500).items():
                got[tp.partition].extend(r.value for r in records)
        for partition in range(PARTITIONS):
            expected = [f"{partition}:{n}".encode() for n in range(RECORDS_PER_PARTITION)]
            assert got[partition] == expected, f"partition {partition}: exactly once, in order"
    finally:
        consumer.close()


def test_confluent_idempotent_producer_round_trips(broker):
    topic = unique_topic("idem-confluent")
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    acked: list[tuple[int, int]] = []
    errors: list[KafkaError] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.partition(), msg.offset()))

    for n in range(1_000):
        producer.produce(topic, value=str(n).encode(), partition=0, on_delivery=on_delivery)
    assert producer.flush(CALL_TIMEOUT_MS / 1000) == 0
    assert errors == []
    assert acked == [(0, n) for n in range(1_000)]


def test_confluent_transactional_producer_is_refused_at_once(broker):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": unique_topic("txn")})
    started = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(INIT_TIMEOUT_S)
    elapsed = time.monotonic() - started
    error = raised.value.args[0]
    assert error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, error
    assert error.fatal(), error
    assert "not supported" in error.str(), error
    assert elapsed < REFUSAL_SECONDS_MAX, f"refused after {elapsed:.1f} s: retried instead of failing"


def test_kafka_python_transactional_producer_is_refused_at_once(broker):
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        transactional_id=unique_topic("txn"),
        request_timeout_ms=CALL_TIMEOUT_MS,
        max_block_ms=int(INIT_TIMEOUT_S * 1000),
    )
    try:
        started = time.monotonic()
        with pytest.raises(kafka_errors.TransactionalIdAuthorizationFailedError):
            producer.init_transactions()
        elapsed = time.monotonic() - started
        assert elapsed < REFUSAL_SECONDS_MAX, f"refused after {elapsed:.1f} s"
    finally:
        producer.close(timeout=1)

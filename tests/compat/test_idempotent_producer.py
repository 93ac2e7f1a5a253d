"""Idempotent producers on their default settings.

kafka-python 3 turns idempotence on by default: before InitProducerId it
failed at the first send (IncompatibleBrokerVersion). Transactional clients
are tested in test_transactions.py."""

from __future__ import annotations

from confluent_kafka import KafkaError, Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from weir_compat import unique_topic

CALL_TIMEOUT_MS = 30_000
RECORDS_PER_PARTITION = 2_000
PARTITIONS = 3
POLL_ROUNDS_MAX = 240


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

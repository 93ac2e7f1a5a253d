"""Compacted topics read by the Python clients: after `weir topic compact`, a
kafka-python consumer and a confluent-kafka consumer each rebuild exactly the
final table from offset 0. The cleaned log holds rewritten batches (fewer
records, same offsets) and empty batches standing for runs of removed ones, so
this checks that both clients step over those."""

from __future__ import annotations

import subprocess

from confluent_kafka import Consumer, Producer, TopicPartition as CkTopicPartition
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from conftest import weir_binary
from weir_compat import unique_topic

CALL_TIMEOUT_MS = 30_000
KEYS = 50
ROUNDS = 40


def create_compacted_topic(broker, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=CALL_TIMEOUT_MS)
    try:
        admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={
                        "cleanup.policy": "compact",
                        "segment.bytes": "2048",
                        "min.cleanable.dirty.ratio": "0.01",
                        "delete.retention.ms": "0",
                    },
                )
            ]
        )
    finally:
        admin.close()


def produce_changes(broker, topic: str) -> dict[bytes, bytes | None]:
    """ROUNDS rounds of updates over KEYS keys, every 7th a delete; one batch per
    record so that whole batches disappear and become empty runs."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "compression.type": "gzip"})
    table: dict[bytes, bytes | None] = {}
    n = 0
    for r in range(ROUNDS):
        for k in range(KEYS):
            key = f"k{k}".encode()
            value = None if (n % 7 == 0) else f"r{r}-k{k}".encode()
            producer.produce(topic, key=key, value=value, partition=0)
            producer.flush(30)
            table[key] = value
            n += 1
    # A last write to every key so the active segment is past the cleaned ones.
    for k in range(KEYS):
        key = f"k{k}".encode()
        producer.produce(topic, key=key, value=b"final", partition=0)
        table[key] = b"final"
    producer.flush(30)
    return table


def compact(broker, topic: str) -> str:
    out = subprocess.run(
        [str(weir_binary()), "topic", "compact", topic, "-b", broker.bootstrap],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def apply(table: dict, key: bytes, value: bytes | None) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def read_kafka_python(broker, topic: str) -> tuple[dict, int]:
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False, request_timeout_ms=CALL_TIMEOUT_MS
    )
    tp = TopicPartition(topic, 0)
    table: dict = {}
    read = 0
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp], timeout_ms=CALL_TIMEOUT_MS)[tp]
        for _ in range(240):
            if consumer.position(tp, timeout_ms=CALL_TIMEOUT_MS) >= end:
                break
            for record in consumer.poll(timeout_ms=500).get(tp, []):
                read += 1
                apply(table, record.key, record.value)
        else:
            raise AssertionError(f"kafka-python did not reach offset {end}")
    finally:
        consumer.close()
    return table, read


def read_confluent(broker, topic: str) -> tuple[dict, int]:
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "weir-compat-compaction", "enable.auto.commit": False}
    )
    table: dict = {}
    read = 0
    try:
        _, high = consumer.get_watermark_offsets(CkTopicPartition(topic, 0), timeout=10)
        consumer.assign([CkTopicPartition(topic, 0, 0)])
        last = -1
        for _ in range(600):
            if last + 1 >= high:
                break
            m = consumer.poll(0.5)
            if m is None or m.error():
                continue
            read += 1
            last = m.offset()
            apply(table, m.key(), m.value())
        else:
            raise AssertionError(f"confluent-kafka did not reach offset {high}")
    finally:
        consumer.close()
    return table, read


def test_python_clients_rebuild_the_final_table_from_a_compacted_topic(broker):
    topic = unique_topic("compacted")
    create_compacted_topic(broker, topic)
    model = produce_changes(broker, topic)
    expected = {k: v for k, v in model.items() if v is not None}
    out = compact(broker, topic)
    cleaned_to = int(out.splitlines()[1].split("\t")[2])
    assert cleaned_to > KEYS * ROUNDS // 2, out
    for reader in (read_kafka_python, read_confluent):
        table, read = reader(broker, topic)
        assert table == expected, reader.__name__
        # Far fewer records than were written: one per key in the cleaned part.
        assert read < KEYS * ROUNDS // 2, (reader.__name__, read)

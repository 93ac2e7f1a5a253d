"""Consumer groups with Python clients: confluent-kafka and kafka-python group
consumers commit, resume and rebalance, and `weir group describe` reports lag
that matches known counts."""

from __future__ import annotations

import subprocess
import time

from confluent_kafka import Consumer, KafkaError, Producer
from kafka import KafkaConsumer, TopicPartition as KpTopicPartition

from conftest import weir_binary
from confluent_util import CALL_TIMEOUT_S, admin_client, create_topic, producer_config
from weir_compat import unique_topic

PARTITIONS = 4
PER_PARTITION = 250
DEADLINE_S = 90.0


def produce_keyed(broker, topic: str, per_partition: int = PER_PARTITION, start: int = 0) -> set[bytes]:
    """Writes `per_partition` records to every partition; returns their values."""
    producer = Producer(producer_config(broker))
    values = set()
    for partition in range(PARTITIONS):
        for i in range(start, start + per_partition):
            value = f"{partition}-{i}".encode()
            producer.produce(topic, value=value, partition=partition)
            values.add(value)
    assert producer.flush(CALL_TIMEOUT_S) == 0
    return values


def group_consumer(broker, group: str, **extra) -> Consumer:
    config = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
    }
    config.update(extra)
    return Consumer(config)


def poll_values(consumer: Consumer, want: int, seconds: float = DEADLINE_S) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + seconds
    while len(got) < want and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            assert err.code() == KafkaError._PARTITION_EOF, f"consume error: {err}"
            continue
        got.append(msg.value())
    return got


def test_confluent_group_commits_and_resumes_after_clean_close(broker):
    topic = unique_topic("group-resume")
    group = f"g-{topic}"
    create_topic(admin_client(broker), topic, partitions=PARTITIONS)
    all_values = produce_keyed(broker, topic)

    first = group_consumer(broker, group)
    first.subscribe([topic])
    part_one = poll_values(first, 400)
    assert len(part_one) == 400, f"first consumer read only {len(part_one)} records"
    first.commit(asynchronous=False)  # commit after processing what was polled
    first.close()

    second = group_consumer(broker, group)
    second.subscribe([topic])
    rest = poll_values(second, len(all_values) - 400)
    second.close()
    consumed = part_one + rest
    assert len(consumed) == len(set(consumed)), "a record was consumed twice across a clean handover"
    assert set(consumed) == all_values, f"missing {len(all_values - set(consumed))} records"


def test_confluent_group_splits_partitions_between_two_members(broker):
    topic = unique_topic("group-split")
    group = f"g-{topic}"
    create_topic(admin_client(broker), topic, partitions=PARTITIONS)
    produce_keyed(broker, topic, per_partition=10)
    a = group_consumer(broker, group)
    b = group_consumer(broker, group)
    a.subscribe([topic])
    b.subscribe([topic])
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            a.poll(0.2)
            b.poll(0.2)
            assigned_a = {tp.partition for tp in a.assignment()}
            assigned_b = {tp.partition for tp in b.assignment()}
            if assigned_a and assigned_b and len(assigned_a) + len(assigned_b) == PARTITIONS:
                assert not assigned_a & assigned_b, "a partition was assigned to both members"
                assert assigned_a | assigned_b == set(range(PARTITIONS))
                return
        raise AssertionError(f"no split assignment within {DEADLINE_S}s: {a.assignment()} / {b.assignment()}")
    finally:
        a.close()
        b.close()


def kafka_python_consumer(broker, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        session_timeout_ms=10000,
    )


def test_kafka_python_group_commits_resumes_and_rebalances(broker):
    topic = unique_topic("kp-group")
    group = f"g-{topic}"
    create_topic(admin_client(broker), topic, partitions=PARTITIONS)
    all_values = produce_keyed(broker, topic)

    consumer = kafka_python_consumer(broker, group)
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < len(all_values) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value for r in records)
    assert set(got) == all_values and len(got) == len(all_values)
    consumer.commit()
    for partition in range(PARTITIONS):
        committed = consumer.committed(KpTopicPartition(topic, partition))
        assert committed == PER_PARTITION, f"partition {partition}: committed {committed}"
    consumer.close()

    # New records only: a restarted member resumes at the committed offsets.
    newer = produce_keyed(broker, topic, per_partition=5, start=PER_PARTITION)
    resumed = kafka_python_consumer(broker, group)
    resumed.subscribe([topic])
    got_again: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got_again) < len(newer) and time.monotonic() < deadline:
        for records in resumed.poll(timeout_ms=500).values():
            got_again.extend(r.value for r in records)

    # A second member joins: the partitions are split between the two.
    other = kafka_python_consumer(broker, group)
    other.subscribe([topic])
    deadline = time.monotonic() + DEADLINE_S
    split = False
    while time.monotonic() < deadline and not split:
        resumed.poll(timeout_ms=200)
        other.poll(timeout_ms=200)
        mine, theirs = resumed.assignment(), other.assignment()
        split = bool(mine) and bool(theirs) and len(mine) + len(theirs) == PARTITIONS and not (mine & theirs)
    resumed.close()
    other.close()
    assert set(got_again) == newer and len(got_again) == len(newer), "resume must start at the committed offsets"
    assert split, "two kafka-python members never split the partitions"


def test_weir_group_describe_reports_lag_against_known_counts(broker):
    topic = unique_topic("group-lag")
    group = f"g-{topic}"
    create_topic(admin_client(broker), topic, partitions=PARTITIONS)
    produce_keyed(broker, topic, per_partition=100)
    consumer = group_consumer(broker, group)
    consumer.subscribe([topic])
    read = poll_values(consumer, 4 * 100)
    assert len(read) == 400
    # Commit known positions: partition p committed at 10 * (p + 1).
    from confluent_kafka import TopicPartition

    consumer.commit(offsets=[TopicPartition(topic, p, 10 * (p + 1)) for p in range(PARTITIONS)], asynchronous=False)
    consumer.close()
    out = subprocess.run(
        [str(weir_binary()), "group", "describe", group, "--bootstrap", broker.bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) >= 5 and cols[0] == topic:
            rows[int(cols[1])] = (int(cols[2]), int(cols[3]), int(cols[4]))
    assert set(rows) == set(range(PARTITIONS)), out.stdout
    for p, (committed, end, lag) in rows.items():
        assert committed == 10 * (p + 1)
        assert end == 100
        assert lag == 100 - committed
    listed = subprocess.run(
        [str(weir_binary()), "group", "list", "--bootstrap", broker.bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert any(line.split("\t")[0] == group for line in listed.stdout.splitlines()), listed.stdout

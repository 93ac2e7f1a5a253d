"""Transactions (KIP-98) through real clients: confluent-kafka (librdkafka)
and kafka-python 3.

What each test checks is in its name. Reading is done with
isolation.level=read_uncommitted, which sees committed and aborted records
alike; markers show as offsets no record occupies. Transaction state is
read back with `weir txn describe` / `weir txn list`, so those commands are
covered too. Tests that need other broker settings or a restart start a
broker of their own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka import KafkaProducer
from kafka import errors as kafka_errors

import conftest
from confluent_util import admin_client, create_topic
from weir_compat import unique_topic

CALL_TIMEOUT_S = 30.0
# A fatal error comes back within a round trip or two; a retried one only at
# the caller's timeout.
REFUSAL_SECONDS_MAX = 5.0
INIT_TIMEOUT_S = 15.0


def weir_cli(broker, *args: str) -> str:
    result = subprocess.run(
        [str(conftest.weir_binary()), *args, "--bootstrap", broker.bootstrap],
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT_S,
        env={k: v for k, v in os.environ.items() if not k.startswith("WEIR_")},
    )
    assert result.returncode == 0, f"weir {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def txn_state(broker, transactional_id: str) -> str:
    for line in weir_cli(broker, "txn", "describe", transactional_id).splitlines():
        if line.startswith("state: "):
            return line.removeprefix("state: ")
    raise AssertionError(f"no state line for {transactional_id}")


def wait_for_state(broker, transactional_id: str, wanted: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = txn_state(broker, transactional_id)
        if state == wanted:
            return
        time.sleep(0.2)
    raise AssertionError(f"{transactional_id} stayed {state}, expected {wanted}")


def read_uncommitted(broker, topic: str, partition: int, count: int) -> list[tuple[int, bytes]]:
    """(offset, value) of the first `count` records of a partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "weir-compat-unused",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.offset(), msg.value()))
        return got
    finally:
        consumer.close()


def high_watermark(broker, topic: str, partition: int, isolation: str = "read_committed") -> int:
    """The end librdkafka reports: the last stable offset for read_committed
    (its default), the high watermark for read_uncommitted."""
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "weir-compat-unused", "isolation.level": isolation}
    )
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=CALL_TIMEOUT_S)[1]
    finally:
        consumer.close()


def transactional_producer(broker, transactional_id: str, **extra) -> Producer:
    return Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": transactional_id, **extra})


@contextlib.contextmanager
def own_broker(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    started = conftest.start_broker(conftest.weir_binary(), tmp_path, tuple(args), env)
    try:
        yield started
    finally:
        if started.process.poll() is None:
            started.process.kill()
            started.process.wait()


def test_confluent_commit_and_abort_are_read_back_with_their_markers(broker):
    topic = unique_topic("txn-commit-abort")
    create_topic(admin_client(broker), topic, partitions=2)
    tid = unique_topic("tid")
    producer = transactional_producer(broker, tid)
    producer.init_transactions(CALL_TIMEOUT_S)
    producer.begin_transaction()
    for n in range(10):
        producer.produce(topic, value=f"c{n}".encode(), partition=n % 2)
    producer.commit_transaction(CALL_TIMEOUT_S)
    # EndTxn is answered once the markers and CompleteCommit are durable
    # (within 5 s); waiting also covers the 5 s fallback.
    wait_for_state(broker, tid, "CompleteCommit")

    producer.begin_transaction()
    for n in range(4):
        producer.produce(topic, value=f"a{n}".encode(), partition=0)
    assert producer.flush(CALL_TIMEOUT_S) == 0  # abort_transaction would purge unsent records
    assert txn_state(broker, tid) == "Ongoing"
    producer.abort_transaction(CALL_TIMEOUT_S)
    wait_for_state(broker, tid, "CompleteAbort")

    # Partition 0: c0 c2 c4 c6 c8 (0-4), commit marker (5), a0-a3 (6-9), abort marker (10).
    assert read_uncommitted(broker, topic, 0, 9) == [
        (0, b"c0"), (1, b"c2"), (2, b"c4"), (3, b"c6"), (4, b"c8"),
        (6, b"a0"), (7, b"a1"), (8, b"a2"), (9, b"a3"),
    ]
    assert high_watermark(broker, topic, 0) == 11
    # Partition 1: c1 c3 c5 c7 c9 (0-4), commit marker (5); no abort marker (not in that transaction).
    assert read_uncommitted(broker, topic, 1, 5) == [(n, f"c{2 * n + 1}".encode()) for n in range(5)]
    assert high_watermark(broker, topic, 1) == 6

    listed = weir_cli(broker, "txn", "list", "--state", "CompleteAbort")
    assert any(line.split("\t")[0] == tid for line in listed.splitlines()), listed
    assert tid not in weir_cli(broker, "txn", "list", "--state", "Ongoing")


def test_second_producer_with_the_same_transactional_id_fences_the_first(broker):
    topic = unique_topic("txn-zombie")
    create_topic(admin_client(broker), topic)
    tid = unique_topic("tid")
    zombie = transactional_producer(broker, tid)
    zombie.init_transactions(CALL_TIMEOUT_S)
    zombie.begin_transaction()
    for n in range(3):
        zombie.produce(topic, value=f"z{n}".encode(), partition=0)
    assert zombie.flush(CALL_TIMEOUT_S) == 0

    # The new instance's InitProducerId aborts the zombie's open transaction
    # (the client retries CONCURRENT_TRANSACTIONS meanwhile) and bumps the epoch.
    successor = transactional_producer(broker, tid)
    successor.init_transactions(CALL_TIMEOUT_S)
    assert txn_state(broker, tid) == "Empty"

    with pytest.raises(KafkaException) as raised:
        zombie.commit_transaction(CALL_TIMEOUT_S)
    error = raised.value.args[0]
    assert error.fatal(), error
    assert error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH), error

    successor.begin_transaction()
    successor.produce(topic, value=b"s0", partition=0)
    successor.commit_transaction(CALL_TIMEOUT_S)
    wait_for_state(broker, tid, "CompleteCommit")
    # z0-z2 (0-2), the fencing abort marker (3), s0 (4), commit marker (5).
    assert read_uncommitted(broker, topic, 0, 4) == [(0, b"z0"), (1, b"z1"), (2, b"z2"), (4, b"s0")]
    assert high_watermark(broker, topic, 0) == 6


def test_hung_transaction_is_aborted_by_the_broker_after_its_timeout(tmp_path):
    with own_broker(tmp_path, "--transaction-abort-timed-out-transaction-cleanup-interval-ms", "200") as own:
        topic = unique_topic("txn-hung")
        create_topic(admin_client(own), topic)
        tid = unique_topic("tid")
        producer = transactional_producer(own, tid, **{"transaction.timeout.ms": 2000, "message.timeout.ms": 2000})
        producer.init_transactions(CALL_TIMEOUT_S)
        producer.begin_transaction()
        for n in range(5):
            producer.produce(topic, value=f"h{n}".encode(), partition=0)
        assert producer.flush(CALL_TIMEOUT_S) == 0
        # The open transaction holds the last stable offset at its start.
        assert high_watermark(own, topic, 0, "read_uncommitted") == 5
        assert high_watermark(own, topic, 0) == 0, "the open transaction holds the LSO"
        started = time.monotonic()
        # The producer goes quiet; the broker aborts on its own.
        wait_for_state(own, tid, "CompleteAbort", timeout_s=15.0)
        assert time.monotonic() - started >= 1.0, "aborted before the transaction timeout"
        assert high_watermark(own, topic, 0) == 6, "the LSO moved past the records and the abort marker"
        # The producer that hung was fenced by the abort's epoch bump.
        with pytest.raises(KafkaException):
            producer.commit_transaction(CALL_TIMEOUT_S)
        conftest._stop(own.process)


def test_offsets_sent_to_a_transaction_are_visible_only_after_commit(broker):
    source = unique_topic("txn-offsets-in")
    sink = unique_topic("txn-offsets-out")
    admin = admin_client(broker)
    create_topic(admin, source)
    create_topic(admin, sink)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for n in range(10):
        plain.produce(source, value=str(n).encode(), partition=0)
    assert plain.flush(CALL_TIMEOUT_S) == 0

    group = unique_topic("txn-group")
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    # librdkafka asks for stable offsets (KIP-447 require_stable) when reading
    # committed data, which is its default; the other checker does not.
    checker = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    stable_checker = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    producer = transactional_producer(broker, unique_topic("tid"))
    try:
        consumer.assign([TopicPartition(source, 0, 0)])
        seen = 0
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while seen < 10 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            seen += 1
        assert seen == 10
        producer.init_transactions(CALL_TIMEOUT_S)
        producer.begin_transaction()
        producer.produce(sink, value=b"result", partition=0)
        producer.send_offsets_to_transaction(
            consumer.position([TopicPartition(source, 0)]), consumer.consumer_group_metadata(), CALL_TIMEOUT_S
        )
        pending = checker.committed([TopicPartition(source, 0)], timeout=CALL_TIMEOUT_S)
        assert pending[0].offset < 0, f"offset visible before the commit: {pending}"
        # A stable read is told UNSTABLE_OFFSET_COMMIT, which the client retries until its timeout.
        with pytest.raises(KafkaException):
            stable_checker.committed([TopicPartition(source, 0)], timeout=2)
        producer.commit_transaction(CALL_TIMEOUT_S)
        committed = stable_checker.committed([TopicPartition(source, 0)], timeout=CALL_TIMEOUT_S)
        assert committed[0].offset == 10, committed
        committed = checker.committed([TopicPartition(source, 0)], timeout=CALL_TIMEOUT_S)
        assert committed[0].offset == 10, committed

        # An aborted transaction's offsets are dropped.
        producer.begin_transaction()
        producer.produce(sink, value=b"discarded", partition=0)
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 3)], consumer.consumer_group_metadata(), CALL_TIMEOUT_S
        )
        producer.abort_transaction(CALL_TIMEOUT_S)
        committed = checker.committed([TopicPartition(source, 0)], timeout=CALL_TIMEOUT_S)
        assert committed[0].offset == 10, committed
    finally:
        consumer.close()
        checker.close()
        stable_checker.close()


def test_commit_interrupted_after_prepare_completes_at_restart(tmp_path):
    # The broker aborts itself right after PrepareCommit is durable, before
    # any marker: what a kill -9 at that point leaves behind.
    crash_env = {"WEIR_TEST_CRASH_AFTER_PREPARE": "1"}
    with own_broker(tmp_path, "--transaction-state-partitions", "3", env=crash_env) as first:
        topic = unique_topic("txn-crash")
        create_topic(admin_client(first), topic)
        tid = unique_topic("tid")
        producer = transactional_producer(first, tid, **{"transaction.timeout.ms": 60000})
        producer.init_transactions(CALL_TIMEOUT_S)
        producer.begin_transaction()
        for n in range(5):
            producer.produce(topic, value=f"p{n}".encode(), partition=0)
        assert producer.flush(CALL_TIMEOUT_S) == 0
        with pytest.raises(KafkaException):
            producer.commit_transaction(5)
        first.process.wait(timeout=CALL_TIMEOUT_S)
        assert first.process.returncode != 0
        del producer
        data_dir, port = first.data_dir, first.port

    restarted = conftest.start_broker(
        conftest.weir_binary(), tmp_path, ("--transaction-state-partitions", "3"), None, data_dir, port
    )
    try:
        wait_for_state(restarted, tid, "CompleteCommit")
        assert high_watermark(restarted, topic, 0) == 6, "five records and the commit marker"
        assert read_uncommitted(restarted, topic, 0, 5) == [(n, f"p{n}".encode()) for n in range(5)]
        assert conftest._stop(restarted.process) is None
    finally:
        if restarted.process.poll() is None:
            restarted.process.kill()


def test_kafka_python_transactional_producer_commits(broker):
    topic = unique_topic("txn-kafka-python")
    create_topic(admin_client(broker), topic)
    tid = unique_topic("tid")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=tid, request_timeout_ms=30_000)
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for n in range(3):
            producer.send(topic, value=f"k{n}".encode(), partition=0)
        producer.commit_transaction()
    finally:
        producer.close(timeout=5)
    wait_for_state(broker, tid, "CompleteCommit")
    assert read_uncommitted(broker, topic, 0, 3) == [(n, f"k{n}".encode()) for n in range(3)]
    assert high_watermark(broker, topic, 0) == 4


def test_transactions_disabled_refuses_transactional_clients_at_once(tmp_path):
    with own_broker(tmp_path, "--transactions-enabled", "false") as own:
        producer = transactional_producer(own, unique_topic("txn"))
        started = time.monotonic()
        with pytest.raises(KafkaException) as raised:
            producer.init_transactions(INIT_TIMEOUT_S)
        elapsed = time.monotonic() - started
        error = raised.value.args[0]
        assert error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, error
        assert error.fatal(), error
        assert "transactions_enabled=false" in error.str(), error
        assert elapsed < REFUSAL_SECONDS_MAX, f"refused after {elapsed:.1f} s: retried instead of failing"

        kp = KafkaProducer(
            bootstrap_servers=own.bootstrap,
            transactional_id=unique_topic("txn"),
            request_timeout_ms=30_000,
            max_block_ms=int(INIT_TIMEOUT_S * 1000),
        )
        try:
            started = time.monotonic()
            with pytest.raises(kafka_errors.TransactionalIdAuthorizationFailedError):
                kp.init_transactions()
            assert time.monotonic() - started < REFUSAL_SECONDS_MAX
        finally:
            kp.close(timeout=1)
        assert conftest._stop(own.process) is None

"""Replication through confluent-kafka: a 3-node cluster with an RF=3 topic
survives kill -9 of a partition leader.

The module starts its own three `weir serve` processes (node ids 1-3, each a
broker and a metadata quorum voter), as test_cluster.py does, but keeps each
node's port and data directory so that a killed node can be started again.
An idempotent acks=all producer writes before the kill, while the leader is
dead (the records must be acknowledged by the new leader, elected from the
ISR) and after the old leader returns; a fresh consumer then reads every
acknowledged record back, once each, in order.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BROKER_HOST, _broker_logs, _free_port, _stop, _wait_until_ready, weir_binary
from weir_compat import unique_topic

PARTITIONS = 3
RECORDS_PER_PHASE = 600
CALL_TIMEOUT_S = 30.0
# Elections wait for the controller to fence the dead leader (the broker
# session timeout, 3 s by default); this bounds every wait for convergence.
CONVERGE_TIMEOUT_S = 60.0


class Node:
    """One `weir serve` of the cluster; restartable on its port and data."""

    def __init__(self, binary: Path, work_dir: Path, node_id: int, voters: str):
        self.binary, self.node_id, self.voters = binary, node_id, voters
        self.port = _free_port()
        self.data_dir = work_dir / f"node-{node_id}"
        self.data_dir.mkdir()
        self.log_path = work_dir / f"node-{node_id}.log"
        _broker_logs.append(self.log_path)
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{BROKER_HOST}:{self.port}"

    def spawn(self) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("WEIR_")}
        # Each broker its own ephemeral HTTP (metrics) port: several run at once.
        env["WEIR_HTTP_LISTEN"] = "127.0.0.1:0"
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [str(self.binary), "serve", "--node-id", str(self.node_id), "--data-dir", str(self.data_dir),
                 "--listen", self.bootstrap, "--controller-voters", self.voters],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )

    def wait_ready(self) -> None:
        problem = _wait_until_ready(self.process, self.port)
        if problem is not None:
            pytest.fail(f"node {self.node_id}: {problem} (log: {self.log_path})", pytrace=False)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def nodes():
    if os.environ.get("WEIR_COMPAT_BOOTSTRAP"):
        pytest.skip("the replication test starts its own three nodes")
    binary = weir_binary()
    work_dir = Path(tempfile.mkdtemp(prefix="weir-compat-replication-"))
    voters = ",".join(f"{i}@{BROKER_HOST}:{_free_port()}" for i in (1, 2, 3))
    started = [Node(binary, work_dir, node_id, voters) for node_id in (1, 2, 3)]
    try:
        for node in started:
            node.spawn()
        for node in started:
            node.wait_ready()
        yield started
    finally:
        problems = [p for p in (_stop(n.process) for n in started if n.process and n.process.poll() is None) if p]
        if not problems:
            shutil.rmtree(work_dir, ignore_errors=True)
    assert not problems, problems


def bootstrap_all(nodes: list[Node]) -> str:
    return ",".join(n.bootstrap for n in nodes)


def partitions(admin: AdminClient, topic: str) -> dict:
    """Partition index -> librdkafka's PartitionMetadata (leader, replicas, isrs)."""
    md = admin.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return {}
    return t.partitions


def wait_until(what: str, probe):
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as err:  # a node may be down; the next poll asks again
            last = err
        if last is True:
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}; last: {last}", pytrace=False)


def full_isr(admin: AdminClient, topic: str, running: set[int]):
    parts = partitions(admin, topic)
    if len(parts) != PARTITIONS:
        return f"{len(parts)} partitions known"
    for p in parts.values():
        if p.error is not None or p.leader not in running or len(p.replicas) != 3 \
                or sorted(p.isrs) != sorted(p.replicas):
            return f"partition {p.id}: leader {p.leader}, replicas {p.replicas}, isr {p.isrs}, error {p.error}"
    return True


def test_rf3_topic_survives_kill9_of_its_leader(nodes):
    topic = unique_topic("replication")
    admin = AdminClient({"bootstrap.servers": bootstrap_all(nodes)})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3,
                  config={"min.insync.replicas": "2"})],
        operation_timeout=CALL_TIMEOUT_S)
    futures[topic].result(timeout=CALL_TIMEOUT_S)
    wait_until("a full ISR on every partition", lambda: full_isr(admin, topic, {1, 2, 3}))

    acked: list[tuple[int, int, bytes]] = []
    failed: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(f"{msg.partition()}: {err}")
        else:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    producer = Producer({
        "bootstrap.servers": bootstrap_all(nodes),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        # Records wait out the failover rather than fail.
        "message.timeout.ms": 120000,
    })
    sequence = [0] * PARTITIONS

    def produce_phase(phase: str) -> None:
        for i in range(RECORDS_PER_PHASE):
            p = i % PARTITIONS
            producer.produce(topic, value=f"p{p}-{sequence[p]:06d}-{phase}".encode(), partition=p,
                             on_delivery=on_delivery)
            sequence[p] += 1
            producer.poll(0)
        remaining = producer.flush(CONVERGE_TIMEOUT_S)
        assert remaining == 0, f"{phase}: {remaining} records unacknowledged after {CONVERGE_TIMEOUT_S} s"
        assert not failed, failed[:5]

    produce_phase("before")

    leader = partitions(admin, topic)[0].leader
    victim = nodes[leader - 1]
    victim.kill9()
    survivors = {n.node_id for n in nodes if n.process is not None}
    # Written while the old leader is dead: the new one, elected from the
    # ISR, must take and acknowledge them with acks=all.
    produce_phase("leader-dead")
    new_leader = partitions(admin, topic)[0].leader
    assert new_leader in survivors, f"partition 0 led by {new_leader} with node {leader} dead"

    victim.spawn()
    victim.wait_ready()
    wait_until(f"node {leader} back in every ISR", lambda: full_isr(admin, topic, {1, 2, 3}))
    produce_phase("after")
    assert len(acked) == 3 * RECORDS_PER_PHASE

    # A fresh consumer, bootstrapped at the node that was killed, reads it all.
    consumer = Consumer({
        "bootstrap.servers": victim.bootstrap,
        "group.id": f"{topic}-reader",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    read: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    try:
        while sum(map(len, read.values())) < len(acked) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            read[msg.partition()].append((msg.offset(), msg.value()))
        # A little longer, so that a record there twice would show.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                read[msg.partition()].append((msg.offset(), msg.value()))
    finally:
        consumer.close()

    for p in range(PARTITIONS):
        values = [v for _, v in read[p]]
        want = [v for ap, _, v in sorted(a for a in acked if a[0] == p)]
        assert values == want, (
            f"partition {p}: read {len(values)} records, {len(want)} acked; "
            f"first difference at {next((i for i, (a, b) in enumerate(zip(values, want)) if a != b), None)}")
        # Each acknowledged record sits at the offset its ack named.
        at = dict(read[p])
        assert all(at.get(offset) == value for ap, offset, value in acked if ap == p and offset >= 0)

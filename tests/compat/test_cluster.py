"""A 3-node Weir cluster on 127.0.0.1 through confluent-kafka and kcat.

The module starts its own three `weir serve` processes (node ids 1-3, each a
broker and a metadata quorum voter, `--controller-voters` naming all three)
rather than the session's single broker. A node listens only once it has
registered with the controller, so all three answering ApiVersions means the
cluster is formed. Clients are bootstrapped at different nodes on purpose:
each must find the partition leaders on the others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BROKER_HOST, Broker, _broker_logs, _free_port, _stop, _wait_until_ready, weir_binary
from weir_compat import unique_topic

PARTITIONS = 12
RECORDS = 240
CALL_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 60.0
KCAT_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def cluster():
    """Three nodes; yields their Broker records, node id i+1 at index i."""
    if os.environ.get("WEIR_COMPAT_BOOTSTRAP"):
        pytest.skip("the cluster tests start their own three nodes")
    binary = weir_binary()
    work_dir = Path(tempfile.mkdtemp(prefix="weir-compat-cluster-"))
    voters = ",".join(f"{i}@{BROKER_HOST}:{_free_port()}" for i in (1, 2, 3))
    env = {key: value for key, value in os.environ.items() if not key.startswith("WEIR_")}
    # Each broker its own ephemeral HTTP (metrics) port: several run at once.
    env["WEIR_HTTP_LISTEN"] = "127.0.0.1:0"
    nodes = []
    for node_id in (1, 2, 3):
        port = _free_port()
        data_dir = work_dir / f"node-{node_id}"
        data_dir.mkdir()
        log_path = work_dir / f"node-{node_id}.log"
        _broker_logs.append(log_path)
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [str(binary), "serve", "--node-id", str(node_id), "--data-dir", str(data_dir),
                 "--listen", f"{BROKER_HOST}:{port}", "--controller-voters", voters,
                 "--group-initial-rebalance-delay-ms", "100"],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        nodes.append(Broker(BROKER_HOST, port, data_dir, log_path, process))
    try:
        for node in nodes:
            problem = _wait_until_ready(node.process, node.port)
            if problem is not None:
                pytest.fail(f"node at {node.bootstrap}: {problem} (log: {node.log_path})", pytrace=False)
        yield nodes
    finally:
        problems = [p for p in (_stop(n.process) for n in nodes if n.process.poll() is None) if p]
        if not problems:
            shutil.rmtree(work_dir, ignore_errors=True)
    assert not problems, problems


@pytest.fixture(scope="module")
def topic(cluster):
    """A 12-partition topic created through node 1's admin client."""
    name = unique_topic("cluster")
    admin = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)],
                                  operation_timeout=CALL_TIMEOUT_S)
    futures[name].result(timeout=CALL_TIMEOUT_S)
    return name


def kcat_metadata(kcat: str, node: Broker) -> dict:
    out = subprocess.run([kcat, "-b", node.bootstrap, "-L", "-J", "-m", "10"], check=True,
                         capture_output=True, timeout=KCAT_TIMEOUT_S)
    return json.loads(out.stdout)


def comparable(md: dict) -> dict:
    """kcat -L's answer minus what names the broker that answered."""
    md = dict(md)
    md.pop("originating_broker", None)
    md.pop("query", None)
    md["brokers"] = sorted(md["brokers"], key=lambda b: b["id"])
    md["topics"] = sorted(
        ({**t, "partitions": sorted(t["partitions"], key=lambda p: p["partition"])} for t in md["topics"]),
        key=lambda t: t["topic"],
    )
    return md


def leaders(md: dict, topic: str) -> dict[int, int]:
    t = next(t for t in md["topics"] if t["topic"] == topic)
    return {p["partition"]: p["leader"] for p in t["partitions"]}


def test_partitions_are_spread_and_every_broker_tells_the_same_metadata(cluster, topic, kcat):
    answers = {}
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        answers = {i + 1: comparable(kcat_metadata(kcat, node)) for i, node in enumerate(cluster)}
        if answers[1] == answers[2] == answers[3] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answers[1] == answers[2] == answers[3], json.dumps(answers, indent=1)
    md = answers[1]
    assert [(b["id"], b["name"]) for b in md["brokers"]] == [
        (i + 1, node.bootstrap) for i, node in enumerate(cluster)
    ]
    assert md["controllerid"] in (1, 2, 3)
    by_leader = Counter(leaders(md, topic).values())
    assert by_leader == {1: 4, 2: 4, 3: 4}, by_leader
    t = next(t for t in md["topics"] if t["topic"] == topic)
    for p in t["partitions"]:
        assert [r["id"] for r in p["replicas"]] == [p["leader"]]
        assert [r["id"] for r in p["isrs"]] == [p["leader"]]


def test_producer_and_a_group_across_brokers_see_every_record_once(cluster, topic):
    members = []
    for node in (cluster[0], cluster[2]):
        consumer = Consumer({
            "bootstrap.servers": node.bootstrap,
            "group.id": f"{topic}-group",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
        })
        consumer.subscribe([topic])
        members.append(consumer)
    try:
        # Produce only once the group has settled, so that no record can be
        # handed to a member that then loses its partition uncommitted.
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            for c in members:
                msg = c.poll(0.1)
                assert msg is None or msg.error(), "a record before any was produced"
            split = [{tp.partition for tp in c.assignment()} for c in members]
            if all(split) and not (split[0] & split[1]) and len(split[0] | split[1]) == PARTITIONS:
                break
            assert time.monotonic() < deadline, f"group never settled: {split}"

        producer = Producer({"bootstrap.servers": cluster[1].bootstrap, "acks": "all", "linger.ms": 5})
        failures = []
        for i in range(RECORDS):
            producer.produce(topic, key=f"key-{i}", value=f"value-{i}", partition=i % PARTITIONS,
                             on_delivery=lambda err, _msg: err and failures.append(err))
        assert producer.flush(CALL_TIMEOUT_S) == 0
        assert not failures, failures

        seen: Counter[str] = Counter()
        per_member = [0, 0]
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while len(seen) < RECORDS:
            for i, c in enumerate(members):
                msg = c.poll(0.1)
                if msg is None or msg.error():
                    continue
                assert msg.partition() in split[i], (i, msg.partition(), split[i])
                assert msg.value().decode() == "value-" + msg.key().decode()[4:]
                seen[msg.key().decode()] += 1
                per_member[i] += 1
            assert time.monotonic() < deadline, f"group read {len(seen)} of {RECORDS}"
        for _ in range(5):
            for c in members:
                msg = c.poll(0.1)
                if msg is not None and not msg.error():
                    seen[msg.key().decode()] += 1
        assert {k for k, n in seen.items() if n != 1} == set()
        assert all(per_member), per_member
    finally:
        for c in members:
            c.close()


def test_kcat_produces_and_consumes_through_a_broker_that_does_not_lead(cluster, topic, kcat):
    md = comparable(kcat_metadata(kcat, cluster[0]))
    # A partition led by node 3, written through node 1 and read through node 2.
    partition = next(p for p, leader in sorted(leaders(md, topic).items()) if leader == 3)
    lines = [f"kcat-{i}" for i in range(20)]
    subprocess.run([kcat, "-b", cluster[0].bootstrap, "-P", "-t", topic, "-p", str(partition)],
                   input="\n".join(lines).encode() + b"\n", check=True, timeout=KCAT_TIMEOUT_S)
    out = subprocess.run(
        [kcat, "-b", cluster[1].bootstrap, "-C", "-t", topic, "-p", str(partition), "-o", "beginning", "-e",
         "-J", "-q"],
        check=True, capture_output=True, timeout=KCAT_TIMEOUT_S,
    )
    values = [json.loads(line)["payload"] for line in out.stdout.decode().splitlines() if line.strip()]
    assert [v for v in values if v.startswith("kcat-")] == lines

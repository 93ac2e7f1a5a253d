"""The `/metrics` endpoint read as Prometheus reads it: after a known
confluent-kafka workload (records produced, a group that read and committed
part of them), the whole exposition must parse with the reference Python
parser of its format (prometheus_client's OpenMetrics parser, which is
stricter than the classic text one: it requires the closing `# EOF` and
counters' `_total` samples under their family), and the counts must match
the workload."""

from __future__ import annotations

import json
import re
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import conftest
from confluent_util import admin_client, create_topic
from weir_compat import unique_topic

RECORDS = 300
VALUE_BYTES = 64
COMMITTED = 120
CALL_TIMEOUT_S = 30.0


def scrape(http: str) -> str:
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=CALL_TIMEOUT_S) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        return reply.read().decode()


def test_metrics_parse_whole_and_count_a_known_workload(tmp_path):
    http = f"127.0.0.1:{conftest._free_port()}"
    broker = conftest.start_broker(
        conftest.weir_binary(),
        tmp_path,
        ("--http-listen", http, "--group-initial-rebalance-delay-ms", "0"),
    )
    try:
        topic = unique_topic("metered")
        group = unique_topic("metered-group")
        create_topic(admin_client(broker), topic, partitions=1)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        for n in range(RECORDS):
            producer.produce(topic, key=f"k{n}".encode(), value=b"v" * VALUE_BYTES)
        assert producer.flush(CALL_TIMEOUT_S) == 0

        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topic])
        read = 0
        deadline = time.monotonic() + 60
        while read < COMMITTED:
            assert time.monotonic() < deadline, f"read only {read}"
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                read += 1
        consumer.commit(offsets=[TopicPartition(topic, 0, COMMITTED)], asynchronous=False)

        families = {f.name: f for f in text_string_to_metric_families(scrape(http))}

        def value(family: str, sample: str, **labels: str) -> float:
            found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
            assert len(found) == 1, f"{sample}{labels}: {families[family].samples}"
            return found[0]

        assert families["weir_topic_records_in"].type == "counter"
        assert value("weir_topic_records_in", "weir_topic_records_in_total", topic=topic) == RECORDS
        bytes_in = value("weir_topic_bytes_in", "weir_topic_bytes_in_total", topic=topic)
        assert bytes_in >= RECORDS * VALUE_BYTES
        size = value("weir_partition_log_size_bytes", "weir_partition_log_size_bytes", topic=topic, partition="0")
        assert bytes_in == size
        lag = value("weir_group_lag_offsets", "weir_group_lag_offsets", group=group, topic=topic, partition="0")
        assert lag == RECORDS - COMMITTED
        assert value("weir_group_members", "weir_group_members", group=group) == 1

        latency = families["weir_request_duration_seconds"]
        assert latency.type == "histogram"
        produce_counts = [
            s for s in latency.samples if s.name.endswith("_count") and s.labels["api"] == "Produce"
        ]
        assert produce_counts and all(s.value >= 1 for s in produce_counts)
        # Each histogram's +Inf bucket holds all of its observations.
        for s in produce_counts:
            inf = [
                b.value
                for b in latency.samples
                if b.name.endswith("_bucket")
                and b.labels.get("le") == "+Inf"
                and b.labels["version"] == s.labels["version"]
                and b.labels["api"] == "Produce"
            ]
            assert inf == [s.value]

        # The Grafana dashboard queries only metrics this scrape has (a family may have
        # no samples yet, such as errors before any error; its name still counts).
        dashboard = json.loads((conftest.REPO_ROOT / "packaging" / "grafana" / "weir.json").read_text())
        exposed = set()
        for family in families.values():
            exposed.add(family.name)
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
            exposed.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        queried = set()
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queried.update(re.findall(r"\bweir_[a-z_]+", target["expr"]))
        assert len(queried) >= 20, queried
        assert queried <= exposed, f"dashboard names no such metric: {sorted(queried - exposed)}"
        consumer.close()
    finally:
        problem = conftest._stop(broker.process)
        assert problem is None, problem

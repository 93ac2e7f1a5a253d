"""The read-only JSON admin API (`/v1/...` on the HTTP listener) checked
against its own OpenAPI document (`/v1/openapi.json`) with openapi-core: the
document must be a valid OpenAPI 3.1 description, and every endpoint's answer
(status, content type, body, with additionalProperties false everywhere) must
match it. The values are checked against a known confluent-kafka workload:
records produced, a group that read and committed part of them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

import conftest
from confluent_util import admin_client, create_topic
from weir_compat import unique_topic

RECORDS = 200
COMMITTED = 50
PARTITIONS = 2
CALL_TIMEOUT_S = 30.0


def fetch(http: str, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://{http}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def checked(api: OpenAPI, http: str, path: str, template: str | None = None) -> dict:
    """GETs `path`, validates the answer against the document, returns its body."""
    status, content_type, body = fetch(http, path)
    request = MockRequest(f"http://{http}", "get", path)
    response = MockResponse(body, status_code=status, content_type=content_type)
    # Raises with the offending field when the answer doesn't match the document.
    api.validate_response(request, response)
    return json.loads(body)


def test_admin_api_answers_match_the_openapi_document(tmp_path):
    http = f"127.0.0.1:{conftest._free_port()}"
    broker = conftest.start_broker(
        conftest.weir_binary(),
        tmp_path,
        ("--http-listen", http, "--group-initial-rebalance-delay-ms", "0"),
        extra_env={"WEIR_DEFAULT_PARTITIONS": "3"},
    )
    try:
        status, content_type, raw = fetch(http, "/v1/openapi.json")
        assert status == 200 and content_type == "application/json"
        spec = json.loads(raw)
        assert spec["openapi"].startswith("3.")
        # Validates the document itself (openapi-spec-validator) as it loads.
        api = OpenAPI.from_dict(spec)
        api.check_spec()

        topic = unique_topic("admin-api")
        group = unique_topic("admin-api-group")
        create_topic(admin_client(broker), topic, partitions=PARTITIONS)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        for n in range(RECORDS):
            producer.produce(topic, value=b"v", partition=0)
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

        cluster = checked(api, http, "/v1/cluster")
        assert cluster["controller_id"] == 1 and cluster["node_id"] == 1
        assert [(b["node_id"], b["state"]) for b in cluster["brokers"]] == [(1, "unfenced")]
        assert len(cluster["cluster_id"]) > 0

        topics = checked(api, http, "/v1/topics")["topics"]
        mine = [t for t in topics if t["name"] == topic]
        assert len(mine) == 1 and mine[0]["partitions"] == PARTITIONS
        assert mine[0]["replication_factor"] == 1 and mine[0]["offline_partitions"] == 0
        assert any(t["name"] == "__consumer_offsets" and t["internal"] for t in topics)

        detail = checked(api, http, f"/v1/topics/{topic}")
        assert detail["topic_id"] == mine[0]["topic_id"]
        p0 = detail["partitions"][0]
        assert (p0["partition"], p0["leader"], p0["replicas"], p0["isr"]) == (0, 1, [1], [1])
        log = p0["log"]
        assert log["log_start_offset"] == 0 and log["is_leader"]
        assert log["high_watermark"] == log["log_end_offset"] == log["last_stable_offset"] == RECORDS
        assert detail["partitions"][1]["log"]["log_end_offset"] == 0

        groups = checked(api, http, "/v1/groups")["groups"]
        summary = [g for g in groups if g["group_id"] == group]
        assert len(summary) == 1 and summary[0]["members"] == 1
        assert summary[0]["group_type"] == "classic" and summary[0]["state"] == "Stable"

        detail = checked(api, http, f"/v1/groups/{group}")
        assert len(detail["members"]) == 1
        offsets = {(o["topic"], o["partition"]): o for o in detail["offsets"]}
        committed = offsets[(topic, 0)]
        assert committed["committed_offset"] == COMMITTED
        assert committed["high_watermark"] == RECORDS
        assert committed["lag"] == RECORDS - COMMITTED
        assert detail["total_lag"] == RECORDS - COMMITTED

        entries = {e["name"]: e for e in checked(api, http, "/v1/config")["entries"]}
        assert entries["http_listen"] == {"name": "http_listen", "value": http, "source": "flag"}
        assert entries["default_partitions"]["value"] == 3
        assert entries["default_partitions"]["source"] == "env"
        assert entries["connections_max"]["source"] == "default"
        assert entries["rack"]["value"] is None

        # Unknown things are 404s with the documented error body.
        missing = checked(api, http, "/v1/topics/no-such-topic")
        assert "no-such-topic" in missing["error"]
        assert "error" in checked(api, http, "/v1/groups/no-such-group")
        status, _, body = fetch(http, "/v1/nothing-here")
        assert status == 404 and "error" in json.loads(body)
        # Read-only: no endpoint takes a write.
        for path in ("/v1/topics", f"/v1/topics/{topic}", "/v1/config"):
            status, _, _ = fetch(http, path, method="POST")
            assert status == 405, path
            status, _, _ = fetch(http, path, method="DELETE")
            assert status == 405, path
        consumer.close()
    finally:
        problem = conftest._stop(broker.process)
        assert problem is None, problem

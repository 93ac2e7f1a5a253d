"""Debian's kcat 1.7.1 (librdkafka 2.0.2, the oldest librdkafka the project
targets) against Weir: metadata listing, produce with keys and headers into an
auto-created topic, consume from the beginning, watermarks and
offsets-for-times through query mode.

kcat output is read in JSON mode (-J) so that keys and values need no
delimiter parsing. kcat has no admin commands: the multi-partition topic is
created with confluent-kafka's AdminClient."""

from __future__ import annotations

import json
import subprocess

import pytest

from confluent_util import admin_client, create_topic
from weir_compat import (
    FUTURE_TIMESTAMP_MS,
    RECORD_COUNT,
    SPLIT_INDEX,
    ConsumedRecord,
    Record,
    assert_records_exact,
    assert_timestamps_split,
    now_ms,
    text_records,
    unique_topic,
    wait_past_gap,
)

KCAT_TIMEOUT_S = 180
# kcat's -m: how long it waits for metadata and similar requests.
KCAT_METADATA_TIMEOUT_S = "15"
# Headers kcat -H puts on every record of the second batch, in this order.
BATCH_TWO_HEADERS = (("origin", b"kcat"), ("batch", b"two"))
# ListOffsets timestamps with special meaning, as kcat -Q passes them through.
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


def run_kcat(kcat: str, broker, args: list[str], stdin: bytes | None = None) -> str:
    command = [kcat, "-b", broker.bootstrap, "-m", KCAT_METADATA_TIMEOUT_S, *args]
    completed = subprocess.run(
        command, input=stdin, capture_output=True, timeout=KCAT_TIMEOUT_S, check=False
    )
    stderr = completed.stderr.decode("utf-8", errors="replace")
    assert completed.returncode == 0, f"{command} exited {completed.returncode}:\n{stderr[-5000:]}"
    return completed.stdout.decode("utf-8")


def produce_lines(kcat: str, broker, topic: str, records: list[Record], header_args: list[str]) -> None:
    lines = b"".join(record.key + b"\t" + record.value + b"\n" for record in records)
    # -K takes kcat's escape syntax; "\t" is the two characters backslash, t.
    run_kcat(kcat, broker, ["-P", "-t", topic, "-p", "0", "-K", "\\t", *header_args], stdin=lines)


def decode_headers(raw) -> tuple[tuple[str, bytes], ...]:
    """kcat 1.7.1's -J prints headers as a flat [name, value, name, value, ...]
    array (seen on Debian's build), not the object its -h text describes."""
    if raw is None:
        return ()
    assert isinstance(raw, list) and len(raw) % 2 == 0, f"unexpected headers {raw!r}"
    return tuple((raw[i], raw[i + 1].encode("utf-8")) for i in range(0, len(raw), 2))


def consume_all(kcat: str, broker, topic: str) -> list[ConsumedRecord]:
    output = run_kcat(kcat, broker, ["-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-J", "-q"])
    consumed = []
    for line in output.splitlines():
        if not line:
            continue
        message = json.loads(line)
        assert message["topic"] == topic and message["partition"] == 0, line
        assert message["tstype"] == "create", line
        consumed.append(
            ConsumedRecord(
                offset=message["offset"],
                key=None if message["key"] is None else message["key"].encode("utf-8"),
                value=None if message["payload"] is None else message["payload"].encode("utf-8"),
                headers=decode_headers(message.get("headers")),
                timestamp_ms=message["ts"],
            )
        )
    return consumed


def query_offset(kcat: str, broker, topic: str, timestamp_ms: int) -> int:
    output = run_kcat(kcat, broker, ["-Q", "-t", f"{topic}:0:{timestamp_ms}", "-J"])
    # {"<topic>": {"topic": "<topic>", "0": {"partition": 0, "offset": N}}}
    result = json.loads(output)[topic]["0"]
    assert "error" not in result, f"ts {timestamp_ms}: {result}"
    return result["offset"]


def list_metadata(kcat: str, broker, topic: str | None = None) -> dict:
    args = ["-L", "-J"] + (["-t", topic] if topic else [])
    return json.loads(run_kcat(kcat, broker, args))


@pytest.fixture(scope="module")
def produced(kcat, broker):
    """An auto-created topic holding the standard two batches (the second with
    headers); returns (topic, records, probe_ms)."""
    topic = unique_topic("kcat")
    records = text_records()
    produce_lines(kcat, broker, topic, records[:SPLIT_INDEX], [])
    probe_ms = wait_past_gap(now_ms())
    header_args = [arg for name, value in BATCH_TWO_HEADERS for arg in ("-H", f"{name}={value.decode()}")]
    produce_lines(kcat, broker, topic, records[SPLIT_INDEX:], header_args)
    expected = records[:SPLIT_INDEX] + [
        Record(key=r.key, value=r.value, headers=BATCH_TWO_HEADERS) for r in records[SPLIT_INDEX:]
    ]
    return topic, expected, probe_ms


def assert_single_broker(metadata: dict, broker) -> None:
    assert metadata["brokers"] == [{"id": 1, "name": broker.bootstrap}]
    assert metadata["controllerid"] == 1


def assert_partitions(metadata: dict, topic: str, count: int) -> None:
    by_name = {entry["topic"]: entry for entry in metadata["topics"]}
    assert topic in by_name, f"{topic} missing from {sorted(by_name)}"
    entry = by_name[topic]
    assert "error" not in entry, entry
    assert [p["partition"] for p in sorted(entry["partitions"], key=lambda p: p["partition"])] == list(range(count))
    for partition in entry["partitions"]:
        assert "error" not in partition, partition
        assert partition["leader"] == 1
        assert partition["replicas"] == [{"id": 1}]
        assert partition["isrs"] == [{"id": 1}]


def test_kcat_metadata_lists_broker_and_topic_created_by_admin(kcat, broker):
    topic = unique_topic("kcat-meta")
    create_topic(admin_client(broker), topic, partitions=3)
    everything = list_metadata(kcat, broker)
    assert_single_broker(everything, broker)
    assert_partitions(everything, topic, 3)
    one = list_metadata(kcat, broker, topic)
    assert_single_broker(one, broker)
    assert [entry["topic"] for entry in one["topics"]] == [topic]
    assert_partitions(one, topic, 3)


def test_kcat_produce_auto_creates_topic_with_one_partition(kcat, broker, produced):
    topic, _, _ = produced
    assert_partitions(list_metadata(kcat, broker), topic, 1)


def test_kcat_consume_from_beginning_returns_every_record_exactly(kcat, broker, produced):
    topic, expected, _ = produced
    assert_records_exact(expected, consume_all(kcat, broker, topic))


def test_kcat_record_timestamps_are_kept_as_produced(kcat, broker, produced):
    topic, _, probe_ms = produced
    assert_timestamps_split(consume_all(kcat, broker, topic), probe_ms)


def test_kcat_query_watermarks_are_zero_and_record_count(kcat, broker, produced):
    topic, _, _ = produced
    assert query_offset(kcat, broker, topic, EARLIEST_TIMESTAMP) == 0
    assert query_offset(kcat, broker, topic, LATEST_TIMESTAMP) == RECORD_COUNT


def test_kcat_query_offsets_for_times_finds_first_record_of_second_batch(kcat, broker, produced):
    topic, _, probe_ms = produced
    assert query_offset(kcat, broker, topic, probe_ms) == SPLIT_INDEX
    assert query_offset(kcat, broker, topic, 0) == 0
    # No record at or after the timestamp: Kafka answers offset -1.
    assert query_offset(kcat, broker, topic, FUTURE_TIMESTAMP_MS) == -1


# RecordBatch: attributes (int16) at byte 21; the low 3 bits are the codec.
BATCH_ATTRIBUTES_OFFSET = 21
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.mark.parametrize("codec", sorted(CODEC_IDS))
def test_kcat_compresses_batches_with_every_codec(kcat, broker, codec):
    # librdkafka 2.0.2 turns gzip, snappy and lz4 on only when the broker lists
    # Produce v0 in ApiVersions; otherwise it sends them uncompressed without
    # an error. The stored batch shows which codec it really used.
    if not broker.data_dir.parts:
        pytest.skip("needs the broker's data directory")
    topic = unique_topic(f"kcat-{codec}")
    lines = b"".join(b"record %d with some repetitive text text text\n" % i for i in range(50))
    run_kcat(kcat, broker, ["-P", "-t", topic, "-p", "0", "-z", codec], stdin=lines)
    segments = sorted((broker.data_dir / f"{topic}-0").glob("*.log"))
    assert segments, f"no segment for {topic}"
    batch = segments[0].read_bytes()
    assert len(batch) > BATCH_ATTRIBUTES_OFFSET + 2
    attributes = int.from_bytes(batch[BATCH_ATTRIBUTES_OFFSET : BATCH_ATTRIBUTES_OFFSET + 2], "big")
    assert attributes & 0x7 == CODEC_IDS[codec], f"kcat -z {codec} stored codec {attributes & 0x7}"

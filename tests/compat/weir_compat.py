"""Shared data and checks for the client-compatibility suite.

Every client test produces the same shape of data, so that a failure in one
client can be compared with the others: RECORD_COUNT keyed records written to
partition 0 in two batches with a clear gap in time between them. The gap lets
each client's offsets-for-times call be checked against an exact answer
(SPLIT_INDEX, the first record of the second batch).
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from dataclasses import dataclass

RECORD_COUNT = 10_000
# Records [0, SPLIT_INDEX) are the first batch, [SPLIT_INDEX, RECORD_COUNT) the second.
SPLIT_INDEX = 5_000
# Wait between the two batches; the offsets-for-times probe sits in the middle of it.
BATCH_GAP_MS = 40

# A timestamp no record of the suite can carry (year 2100), for "no such offset".
FUTURE_TIMESTAMP_MS = 4_102_444_800_000

# Kafka error codes the suite checks for on the raw wire.
ERROR_UNSUPPORTED_VERSION = 35

# Kafka api keys the contract says the broker supports.
API_KEYS_REQUIRED = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    18: "ApiVersions",
    19: "CreateTopics",
    20: "DeleteTopics",
    32: "DescribeConfigs",
    33: "AlterConfigs",
    37: "CreatePartitions",
    60: "DescribeCluster",
}

# Bounds for reading raw responses from a broker under test.
RAW_RESPONSE_BYTES_MAX = 1 << 20


@dataclass(frozen=True)
class Record:
    key: bytes
    value: bytes
    # Empty tuple means "no headers".
    headers: tuple[tuple[str, bytes], ...]


def unique_topic(prefix: str) -> str:
    """A topic name no other test (or earlier run on the same data dir) uses."""
    return f"compat-{prefix}-{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def binary_records(count: int = RECORD_COUNT) -> list[Record]:
    """Records whose values hold arbitrary bytes (every byte value occurs), with
    headers on every 7th record, one of them with a repeated header name."""
    records = []
    for i in range(count):
        tail = bytes((i * 31 + j) % 256 for j in range(i % 97))
        value = f"value-{i:05d}|".encode() + tail
        headers: tuple[tuple[str, bytes], ...] = ()
        if i % 7 == 3:
            headers = (("trace-id", f"t-{i}".encode()), ("source", b"compat\x00\xff"))
        if i % 700 == 10:
            headers = (("dup", b"first"), ("dup", b"second"), ("empty", b""))
        records.append(Record(key=f"key-{i:05d}".encode(), value=value, headers=headers))
    return records


def text_records(count: int = RECORD_COUNT) -> list[Record]:
    """Records for line-oriented tools (kcat -P): no tab or newline anywhere,
    but some multi-byte UTF-8 so that byte handling is still exercised."""
    records = []
    for i in range(count):
        filler = "ü" * (i % 5) + "x" * (i % 61)
        records.append(
            Record(key=f"key-{i:05d}".encode(), value=f"value-{i:05d}|{filler}".encode(), headers=())
        )
    return records


def wait_past_gap(batch_one_done_ms: int) -> int:
    """Sleep until the gap after the first batch has passed; return the probe
    timestamp that lies strictly between the two batches' record timestamps."""
    while now_ms() < batch_one_done_ms + BATCH_GAP_MS:
        time.sleep(0.005)
    return batch_one_done_ms + BATCH_GAP_MS // 2


@dataclass(frozen=True)
class ConsumedRecord:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


def assert_records_exact(expected: list[Record], consumed: list[ConsumedRecord]) -> None:
    """Every record present once, at offset == index, with identical key,
    value and headers. Reports the first difference rather than a huge diff."""
    for index, (want, got) in enumerate(zip(expected, consumed)):
        assert got.offset == index, f"record {index}: offset {got.offset}, expected {index}"
        assert got.key == want.key, f"record {index}: key {got.key!r}, expected {want.key!r}"
        assert got.value == want.value, f"record {index}: value {got.value!r}, expected {want.value!r}"
        assert got.headers == want.headers, (
            f"record {index}: headers {got.headers!r}, expected {want.headers!r}"
        )
    assert len(consumed) == len(expected), (
        f"consumed {len(consumed)} records, expected exactly {len(expected)}"
    )


def assert_timestamps_split(consumed: list[ConsumedRecord], probe_ms: int) -> None:
    """The premise of the offsets-for-times checks: the first batch is strictly
    before the probe and the second strictly after. It also checks that the
    broker kept each record's CreateTime as sent."""
    for record in consumed:
        if record.offset < SPLIT_INDEX:
            assert record.timestamp_ms < probe_ms, (
                f"record {record.offset} of batch one has timestamp {record.timestamp_ms} >= probe {probe_ms}"
            )
        else:
            assert record.timestamp_ms > probe_ms, (
                f"record {record.offset} of batch two has timestamp {record.timestamp_ms} <= probe {probe_ms}"
            )


# ---------------------------------------------------------------------------
# Raw ApiVersions: used to tell that the broker is up and speaking Kafka, and
# to check version negotiation without any client library in the way.


def _read_exact(sock: socket.socket, length: int) -> bytes:
    chunks = []
    remaining = length
    while remaining > 0:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError(f"connection closed with {remaining} of {length} bytes unread")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class ApiVersionsReply:
    correlation_id: int
    error_code: int
    # api_key -> (min_version, max_version)
    api_versions: dict[int, tuple[int, int]]


def api_versions_raw(host: str, port: int, version: int, timeout_s: float = 5.0) -> ApiVersionsReply:
    """Send ApiVersions at `version` and decode the v0-shaped start of the reply
    (correlation id, error code, api key ranges). Only v0 is decoded in full;
    for an unsupported version Kafka answers in v0 form, which is what the
    suite looks at."""
    correlation_id = 0x5EED
    client_id = b"weir-compat"
    header = struct.pack(">hhih", 18, version, correlation_id, len(client_id)) + client_id
    if version >= 3:
        # Request header v2 (flexible versions) ends with an empty tagged-field section.
        header += b"\x00"
    body = b""
    if version >= 3:
        # client_software_name and client_software_version as compact strings
        # (varint length + 1), then an empty tagged-field section.
        for text in (b"weir-compat", b"1"):
            body += bytes([len(text) + 1]) + text
        body += b"\x00"
    frame = header + body
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        (size,) = struct.unpack(">i", _read_exact(sock, 4))
        if not 6 <= size <= RAW_RESPONSE_BYTES_MAX:
            raise ValueError(f"ApiVersions response size {size} out of bounds")
        payload = _read_exact(sock, size)
    (got_correlation_id, error_code) = struct.unpack_from(">ih", payload, 0)
    api_versions: dict[int, tuple[int, int]] = {}
    if version == 0 or error_code == ERROR_UNSUPPORTED_VERSION:
        (count,) = struct.unpack_from(">i", payload, 6)
        if not 0 <= count <= (len(payload) - 10) // 6:
            raise ValueError(f"ApiVersions array count {count} does not fit in {len(payload)} bytes")
        for index in range(count):
            api_key, min_version, max_version = struct.unpack_from(">hhh", payload, 10 + 6 * index)
            api_versions[api_key] = (min_version, max_version)
    return ApiVersionsReply(got_correlation_id, error_code, api_versions)

#!/usr/bin/env python3
"""Capture the first request frames real Kafka clients send, for golden tests.

Runs a throwaway broker stand-in on 127.0.0.1 (ephemeral port) that answers just
enough (ApiVersions, Metadata, Produce) for kcat and kafka-python to get as far
as producing one message, and saves each distinct (client, api, version) request
frame, without its 4-byte length prefix, as <client>_<api>_v<version>.bin next
to this script.

Needs: Debian's kcat (librdkafka 2.0.2) and `pip install kafka-python`.
Re-run: python3 crates/protocol/tests/golden/capture.py
"""
import os
import socket
import struct
import subprocess
import sys
import threading

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
NAMES = {0: "produce", 3: "metadata", 18: "api_versions"}
# What the stand-in advertises: non-flexible Metadata and Produce keep the
# hand-written responses below simple; Fetch is listed (never answered) because
# librdkafka only uses record batch v2 when it sees Fetch v4+.
ADVERTISED = [(0, 3, 7), (1, 4, 11), (3, 0, 4), (18, 0, 4)]
TOPIC = b"golden"

saved = set()
client_tag = threading.local()
lock = threading.Lock()


def s16(b):
    return struct.pack(">h", len(b)) + b


def uvarint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def api_versions_response(version):
    if version >= 3:
        body = struct.pack(">h", 0) + uvarint(len(ADVERTISED) + 1)
        for k, lo, hi in ADVERTISED:
            body += struct.pack(">hhh", k, lo, hi) + b"\x00"
        return body + struct.pack(">i", 0) + b"\x00"
    body = struct.pack(">hi", 0, len(ADVERTISED))
    for k, lo, hi in ADVERTISED:
        body += struct.pack(">hhh", k, lo, hi)
    if version >= 1:
        body += struct.pack(">i", 0)
    return body


def metadata_response(version, port):
    body = b""
    if version >= 3:
        body += struct.pack(">i", 0)
    body += struct.pack(">i", 1) + struct.pack(">i", 1) + s16(b"127.0.0.1") + struct.pack(">i", port)
    if version >= 1:
        body += struct.pack(">h", -1)  # rack: null
    if version >= 2:
        body += s16(b"golden-cluster")
    if version >= 1:
        body += struct.pack(">i", 1)  # controller id
    body += struct.pack(">i", 1) + struct.pack(">h", 0) + s16(TOPIC)
    if version >= 1:
        body += b"\x00"  # is_internal
    body += struct.pack(">i", 1) + struct.pack(">hii", 0, 0, 1)
    body += struct.pack(">ii", 1, 1) + struct.pack(">ii", 1, 1)  # replicas, isr
    return body


def produce_response(version):
    body = struct.pack(">i", 1) + s16(TOPIC) + struct.pack(">i", 1)
    body += struct.pack(">ihq", 0, 0, 0)
    if version >= 2:
        body += struct.pack(">q", -1)
    if version >= 5:
        body += struct.pack(">q", 0)
    return body + struct.pack(">i", 0)


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve_conn(conn, port, client):
    conn.settimeout(10)
    try:
        while True:
            prefix = read_exact(conn, 4)
            if prefix is None:
                return
            (length,) = struct.unpack(">i", prefix)
            frame = read_exact(conn, length)
            if frame is None:
                return
            api_key, version, correlation_id = struct.unpack(">hhi", frame[:8])
            name = NAMES.get(api_key, "api%d" % api_key)
            key = (client, api_key, version)
            with lock:
                if key not in saved:
                    saved.add(key)
                    path = os.path.join(OUT_DIR, "%s_%s_v%d.bin" % (client, name, version))
                    with open(path, "wb") as f:
                        f.write(frame)
                    print("saved", os.path.basename(path), len(frame), "bytes")
            if api_key == 18:
                body = api_versions_response(version)
            elif api_key == 3:
                body = metadata_response(version, port)
            elif api_key == 0:
                body = produce_response(version)
            else:
                return
            reply = struct.pack(">i", correlation_id) + body
            conn.sendall(struct.pack(">i", len(reply)) + reply)
    except (OSError, struct.error):
        return
    finally:
        conn.close()


def run_listener(client):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.5)
    port = sock.getsockname()[1]
    stop = threading.Event()

    def accept_loop():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=serve_conn, args=(conn, port, client), daemon=True).start()

    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    return port, stop, sock


def capture_kcat():
    port, stop, sock = run_listener("kcat")
    try:
        subprocess.run(
            ["kcat", "-P", "-b", "127.0.0.1:%d" % port, "-t", TOPIC.decode(), "-p", "0",
             "-X", "message.timeout.ms=3000", "-X", "client.id=kcat-golden"],
            input=b"hello weir\n", timeout=15, check=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    finally:
        stop.set()
        sock.close()


def capture_kafka_python():
    from kafka import KafkaProducer

    port, stop, sock = run_listener("kafka_python")
    try:
        producer = KafkaProducer(bootstrap_servers="127.0.0.1:%d" % port, client_id="kafka-python-golden",
                                 request_timeout_ms=3000, max_block_ms=5000, linger_ms=0,
                                 enable_idempotence=False)
        producer.send(TOPIC.decode(), b"hello weir", partition=0).get(timeout=5)
        producer.close(timeout=2)
    except Exception as e:  # the stand-in is minimal; keep what was captured
        print("kafka-python stopped:", e, file=sys.stderr)
    finally:
        stop.set()
        sock.close()


if __name__ == "__main__":
    capture_kcat()
    capture_kafka_python()

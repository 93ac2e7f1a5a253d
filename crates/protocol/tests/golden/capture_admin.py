#!/usr/bin/env python3
"""Capture kafka-python's requests for the admin APIs of Kafka 4.1's API level
(DescribeTopicPartitions, ElectLeaders, AlterPartitionReassignments,
ListPartitionReassignments, AlterReplicaLogDirs, ListConfigResources), for
golden tests.

Starts a Weir broker (the release binary, or WEIR_BIN) that advertises a
recording proxy in front of it, drives kafka-python's admin client through the
proxy, and saves the first frame of each (api, version), without its 4-byte
length prefix, as kafka_python_<api>_v<version>.bin next to this script.

Needs: a built weir and `pip install kafka-python` (3.0 or newer).
Re-run: python3 crates/protocol/tests/golden/capture_admin.py
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import TopicPartitionReplica

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(OUT_DIR, "..", "..", "..", ".."))
NAMES = {
    34: "alter_replica_log_dirs",
    43: "elect_leaders",
    45: "alter_partition_reassignments",
    46: "list_partition_reassignments",
    74: "list_config_resources",
    75: "describe_topic_partitions",
}
saved = set()
lock = threading.Lock()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def client_to_broker(client, broker):
    try:
        while True:
            size = read_exact(client, 4)
            frame = read_exact(client, struct.unpack(">i", size)[0])
            key, version = struct.unpack(">hh", frame[:4])
            with lock:
                if key in NAMES and (key, version) not in saved:
                    saved.add((key, version))
                    path = os.path.join(OUT_DIR, f"kafka_python_{NAMES[key]}_v{version}.bin")
                    with open(path, "wb") as out:
                        out.write(frame)
            broker.sendall(size + frame)
    except (EOFError, OSError):
        pass
    finally:
        broker.close()


def broker_to_client(broker, client):
    try:
        while True:
            data = broker.recv(65536)
            if not data:
                break
            client.sendall(data)
    except OSError:
        pass
    finally:
        client.close()


def proxy(listener, broker_port):
    while True:
        client, _ = listener.accept()
        broker = socket.create_connection(("127.0.0.1", broker_port))
        threading.Thread(target=client_to_broker, args=(client, broker), daemon=True).start()
        threading.Thread(target=broker_to_client, args=(broker, client), daemon=True).start()


def main():
    binary = os.environ.get("WEIR_BIN", os.path.join(REPO, "target", "release", "weir"))
    broker_port, proxy_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="weir-capture-")
    weir = subprocess.Popen(
        [binary, "serve", "--data-dir", os.path.join(data_dir, "data"),
         "--listen", f"127.0.0.1:{broker_port}", "--advertised-listen", f"127.0.0.1:{proxy_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        listener = socket.create_server(("127.0.0.1", proxy_port))
        threading.Thread(target=proxy, args=(listener, broker_port), daemon=True).start()
        time.sleep(1)
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{proxy_port}", client_id="golden")
        admin.create_topics([NewTopic("golden", num_partitions=2, replication_factor=1)])
        admin.describe_topic_partitions(["golden"], response_partition_limit=1,
                                        cursor={"topic_name": "golden", "partition_index": 1})
        admin.elect_leaders(0, {"golden": [0, 1]}, raise_errors=False)
        admin.alter_partition_reassignments({TopicPartition("golden", 0): [1], TopicPartition("golden", 1): None})
        admin.list_partition_reassignments({"golden": [0, 1]})
        admin.alter_replica_log_dirs({TopicPartitionReplica("golden", 0, 1): os.path.join(data_dir, "data")})
        admin.list_config_resources(["TOPIC", "BROKER"])
        admin.close()
    finally:
        weir.terminate()
        weir.wait()
    missing = set(NAMES) - {key for key, _ in saved}
    print("saved:", sorted(saved), file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

"""kafka-python's KIP-227 incremental fetch sessions against Weir.

kafka-python (2.1+) opens a fetch session with its first full fetch and then
sends incremental fetches that list only the partitions whose position moved;
the broker's answers leave out partitions with nothing new. This test consumes
records that arrive on different partitions in waves and checks that every
record is read once, in order, while the client's session stays incremental
and never hits a session error. (librdkafka does not use fetch sessions.)"""

from __future__ import annotations

import logging

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from weir_compat import unique_topic

CALL_TIMEOUT_MS = 30_000
PARTITIONS = 4
WAVES = 5
RECORDS_PER_WAVE = 20
POLL_ROUNDS_MAX = 120


def test_kafka_python_consumes_through_an_incremental_fetch_session(broker, caplog):
    topic = unique_topic("fetch-sessions")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=CALL_TIMEOUT_MS)
    try:
        admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,
        request_timeout_ms=CALL_TIMEOUT_MS,
        enable_incremental_fetch_sessions=True,
    )
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    seen: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    sent: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    caplog.set_level(logging.DEBUG, logger="kafka.consumer.fetcher")
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        for wave in range(WAVES):
            # Each wave writes to one partition only; the others stay idle and must not be
            # answered (nor lost) by the incremental fetches.
            partition = wave % PARTITIONS
            for i in range(RECORDS_PER_WAVE):
                value = f"w{wave}-r{i}".encode()
                producer.send(topic, value=value, partition=partition)
                sent[partition].append(value)
            producer.flush(timeout=CALL_TIMEOUT_MS / 1000)
            want = sum(len(v) for v in sent.values())
            for _ in range(POLL_ROUNDS_MAX):
                if sum(len(v) for v in seen.values()) >= want:
                    break
                for tp, records in consumer.poll(timeout_ms=300).items():
                    seen[tp.partition].extend(r.value for r in records)
            assert seen == sent, f"after wave {wave}"
        # Idle rounds: incremental fetches whose answers list no partition, and no record
        # comes twice.
        for _ in range(6):
            assert consumer.poll(timeout_ms=300) == {}
        handlers = consumer._fetcher._session_handlers
        assert handlers, "kafka-python built no fetch session handler"
        metadata = [h.next_metadata for h in handlers.values()]
        assert all(m.session_id != 0 for m in metadata), [
            (m.session_id, m.epoch) for m in metadata
        ]
        # Many incremental fetches went by on the same session.
        assert all(m.epoch > 5 for m in metadata), [(m.session_id, m.epoch) for m in metadata]
        problems = [
            r.getMessage()
            for r in caplog.records
            if "unable to process the fetch request" in r.getMessage()
            or "invalid" in r.getMessage().lower()
            or "closing session" in r.getMessage()
        ]
        assert problems == [], problems
        incremental = [r.getMessage() for r in caplog.records if "Built incremental fetch" in r.getMessage()]
        assert len(incremental) > 5, "kafka-python never sent an incremental fetch"
    finally:
        consumer.close()
        producer.close()

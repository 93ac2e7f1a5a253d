"""Configs and the rules that go with them, through confluent-kafka and
kafka-python: list configs under APPEND/SUBTRACT, keys required on compacted
topics, the internal topics refused to clients, broker configs with their real
sources (static, default, dynamic) and KIP-848 group configs."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    ResourceType,
)
from kafka import errors as kafka_errors
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition as KpTopicPartition

from confluent_util import CALL_TIMEOUT_S, admin_client, create_topic, producer_config
from weir_compat import unique_topic

OFFSETS_TOPIC = "__consumer_offsets"
# The compat harness starts the broker with the default node id.
NODE_ID = "1"


def source_of(entry: ConfigEntry) -> int:
    # The C extension hands the source over as an int in some versions.
    return entry.source.value if isinstance(entry.source, ConfigSource) else entry.source


def describe(admin, resource_type: ResourceType, name: str) -> dict:
    futures = admin.describe_configs([ConfigResource(resource_type, name)], request_timeout=CALL_TIMEOUT_S)
    [future] = futures.values()
    return future.result(timeout=CALL_TIMEOUT_S)


def incremental(admin, resource_type: ResourceType, name: str, *changes: tuple[str, AlterConfigOpType, str | None]):
    """Runs one IncrementalAlterConfigs; returns None or the KafkaError."""
    entries = [ConfigEntry(key, value, incremental_operation=op) for key, op, value in changes]
    resource = ConfigResource(resource_type, name, incremental_configs=entries)
    [future] = admin.incremental_alter_configs([resource], request_timeout=CALL_TIMEOUT_S).values()
    try:
        future.result(timeout=CALL_TIMEOUT_S)
    except KafkaException as raised:
        return raised.args[0]
    return None


def ensure_offsets_topic(broker) -> tuple[str, str]:
    """Commits one offset, which makes the broker create __consumer_offsets;
    returns the topic and group used."""
    topic = unique_topic("cfg-offsets")
    group = unique_topic("cfg-group")
    create_topic(admin_client(broker), topic)
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    finally:
        consumer.close()
    return topic, group


def committed_offset(broker, topic: str, group: str) -> int:
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=CALL_TIMEOUT_S)
        return tp.offset
    finally:
        consumer.close()


# ---- item 8: APPEND/SUBTRACT on list configs ----


def test_append_and_subtract_keep_order_and_may_empty_cleanup_policy(broker):
    admin = admin_client(broker)
    topic = unique_topic("cfg-list")
    create_topic(admin, topic, config={"cleanup.policy": "delete"})
    assert incremental(admin, ResourceType.TOPIC, topic, ("cleanup.policy", AlterConfigOpType.APPEND, "compact")) is None
    assert describe(admin, ResourceType.TOPIC, topic)["cleanup.policy"].value == "delete,compact"
    # Appending a value already there adds nothing.
    assert incremental(admin, ResourceType.TOPIC, topic, ("cleanup.policy", AlterConfigOpType.APPEND, "delete")) is None
    assert describe(admin, ResourceType.TOPIC, topic)["cleanup.policy"].value == "delete,compact"
    assert incremental(admin, ResourceType.TOPIC, topic, ("cleanup.policy", AlterConfigOpType.SUBTRACT, "delete")) is None
    assert describe(admin, ResourceType.TOPIC, topic)["cleanup.policy"].value == "compact"
    # Subtracting the last value leaves the empty list: neither delete nor compact.
    assert incremental(admin, ResourceType.TOPIC, topic, ("cleanup.policy", AlterConfigOpType.SUBTRACT, "compact")) is None
    assert describe(admin, ResourceType.TOPIC, topic)["cleanup.policy"].value == ""


def test_append_to_a_config_that_is_not_a_list_is_invalid_config(broker):
    admin = admin_client(broker)
    topic = unique_topic("cfg-notlist")
    create_topic(admin, topic)
    error = incremental(admin, ResourceType.TOPIC, topic, ("retention.ms", AlterConfigOpType.APPEND, "5"))
    assert error is not None and error.code() == KafkaError.INVALID_CONFIG, error


# ---- item 9: compacted topics need keys ----


def produce_outcomes(broker, topic: str, keys: list[bytes | None]) -> list[KafkaError | None]:
    producer = Producer(dict(producer_config(broker), **{"linger.ms": 0, "retries": 0}))
    outcomes: list[KafkaError | None] = []
    for key in keys:
        producer.produce(topic, key=key, value=b"v", on_delivery=lambda err, msg: outcomes.append(err))
        producer.flush(CALL_TIMEOUT_S)
    assert len(outcomes) == len(keys), "every record must be reported"
    return outcomes


def test_keyless_record_to_compacted_topic_is_invalid_record_and_keyed_one_is_stored(broker):
    admin = admin_client(broker)
    topic = unique_topic("cfg-compact")
    create_topic(admin, topic, config={"cleanup.policy": "compact"})
    keyless, keyed = produce_outcomes(broker, topic, [None, b"k"])
    assert keyless is not None and keyless.code() == KafkaError.INVALID_RECORD, keyless
    assert keyed is None, keyed
    # The same keyless record is fine where nothing is compacted.
    plain = unique_topic("cfg-plain")
    create_topic(admin, plain)
    assert produce_outcomes(broker, plain, [None]) == [None]


# ---- item 4: internal topics ----


def test_offsets_topic_cannot_be_deleted_and_offsets_survive(broker):
    topic, group = ensure_offsets_topic(broker)
    admin = admin_client(broker)
    futures = admin.delete_topics([OFFSETS_TOPIC], operation_timeout=CALL_TIMEOUT_S)
    with pytest.raises(KafkaException) as raised:
        futures[OFFSETS_TOPIC].result(timeout=CALL_TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    assert OFFSETS_TOPIC in admin.list_topics(timeout=CALL_TIMEOUT_S).topics
    assert committed_offset(broker, topic, group) == 7


def test_offsets_topic_refuses_new_partitions_delete_records_and_appends(broker):
    ensure_offsets_topic(broker)
    admin = admin_client(broker)
    futures = admin.create_partitions([NewPartitions(OFFSETS_TOPIC, 64)], operation_timeout=CALL_TIMEOUT_S)
    with pytest.raises(KafkaException) as raised:
        futures[OFFSETS_TOPIC].result(timeout=CALL_TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    futures = admin.delete_records([TopicPartition(OFFSETS_TOPIC, 0, -1)], request_timeout=CALL_TIMEOUT_S)
    [future] = futures.values()
    with pytest.raises(KafkaException) as raised:
        future.result(timeout=CALL_TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    [outcome] = produce_outcomes(broker, OFFSETS_TOPIC, [b"not-a-group-record"])
    assert outcome is not None and outcome.code() == KafkaError.TOPIC_EXCEPTION, outcome


def test_offsets_topic_keeps_compact_policy_but_other_configs_may_change(broker):
    ensure_offsets_topic(broker)
    admin = admin_client(broker)
    for change in [
        ("cleanup.policy", AlterConfigOpType.SET, "delete"),
        ("cleanup.policy", AlterConfigOpType.APPEND, "delete"),
        ("cleanup.policy", AlterConfigOpType.DELETE, None),
    ]:
        error = incremental(admin, ResourceType.TOPIC, OFFSETS_TOPIC, change)
        assert error is not None and error.code() == KafkaError.INVALID_CONFIG, (change, error)
    # Legacy AlterConfigs replaces the whole set, dropping cleanup.policy=compact.
    resource = ConfigResource(ResourceType.TOPIC, OFFSETS_TOPIC, set_config={"segment.bytes": "104857600"})
    [future] = admin.alter_configs([resource], request_timeout=CALL_TIMEOUT_S).values()
    with pytest.raises(KafkaException) as raised:
        future.result(timeout=CALL_TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert incremental(admin, ResourceType.TOPIC, OFFSETS_TOPIC, ("segment.bytes", AlterConfigOpType.SET, "104857600")) is None
    entries = describe(admin, ResourceType.TOPIC, OFFSETS_TOPIC)
    assert entries["cleanup.policy"].value == "compact"
    assert entries["segment.bytes"].value == "104857600"


def test_kafka_python_admin_is_refused_on_the_offsets_topic(broker):
    ensure_offsets_topic(broker)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="weir-compat-admin")
    try:
        with pytest.raises(kafka_errors.InvalidTopicError):
            admin.delete_topics([OFFSETS_TOPIC])
        with pytest.raises(kafka_errors.InvalidTopicError):
            admin.create_partitions({OFFSETS_TOPIC: 64})
        with pytest.raises(kafka_errors.InvalidTopicError):
            admin.delete_records({KpTopicPartition(OFFSETS_TOPIC, 0): -1})
        assert OFFSETS_TOPIC in admin.list_topics()
    finally:
        admin.close()


# ---- item 10: broker configs ----

BROKER_CONFIGS_REPORTED = [
    "advertised.listeners",
    "listeners",
    "broker.id",
    "node.id",
    "log.dirs",
    "num.partitions",
    "auto.create.topics.enable",
    "log.retention.check.interval.ms",
    "group.initial.rebalance.delay.ms",
    "offsets.topic.num.partitions",
    "socket.request.max.bytes",
    "connections.max.idle.ms",
    "queued.max.request.bytes",
    "log.retention.ms",
    "log.segment.bytes",
    "log.cleanup.policy",
    "message.max.bytes",
]


def test_broker_configs_are_described_with_their_real_source(broker):
    admin = admin_client(broker)
    entries = describe(admin, ResourceType.BROKER, NODE_ID)
    missing = [name for name in BROKER_CONFIGS_REPORTED if name not in entries]
    assert not missing, f"missing from DescribeConfigs(BROKER): {missing}"
    # The harness passes --listen and --data-dir and nothing else.
    assert source_of(entries["listeners"]) == ConfigSource.STATIC_BROKER_CONFIG.value
    assert entries["listeners"].value == f"PLAINTEXT://{broker.bootstrap}"
    assert source_of(entries["log.dirs"]) == ConfigSource.STATIC_BROKER_CONFIG.value
    assert source_of(entries["num.partitions"]) == ConfigSource.DEFAULT_CONFIG.value
    assert entries["num.partitions"].is_default
    assert entries["num.partitions"].is_read_only
    assert source_of(entries["log.retention.ms"]) == ConfigSource.DEFAULT_CONFIG.value
    assert not entries["log.retention.ms"].is_read_only
    assert entries["node.id"].value == NODE_ID
    # librdkafka asks for synonyms; confluent-kafka keys them by name, so the
    # static and default entries of one name collapse into one here.
    assert "listeners" in entries["listeners"].synonyms


def test_dynamic_broker_config_applies_to_topics_without_override_and_can_be_removed(broker):
    admin = admin_client(broker)
    plain = unique_topic("cfg-dyn")
    pinned = unique_topic("cfg-dyn-pinned")
    create_topic(admin, plain)
    create_topic(admin, pinned, config={"retention.ms": "3600000"})
    try:
        assert incremental(admin, ResourceType.BROKER, NODE_ID, ("log.retention.ms", AlterConfigOpType.SET, "1234567")) is None
        entry = describe(admin, ResourceType.BROKER, NODE_ID)["log.retention.ms"]
        assert entry.value == "1234567"
        assert source_of(entry) == ConfigSource.DYNAMIC_BROKER_CONFIG.value
        topic_entry = describe(admin, ResourceType.TOPIC, plain)["retention.ms"]
        assert topic_entry.value == "1234567"
        assert source_of(topic_entry) == ConfigSource.DYNAMIC_BROKER_CONFIG.value
        assert describe(admin, ResourceType.TOPIC, pinned)["retention.ms"].value == "3600000"
        # (The cluster-wide level, resource name "", is refused locally by both
        # Python clients; crates/weir/tests/e2e/configs.rs covers it.)
    finally:
        assert incremental(admin, ResourceType.BROKER, NODE_ID, ("log.retention.ms", AlterConfigOpType.DELETE, None)) is None
    entry = describe(admin, ResourceType.TOPIC, plain)["retention.ms"]
    assert (entry.value, source_of(entry)) == ("604800000", ConfigSource.DEFAULT_CONFIG.value)


def test_read_only_and_unknown_broker_configs_are_refused_with_invalid_request(broker):
    admin = admin_client(broker)
    for name, value in [("num.partitions", "3"), ("log.dirs", "/tmp/elsewhere"), ("no.such.config", "1")]:
        error = incremental(admin, ResourceType.BROKER, NODE_ID, (name, AlterConfigOpType.SET, value))
        assert error is not None and error.code() == KafkaError.INVALID_REQUEST, (name, error)
    error = incremental(admin, ResourceType.BROKER, NODE_ID, ("log.retention.ms", AlterConfigOpType.SET, "soon"))
    assert error is not None and error.code() == KafkaError.INVALID_REQUEST, error
    assert source_of(describe(admin, ResourceType.BROKER, NODE_ID)["num.partitions"]) == ConfigSource.DEFAULT_CONFIG.value


# ---- item 12d: group configs (KIP-848) ----


def test_group_configs_are_set_described_bounded_and_removed(broker):
    admin = admin_client(broker)
    group = unique_topic("cfg-group-config")
    entries = describe(admin, ResourceType.GROUP, group)
    assert entries["consumer.session.timeout.ms"].value == "45000"
    assert source_of(entries["consumer.session.timeout.ms"]) == ConfigSource.DEFAULT_CONFIG.value
    assert incremental(
        admin,
        ResourceType.GROUP,
        group,
        ("consumer.session.timeout.ms", AlterConfigOpType.SET, "50000"),
        ("consumer.heartbeat.interval.ms", AlterConfigOpType.SET, "6000"),
    ) is None
    entries = describe(admin, ResourceType.GROUP, group)
    assert entries["consumer.session.timeout.ms"].value == "50000"
    assert source_of(entries["consumer.session.timeout.ms"]) == ConfigSource.GROUP_CONFIG.value
    assert entries["consumer.heartbeat.interval.ms"].value == "6000"
    # Kafka's bounds: group.consumer.{min,max}.session.timeout.ms = 45000/60000,
    # group.consumer.{min,max}.heartbeat.interval.ms = 5000/15000.
    for change in [
        ("consumer.session.timeout.ms", AlterConfigOpType.SET, "1000"),
        ("consumer.session.timeout.ms", AlterConfigOpType.SET, "600000"),
        ("consumer.heartbeat.interval.ms", AlterConfigOpType.SET, "20000"),
        ("consumer.assignor.name", AlterConfigOpType.SET, "range"),
    ]:
        error = incremental(admin, ResourceType.GROUP, group, change)
        assert error is not None and error.code() == KafkaError.INVALID_CONFIG, (change, error)
    assert incremental(admin, ResourceType.GROUP, group, ("consumer.session.timeout.ms", AlterConfigOpType.DELETE, None)) is None
    entries = describe(admin, ResourceType.GROUP, group)
    assert source_of(entries["consumer.session.timeout.ms"]) == ConfigSource.DEFAULT_CONFIG.value
    assert entries["consumer.heartbeat.interval.ms"].value == "6000"

"""confluent-kafka AdminClient against Weir: topic lifecycle, configs, errors,
partitions and cluster description."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, ConfigSource, NewPartitions, NewTopic, ResourceType

from confluent_util import CALL_TIMEOUT_S, admin_client, consume_all, create_topic, produce_all
from weir_compat import Record, assert_records_exact, unique_topic

# How long a deleted topic may linger in metadata before the test calls it a failure.
DELETE_VISIBLE_TIMEOUT_S = 15.0

TOPIC_CONFIGS = {"retention.ms": "3600000", "max.message.bytes": "500000"}


def create_error_code(admin, new_topic: NewTopic) -> int:
    futures = admin.create_topics([new_topic], operation_timeout=CALL_TIMEOUT_S)
    with pytest.raises(KafkaException) as raised:
        futures[new_topic.topic].result(timeout=CALL_TIMEOUT_S)
    return raised.value.args[0].code()


def describe_topic_configs(admin, topic: str) -> dict:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    futures = admin.describe_configs([resource], request_timeout=CALL_TIMEOUT_S)
    [future] = futures.values()
    return future.result(timeout=CALL_TIMEOUT_S)


def test_create_topic_with_configs_is_described_with_those_configs(broker):
    admin = admin_client(broker)
    topic = unique_topic("admin-configs")
    create_topic(admin, topic, config=TOPIC_CONFIGS)
    entries = describe_topic_configs(admin, topic)
    for name, value in TOPIC_CONFIGS.items():
        assert name in entries, f"{name} missing from DescribeConfigs: {sorted(entries)}"
        entry = entries[name]
        assert entry.value == value, f"{name} = {entry.value!r}, expected {value!r}"
        assert not entry.is_default, f"{name} reported as default"
        # The C extension hands the source over as an int in some versions.
        source = entry.source.value if isinstance(entry.source, ConfigSource) else entry.source
        assert source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, f"{name} source {entry.source}"


def test_alter_configs_changes_the_described_value(broker):
    admin = admin_client(broker)
    topic = unique_topic("admin-alter")
    create_topic(admin, topic, config=TOPIC_CONFIGS)
    # Legacy AlterConfigs replaces the whole set: send both keys, change one.
    altered = dict(TOPIC_CONFIGS, **{"retention.ms": "7200000"})
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config=altered)
    futures = admin.alter_configs([resource], request_timeout=CALL_TIMEOUT_S)
    [future] = futures.values()
    future.result(timeout=CALL_TIMEOUT_S)
    entries = describe_topic_configs(admin, topic)
    for name, value in altered.items():
        assert entries[name].value == value, f"{name} = {entries[name].value!r}, expected {value!r}"


def test_create_duplicate_topic_fails_with_topic_already_exists(broker):
    admin = admin_client(broker)
    topic = unique_topic("admin-dup")
    create_topic(admin, topic)
    code = create_error_code(admin, NewTopic(topic, num_partitions=1, replication_factor=1))
    assert code == KafkaError.TOPIC_ALREADY_EXISTS, f"error {code}"


@pytest.mark.parametrize("name", ["bad name!", "..", "a" * 250], ids=["space-and-bang", "dot-dot", "250-chars"])
def test_create_topic_with_invalid_name_fails_with_invalid_topic_exception(broker, name):
    admin = admin_client(broker)
    code = create_error_code(admin, NewTopic(name, num_partitions=1, replication_factor=1))
    # INVALID_TOPIC_EXCEPTION (17) is called TOPIC_EXCEPTION in librdkafka.
    assert code == KafkaError.TOPIC_EXCEPTION, f"error {code}"


def test_create_partitions_grows_topic_and_new_partition_takes_records(broker):
    admin = admin_client(broker)
    topic = unique_topic("admin-parts")
    create_topic(admin, topic, partitions=1)
    futures = admin.create_partitions([NewPartitions(topic, 3)], operation_timeout=CALL_TIMEOUT_S)
    futures[topic].result(timeout=CALL_TIMEOUT_S)
    metadata = admin.list_topics(topic=topic, timeout=CALL_TIMEOUT_S)
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2]
    records = [Record(key=f"k{i}".encode(), value=f"p2-{i}".encode(), headers=()) for i in range(50)]
    produce_all(broker, topic, records, first_offset=0, partition=2)
    assert_records_exact(records, consume_all(broker, topic, partition=2))
    # Shrinking is not allowed in Kafka.
    futures = admin.create_partitions([NewPartitions(topic, 2)], operation_timeout=CALL_TIMEOUT_S)
    with pytest.raises(KafkaException) as raised:
        futures[topic].result(timeout=CALL_TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.INVALID_PARTITIONS


def test_delete_topic_removes_it_from_metadata(broker):
    admin = admin_client(broker)
    topic = unique_topic("admin-delete")
    create_topic(admin, topic)
    assert topic in admin.list_topics(timeout=CALL_TIMEOUT_S).topics
    futures = admin.delete_topics([topic], operation_timeout=CALL_TIMEOUT_S)
    futures[topic].result(timeout=CALL_TIMEOUT_S)
    deadline = time.monotonic() + DELETE_VISIBLE_TIMEOUT_S
    while topic in admin.list_topics(timeout=CALL_TIMEOUT_S).topics:
        assert time.monotonic() < deadline, f"{topic} still listed {DELETE_VISIBLE_TIMEOUT_S}s after delete"
        time.sleep(0.2)
    # Deleting it again names the topic as unknown.
    futures = admin.delete_topics([topic], operation_timeout=CALL_TIMEOUT_S)
    with pytest.raises(KafkaException) as raised:
        futures[topic].result(timeout=CALL_TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_cluster_reports_the_single_node_as_controller(broker):
    admin = admin_client(broker)
    result = admin.describe_cluster(request_timeout=CALL_TIMEOUT_S).result(timeout=CALL_TIMEOUT_S)
    assert [(node.id, node.host, node.port) for node in result.nodes] == [(1, broker.host, broker.port)]
    assert result.controller is not None and result.controller.id == 1
    assert isinstance(result.cluster_id, str) and result.cluster_id, f"cluster id {result.cluster_id!r}"

"""Authorized operations (KIP-430) through confluent-kafka's AdminClient.

Weir has no authorizer, so, like Kafka without one, it reports every
operation that applies to the resource type (Kafka's
AclEntry.supportedOperations), and nothing (the "not asked" sentinel, which
the client shows as None) when the request did not ask.
"""

from __future__ import annotations

import time

from confluent_kafka import ConsumerGroupType, Consumer, TopicCollection, TopicPartition
from confluent_kafka.admin import AclOperation

from confluent_util import CALL_TIMEOUT_S, admin_client, consumer_config, create_topic
from weir_compat import unique_topic

TOPIC_OPERATIONS = {
    AclOperation.READ,
    AclOperation.WRITE,
    AclOperation.CREATE,
    AclOperation.DELETE,
    AclOperation.ALTER,
    AclOperation.DESCRIBE,
    AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS,
}
# Kafka 4.x: groups have configs (KIP-848), so the configs operations apply.
GROUP_OPERATIONS = {
    AclOperation.READ,
    AclOperation.DESCRIBE,
    AclOperation.DELETE,
    AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS,
}
CLUSTER_OPERATIONS = {
    AclOperation.CREATE,
    AclOperation.CLUSTER_ACTION,
    AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS,
    AclOperation.IDEMPOTENT_WRITE,
    AclOperation.ALTER,
    AclOperation.DESCRIBE,
}


def operations(described) -> set | None:
    ops = described.authorized_operations
    return None if ops is None else set(ops)


def test_describe_topics_reports_every_topic_operation_when_asked(broker):
    admin = admin_client(broker)
    topic = unique_topic("authz-topic")
    create_topic(admin, topic)
    for include, expected in ((True, TOPIC_OPERATIONS), (False, None)):
        futures = admin.describe_topics(
            TopicCollection([topic]),
            include_authorized_operations=include,
            request_timeout=CALL_TIMEOUT_S,
        )
        described = futures[topic].result(timeout=CALL_TIMEOUT_S)
        assert operations(described) == expected, f"include_authorized_operations={include}"


def test_describe_cluster_reports_every_cluster_operation_when_asked(broker):
    admin = admin_client(broker)
    for include, expected in ((True, CLUSTER_OPERATIONS), (False, None)):
        described = admin.describe_cluster(
            include_authorized_operations=include, request_timeout=CALL_TIMEOUT_S
        ).result(timeout=CALL_TIMEOUT_S)
        assert operations(described) == expected, f"include_authorized_operations={include}"


def test_describe_consumer_groups_reports_every_group_operation_when_asked(broker):
    admin = admin_client(broker)
    topic = unique_topic("authz-group-topic")
    group = unique_topic("authz-group")
    create_topic(admin, topic)
    # A commit from an assign() consumer makes the group exist.
    consumer = Consumer({**consumer_config(broker), "group.id": group, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        consumer.close()
    for include, expected in ((True, GROUP_OPERATIONS), (False, None)):
        futures = admin.describe_consumer_groups(
            [group], include_authorized_operations=include, request_timeout=CALL_TIMEOUT_S
        )
        described = futures[group].result(timeout=CALL_TIMEOUT_S)
        assert operations(described) == expected, f"include_authorized_operations={include}"


def test_describe_consumer_protocol_group_reports_every_group_operation_when_asked(broker):
    """A live KIP-848 group: answered by ConsumerGroupDescribe, not DescribeGroups."""
    admin = admin_client(broker)
    topic = unique_topic("authz-kip848-topic")
    group = unique_topic("authz-kip848-group")
    create_topic(admin, topic)
    config = {**consumer_config(broker), "group.id": group, "group.protocol": "consumer"}
    config.pop("enable.partition.eof")
    consumer = Consumer(config)
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while not consumer.assignment():
            assert time.monotonic() < deadline, "the consumer-protocol member got no assignment"
            consumer.poll(0.2)
        for include, expected in ((True, GROUP_OPERATIONS), (False, None)):
            futures = admin.describe_consumer_groups(
                [group], include_authorized_operations=include, request_timeout=CALL_TIMEOUT_S
            )
            described = futures[group].result(timeout=CALL_TIMEOUT_S)
            assert described.type == ConsumerGroupType.CONSUMER
            assert operations(described) == expected, f"include_authorized_operations={include}"
    finally:
        consumer.close()

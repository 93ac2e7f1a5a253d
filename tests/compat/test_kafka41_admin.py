"""The admin APIs that came with Kafka 4.1's API level, through real clients:
kafka-python's admin client (DescribeTopicPartitions, ElectLeaders,
Alter/ListPartitionReassignments, AlterReplicaLogDirs, ListConfigResources)
and confluent-kafka's (describe_topics, elect_leaders). On a single node each
has a fixed, Kafka-correct answer."""

from __future__ import annotations

import kafka.errors
import pytest
from confluent_kafka import ElectionType, KafkaException
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from confluent_kafka.admin import AdminClient
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import TopicPartitionReplica

from weir_compat import unique_topic

CALL_TIMEOUT_MS = 30_000
CALL_TIMEOUT_S = CALL_TIMEOUT_MS / 1000
NODE_ID = 1
ELECTION_NOT_NEEDED = 84
UNKNOWN_TOPIC_OR_PARTITION = 3


@pytest.fixture
def admin(broker):
    client = KafkaAdminClient(
        bootstrap_servers=broker.bootstrap, client_id="weir-compat-41", request_timeout_ms=CALL_TIMEOUT_MS
    )
    yield client
    client.close()


@pytest.fixture
def topic(admin):
    name = unique_topic("k41")
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    return name


def test_kafka_python_infers_a_4_1_broker(admin):
    # kafka-python guesses the broker's release from the ApiVersions maxima.
    assert admin._client.check_version() == (4, 1)


def test_describe_topic_partitions_pages_through_kafka_python(admin, topic):
    first = admin.describe_topic_partitions([topic], response_partition_limit=2)
    [described] = [t for t in first["topics"] if t["name"] == topic]
    assert described["error_code"] == 0
    assert [p["partition_index"] for p in described["partitions"]] == [0, 1]
    assert all(p["leader_id"] == NODE_ID for p in described["partitions"])
    cursor = first["next_cursor"]
    assert cursor["topic_name"] == topic and cursor["partition_index"] == 2
    rest = admin.describe_topic_partitions([topic], response_partition_limit=2, cursor=cursor)
    [described] = [t for t in rest["topics"] if t["name"] == topic]
    assert [p["partition_index"] for p in described["partitions"]] == [2]
    assert rest["next_cursor"] is None


def test_elect_leaders_finds_nothing_to_elect(admin, topic):
    result = admin.elect_leaders(0, {topic: [0, 1], "no-such-topic": [0]}, raise_errors=False)
    codes = {
        (t.topic, p.partition_id): p.error_code for t in result.replica_election_results for p in t.partition_result
    }
    assert codes == {
        (topic, 0): ELECTION_NOT_NEEDED,
        (topic, 1): ELECTION_NOT_NEEDED,
        ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION,
    }


def test_confluent_elect_leaders_and_describe_topics(broker, topic):
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    future = client.elect_leaders(ElectionType.PREFERRED, [ConfluentTopicPartition(topic, 0)])
    try:
        result = future.result(timeout=CALL_TIMEOUT_S)
        # librdkafka reports ELECTION_NOT_NEEDED per partition.
        [(partition, error)] = list(result.items())
        assert partition.partition == 0
        assert error is not None and error.code() == ELECTION_NOT_NEEDED
    except KafkaException as err:
        assert err.args[0].code() == ELECTION_NOT_NEEDED
    from confluent_kafka import TopicCollection

    described = client.describe_topics(TopicCollection([topic]))[topic].result(timeout=CALL_TIMEOUT_S)
    assert described.name == topic
    assert [p.id for p in described.partitions] == [0, 1, 2]
    assert all(p.leader.id == NODE_ID for p in described.partitions)


def test_partition_reassignments_only_to_this_node(admin, topic):
    result = admin.alter_partition_reassignments(
        {
            TopicPartition(topic, 0): [NODE_ID],
            TopicPartition(topic, 1): [NODE_ID, 2],
            TopicPartition(topic, 2): None,
        }
    )
    assert result == {
        TopicPartition(topic, 0): None,
        TopicPartition(topic, 1): kafka.errors.InvalidReplicationAssignmentError,
        TopicPartition(topic, 2): kafka.errors.NoReassignmentInProgressError,
    }
    assert admin.list_partition_reassignments() == {}
    assert admin.list_partition_reassignments({topic: [0, 1, 2]}) == {}


def test_alter_replica_log_dirs_within_the_one_data_dir(broker, admin, topic):
    data_dir = str(broker.data_dir.resolve())
    result = admin.alter_replica_log_dirs(
        {
            TopicPartitionReplica(topic, 0, NODE_ID): data_dir,
            TopicPartitionReplica(topic, 1, NODE_ID): "/no/such/dir",
        }
    )
    assert result == {
        TopicPartitionReplica(topic, 0, NODE_ID): kafka.errors.NoError,
        TopicPartitionReplica(topic, 1, NODE_ID): kafka.errors.LogDirNotFoundError,
    }


def test_list_config_resources_lists_topics_and_the_broker(admin, topic):
    topics = admin.list_config_resources(["TOPIC"])
    assert list(topics) == ["topic"] and topic in topics["topic"]
    everything = admin.list_config_resources()
    assert everything["broker"] == [str(NODE_ID)]
    assert topic in everything["topic"]

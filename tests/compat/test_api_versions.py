"""Version negotiation on the raw wire, with no client library in between.

Every client starts with ApiVersions; if this is wrong nothing else works, so
these tests say so directly instead of through a client timeout."""

from weir_compat import API_KEYS_REQUIRED, ERROR_UNSUPPORTED_VERSION, api_versions_raw


def test_api_versions_v0_advertises_every_api_of_the_contract(broker):
    reply = api_versions_raw(broker.host, broker.port, version=0)
    assert reply.correlation_id == 0x5EED
    assert reply.error_code == 0
    missing = {name for key, name in API_KEYS_REQUIRED.items() if key not in reply.api_versions}
    assert not missing, f"ApiVersions does not list: {sorted(missing)}"
    for api_key, (min_version, max_version) in reply.api_versions.items():
        assert 0 <= min_version <= max_version, f"api {api_key}: bad range {min_version}..{max_version}"
    # Message format v2 (record batches, headers) needs Produce v3+ and Fetch v4+.
    assert reply.api_versions[0][1] >= 3, f"Produce max version {reply.api_versions[0][1]} < 3"
    assert reply.api_versions[1][1] >= 4, f"Fetch max version {reply.api_versions[1][1]} < 4"
    # Offsets by timestamp need ListOffsets v1+.
    assert reply.api_versions[2][1] >= 1, f"ListOffsets max version {reply.api_versions[2][1]} < 1"


def test_api_versions_unsupported_version_gets_v0_reply_with_error_35(broker):
    # A client newer than the broker sends its highest ApiVersions version; the
    # broker must answer in v0 form with UNSUPPORTED_VERSION and its ranges, so
    # that the client can retry at a version both support.
    reply = api_versions_raw(broker.host, broker.port, version=127)
    assert reply.correlation_id == 0x5EED
    assert reply.error_code == ERROR_UNSUPPORTED_VERSION
    assert 18 in reply.api_versions, "the error reply must still list ApiVersions' own range"
    min_version, max_version = reply.api_versions[18]
    assert min_version == 0
    assert max_version < 127


# Kafka 4.1's (min, max) for every API Weir serves. The maxima are Kafka 4.1's;
# the minima are Weir's floor (Kafka 4.0 raised some minima, KIP-896, and Weir
# keeps older versions that real clients still send, e.g. Debian's kcat).
# Produce is listed from v0 although v0-v2 are refused, as Kafka 4 lists it
# (KAFKA-18659): older librdkafka compresses only if Produce v0 is listed.
KAFKA_4_1_RANGES = {
    0: (0, 13),  # Produce
    1: (4, 18),  # Fetch
    2: (0, 10),  # ListOffsets
    3: (0, 13),  # Metadata
    8: (0, 9),  # OffsetCommit
    9: (0, 9),  # OffsetFetch
    10: (0, 6),  # FindCoordinator
    11: (0, 9),  # JoinGroup
    12: (0, 4),  # Heartbeat
    13: (0, 5),  # LeaveGroup
    14: (0, 5),  # SyncGroup
    15: (0, 6),  # DescribeGroups
    16: (0, 5),  # ListGroups
    18: (0, 4),  # ApiVersions
    19: (0, 7),  # CreateTopics
    20: (0, 6),  # DeleteTopics
    21: (0, 2),  # DeleteRecords
    22: (0, 5),  # InitProducerId (v6, KIP-939, is unstable in 4.1)
    23: (0, 4),  # OffsetForLeaderEpoch
    24: (0, 5),  # AddPartitionsToTxn (v4+ batched and verify-only, KIP-890)
    25: (0, 4),  # AddOffsetsToTxn
    26: (0, 5),  # EndTxn (v5: the epoch moves on with each transaction, KIP-890 part 2)
    27: (0, 1),  # WriteTxnMarkers
    28: (0, 5),  # TxnOffsetCommit
    32: (0, 4),  # DescribeConfigs
    33: (0, 2),  # AlterConfigs
    34: (1, 2),  # AlterReplicaLogDirs
    35: (0, 4),  # DescribeLogDirs
    37: (0, 3),  # CreatePartitions
    42: (0, 2),  # DeleteGroups
    43: (0, 2),  # ElectLeaders
    44: (0, 1),  # IncrementalAlterConfigs
    45: (0, 1),  # AlterPartitionReassignments
    46: (0, 0),  # ListPartitionReassignments
    47: (0, 0),  # OffsetDelete
    55: (0, 2),  # DescribeQuorum (v2 adds Nodes, KIP-853)
    60: (0, 2),  # DescribeCluster
    61: (0, 0),  # DescribeProducers
    65: (0, 0),  # DescribeTransactions
    66: (0, 2),  # ListTransactions (v1 duration filter, v2 id pattern)
    68: (0, 1),  # ConsumerGroupHeartbeat
    69: (0, 1),  # ConsumerGroupDescribe
    74: (0, 1),  # ListConfigResources
    75: (0, 0),  # DescribeTopicPartitions
}


def test_api_versions_advertises_kafka_4_1_maxima(broker):
    # Clients infer the broker's release from these maxima (kafka-python,
    # franz-go's kversion), so each must be exactly Kafka 4.1's.
    reply = api_versions_raw(broker.host, broker.port, version=0)
    assert reply.error_code == 0
    advertised = {key: reply.api_versions[key] for key in KAFKA_4_1_RANGES if key in reply.api_versions}
    assert advertised == KAFKA_4_1_RANGES

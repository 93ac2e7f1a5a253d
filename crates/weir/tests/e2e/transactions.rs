//! Bad input to the transaction APIs, spoken with raw requests (weir-protocol)
//! because clients never send most of it: every case gets Kafka's error code
//! on an open connection, never a hang or a closed socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use weir_protocol::api;
use weir_protocol::codec::{Decode, Encode};
use weir_protocol::compression::Compression;
use weir_protocol::error_code::ErrorCode;
use weir_protocol::messages::add_offsets_to_txn::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse,
};
use weir_protocol::messages::add_partitions_to_txn::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, AddPartitionsToTxnTopic,
    AddPartitionsToTxnTransaction,
};
use weir_protocol::messages::describe_transactions::{
    DescribeTransactionsRequest, DescribeTransactionsResponse,
};
use weir_protocol::messages::end_txn::{EndTxnRequest, EndTxnResponse};
use weir_protocol::messages::find_coordinator::{FindCoordinatorRequest, FindCoordinatorResponse};
use weir_protocol::messages::init_producer_id::{InitProducerIdRequest, InitProducerIdResponse};
use weir_protocol::messages::list_transactions::{
    ListTransactionsRequest, ListTransactionsResponse,
};
use weir_protocol::messages::produce::{
    PartitionProduceData, ProduceRequest, ProduceResponse, TopicProduceData,
};
use weir_protocol::messages::txn_offset_commit::{
    TxnOffsetCommitRequest, TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    TxnOffsetCommitResponse,
};
use weir_protocol::messages::write_txn_markers::{
    WritableTxnMarker, WritableTxnMarkerTopic, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use weir_protocol::record::{Record, RecordBatchBuilder};

use super::harness::{Broker, create_topic};

/// One connection; requests go one at a time.
struct Raw {
    stream: TcpStream,
    correlation_id: i32,
}

impl Raw {
    fn connect(broker: &Broker) -> Raw {
        let stream = TcpStream::connect(broker.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends a request and decodes its response; panics if the broker closes
    /// the connection or does not answer (both are failures here).
    fn call<Q: Encode, R: Decode>(&mut self, api_key: i16, version: i16, body: &Q) -> R {
        self.correlation_id += 1;
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        frame.put_i16(api_key);
        frame.put_i16(version);
        frame.put_i32(self.correlation_id);
        frame.put_i16(6);
        frame.put_slice(b"e2etxn");
        if api::request_header_version(api_key, version) >= 2 {
            frame.put_u8(0);
        }
        body.encode(&mut frame, version).expect("encode request");
        let size = i32::try_from(frame.len() - 4).unwrap();
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&frame).expect("send");
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .unwrap_or_else(|e| panic!("api {api_key} v{version}: no response ({e})"));
        let mut response = vec![0u8; usize::try_from(i32::from_be_bytes(len)).unwrap()];
        self.stream
            .read_exact(&mut response)
            .expect("response body");
        let header_bytes = if api::response_header_version(api_key, version) >= 1 {
            5
        } else {
            4
        };
        let mut body = Bytes::from(response).slice(header_bytes..);
        R::decode(&mut body, version).expect("decode response")
    }

    fn init(&mut self, version: i16, id: Option<&str>, timeout_ms: i32) -> InitProducerIdResponse {
        let request = InitProducerIdRequest {
            transactional_id: id.map(str::to_string),
            transaction_timeout_ms: timeout_ms,
            producer_id: -1,
            producer_epoch: -1,
        };
        self.call(22, version, &request)
    }

    fn add(
        &mut self,
        version: i16,
        id: &str,
        pid: i64,
        epoch: i16,
        topics: &[(&str, &[i32])],
    ) -> Vec<(String, i32, ErrorCode)> {
        let topics: Vec<AddPartitionsToTxnTopic> = topics
            .iter()
            .map(|(name, partitions)| AddPartitionsToTxnTopic {
                name: name.to_string(),
                partitions: partitions.to_vec(),
            })
            .collect();
        let request = AddPartitionsToTxnRequest {
            v3_and_below_transactional_id: id.to_string(),
            v3_and_below_producer_id: pid,
            v3_and_below_producer_epoch: epoch,
            v3_and_below_topics: topics,
            ..Default::default()
        };
        let response: AddPartitionsToTxnResponse = self.call(24, version, &request);
        response
            .results_by_topic_v3_and_below
            .into_iter()
            .flat_map(|t| {
                t.results_by_partition.into_iter().map(move |p| {
                    (
                        t.name.clone(),
                        p.partition_index,
                        ErrorCode::from_code_or_unknown(p.partition_error_code),
                    )
                })
            })
            .collect()
    }

    fn end(&mut self, version: i16, id: &str, pid: i64, epoch: i16, commit: bool) -> ErrorCode {
        let request = EndTxnRequest {
            transactional_id: id.to_string(),
            producer_id: pid,
            producer_epoch: epoch,
            committed: commit,
        };
        let response: EndTxnResponse = self.call(26, version, &request);
        ErrorCode::from_code_or_unknown(response.error_code)
    }

    fn produce_transactional(
        &mut self,
        id: &str,
        topic: &str,
        pid: i64,
        epoch: i16,
        sequence: i32,
    ) -> ErrorCode {
        let batch = RecordBatchBuilder::new(Compression::None)
            .producer(pid, epoch, sequence)
            .transactional(true)
            .base_timestamp(1_700_000_000_000)
            .record(Record {
                offset_delta: 0,
                timestamp_delta: 0,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Vec::new(),
            })
            .build()
            .unwrap();
        let request = ProduceRequest {
            transactional_id: Some(id.to_string()),
            acks: -1,
            timeout_ms: 10_000,
            topic_data: vec![TopicProduceData {
                name: topic.to_string(),
                partition_data: vec![PartitionProduceData {
                    index: 0,
                    records: Some(batch),
                }],
                ..Default::default()
            }],
        };
        let response: ProduceResponse = self.call(0, 9, &request);
        ErrorCode::from_code_or_unknown(response.responses[0].partition_responses[0].error_code)
    }
}

fn codes(results: &[(String, i32, ErrorCode)]) -> Vec<ErrorCode> {
    results.iter().map(|r| r.2).collect()
}

#[test]
fn transaction_requests_with_bad_input_get_kafka_error_codes() {
    let broker = Broker::start(&[
        "--transaction-max-timeout-ms",
        "60000",
        "--transaction-state-partitions",
        "3",
    ]);
    let topic = "txn-bad-input";
    create_topic(&broker, topic, 2, &[]);
    // As a client would: the first lookups create the internal topics.
    super::harness::wait_for_coordinator(&broker, "tx-1", 1);
    super::harness::wait_for_coordinator(&broker, "g-txn", 0);
    let mut raw = Raw::connect(&broker);

    // FindCoordinator for a transaction names this broker.
    let found: FindCoordinatorResponse = raw.call(
        10,
        3,
        &FindCoordinatorRequest {
            key: "tx-1".into(),
            key_type: 1,
            coordinator_keys: Vec::new(),
        },
    );
    assert_eq!(found.error_code, 0);
    assert_eq!(found.port, i32::from(broker.addr.port()));
    // v4+ batches keys (KIP-699); an empty transactional id is INVALID_REQUEST.
    let found: FindCoordinatorResponse = raw.call(
        10,
        4,
        &FindCoordinatorRequest {
            key: String::new(),
            key_type: 1,
            coordinator_keys: vec!["tx-1".into(), String::new()],
        },
    );
    let per_key: Vec<(String, i16)> = found
        .coordinators
        .iter()
        .map(|c| (c.key.clone(), c.error_code))
        .collect();
    assert_eq!(
        per_key,
        vec![
            ("tx-1".to_string(), 0),
            (String::new(), ErrorCode::InvalidRequest.code())
        ]
    );

    // Timeouts outside (0, transaction.max.timeout.ms] at every version.
    for version in 0..=5 {
        for timeout_ms in [60_001, 0, -1] {
            let r = raw.init(version, Some("tx-1"), timeout_ms);
            assert_eq!(
                ErrorCode::from_code_or_unknown(r.error_code),
                ErrorCode::InvalidTransactionTimeout,
                "v{version} timeout {timeout_ms}"
            );
        }
    }
    let r = raw.init(3, Some(""), 10_000);
    assert_eq!(
        ErrorCode::from_code_or_unknown(r.error_code),
        ErrorCode::InvalidRequest
    );

    // An id that was never initialised.
    assert_eq!(
        codes(&raw.add(3, "tx-never", 1, 0, &[(topic, &[0])])),
        vec![ErrorCode::InvalidProducerIdMapping]
    );
    assert_eq!(
        raw.end(3, "tx-never", 1, 0, true),
        ErrorCode::InvalidProducerIdMapping
    );

    let r = raw.init(4, Some("tx-1"), 10_000);
    assert_eq!(r.error_code, 0);
    let (pid, epoch) = (r.producer_id, r.producer_epoch);
    assert_eq!(epoch, 0);

    // EndTxn before any AddPartitionsToTxn.
    assert_eq!(
        raw.end(3, "tx-1", pid, epoch, true),
        ErrorCode::InvalidTxnState
    );
    assert_eq!(
        raw.end(3, "tx-1", pid, epoch, false),
        ErrorCode::InvalidTxnState
    );

    // Wrong producer id / epoch; PRODUCER_FENCED from v2, INVALID_PRODUCER_EPOCH before.
    assert_eq!(
        codes(&raw.add(3, "tx-1", pid + 1, epoch, &[(topic, &[0])])),
        vec![ErrorCode::InvalidProducerIdMapping]
    );
    assert_eq!(
        codes(&raw.add(3, "tx-1", pid, epoch + 1, &[(topic, &[0])])),
        vec![ErrorCode::ProducerFenced]
    );
    assert_eq!(
        codes(&raw.add(1, "tx-1", pid, epoch + 1, &[(topic, &[0])])),
        vec![ErrorCode::InvalidProducerEpoch]
    );

    // An unknown partition fails the request; the others are not attempted.
    let results = raw.add(
        3,
        "tx-1",
        pid,
        epoch,
        &[(topic, &[0, 9]), ("no-such-topic", &[0])],
    );
    assert_eq!(
        codes(&results),
        vec![
            ErrorCode::OperationNotAttempted,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::UnknownTopicOrPartition
        ]
    );

    // KIP-890 part 1: a transactional batch to a partition not in the transaction.
    assert_eq!(
        raw.produce_transactional("tx-1", topic, pid, epoch, 0),
        ErrorCode::InvalidTxnState
    );
    assert_eq!(
        codes(&raw.add(3, "tx-1", pid, epoch, &[(topic, &[0])])),
        vec![ErrorCode::None]
    );
    assert_eq!(
        raw.produce_transactional("tx-1", topic, pid, epoch, 0),
        ErrorCode::None
    );

    // v4 verify-only: in the transaction or not, per partition.
    let verify = AddPartitionsToTxnRequest {
        transactions: vec![AddPartitionsToTxnTransaction {
            transactional_id: "tx-1".into(),
            producer_id: pid,
            producer_epoch: epoch,
            verify_only: true,
            topics: vec![AddPartitionsToTxnTopic {
                name: topic.into(),
                partitions: vec![0, 1],
            }],
        }],
        ..Default::default()
    };
    let verified: AddPartitionsToTxnResponse = raw.call(24, 4, &verify);
    let per_partition: Vec<i16> = verified.results_by_transaction[0].topic_results[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect();
    assert_eq!(
        per_partition,
        vec![ErrorCode::None.code(), ErrorCode::InvalidTxnState.code()]
    );

    // TxnOffsetCommit before AddOffsetsToTxn.
    let commit_offsets = TxnOffsetCommitRequest {
        transactional_id: "tx-1".into(),
        group_id: "g-txn".into(),
        producer_id: pid,
        producer_epoch: epoch,
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        topics: vec![TxnOffsetCommitRequestTopic {
            name: topic.into(),
            partitions: vec![TxnOffsetCommitRequestPartition {
                partition_index: 0,
                committed_offset: 1,
                committed_leader_epoch: -1,
                committed_metadata: None,
            }],
        }],
    };
    let r: TxnOffsetCommitResponse = raw.call(28, 3, &commit_offsets);
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ErrorCode::InvalidTxnState.code()
    );
    let added: AddOffsetsToTxnResponse = raw.call(
        25,
        3,
        &AddOffsetsToTxnRequest {
            transactional_id: "tx-1".into(),
            producer_id: pid,
            producer_epoch: epoch,
            group_id: "g-txn".into(),
        },
    );
    assert_eq!(added.error_code, 0);
    let r: TxnOffsetCommitResponse = raw.call(28, 3, &commit_offsets);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    // Commit; then an abort of the committed transaction is invalid, a retried commit is fine.
    assert_eq!(raw.end(3, "tx-1", pid, epoch, true), ErrorCode::None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match raw.end(3, "tx-1", pid, epoch, true) {
            ErrorCode::None => break,
            ErrorCode::ConcurrentTransactions if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => panic!("retried commit: {other:?}"),
        }
    }
    assert_eq!(
        raw.end(3, "tx-1", pid, epoch, false),
        ErrorCode::InvalidTxnState
    );

    // A new InitProducerId fences the old epoch.
    let r = raw.init(4, Some("tx-1"), 10_000);
    assert_eq!((r.error_code, r.producer_id, r.producer_epoch), (0, pid, 1));
    assert_eq!(
        raw.end(3, "tx-1", pid, epoch, true),
        ErrorCode::ProducerFenced
    );
    assert_eq!(
        raw.end(1, "tx-1", pid, epoch, true),
        ErrorCode::InvalidProducerEpoch
    );
    assert_eq!(
        raw.produce_transactional("tx-1", topic, pid, epoch, 1),
        ErrorCode::InvalidProducerEpoch
    );

    // Re-initialising during a transaction: CONCURRENT_TRANSACTIONS while the
    // old one is aborted, then the next epoch.
    assert_eq!(
        codes(&raw.add(3, "tx-1", pid, 1, &[(topic, &[1])])),
        vec![ErrorCode::None]
    );
    let r = raw.init(4, Some("tx-1"), 10_000);
    assert_eq!(
        ErrorCode::from_code_or_unknown(r.error_code),
        ErrorCode::ConcurrentTransactions
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = raw.init(4, Some("tx-1"), 10_000);
        if r.error_code != ErrorCode::ConcurrentTransactions.code()
            || std::time::Instant::now() > deadline
        {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (r.error_code, r.producer_epoch),
        (0, 3),
        "fence bump, then init bump"
    );

    // Describe and list: an unknown id, and an unknown state filter.
    let described: DescribeTransactionsResponse = raw.call(
        65,
        0,
        &DescribeTransactionsRequest {
            transactional_ids: vec!["tx-1".into(), "tx-unknown".into()],
        },
    );
    assert_eq!(described.transaction_states[0].error_code, 0);
    assert_eq!(described.transaction_states[0].transaction_state, "Empty");
    assert_eq!(described.transaction_states[0].producer_epoch, 3);
    assert_eq!(
        described.transaction_states[1].error_code,
        ErrorCode::TransactionalIdNotFound.code()
    );
    let listed: ListTransactionsResponse = raw.call(
        66,
        1,
        &ListTransactionsRequest {
            state_filters: vec!["Empty".into(), "Bogus".into()],
            producer_id_filters: vec![pid],
            duration_filter: -1,
            ..Default::default()
        },
    );
    assert_eq!(listed.error_code, 0);
    assert_eq!(listed.unknown_state_filters, vec!["Bogus".to_string()]);
    assert_eq!(listed.transaction_states.len(), 1);
    assert_eq!(listed.transaction_states[0].transactional_id, "tx-1");

    // WriteTxnMarkers: per-partition errors.
    let markers: WriteTxnMarkersResponse = raw.call(
        27,
        1,
        &WriteTxnMarkersRequest {
            markers: vec![WritableTxnMarker {
                producer_id: pid,
                producer_epoch: 3,
                transaction_result: false,
                topics: vec![WritableTxnMarkerTopic {
                    name: "no-such-topic".into(),
                    partition_indexes: vec![0],
                }],
                coordinator_epoch: 0,
            }],
        },
    );
    assert_eq!(
        markers.markers[0].topics[0].partitions[0].error_code,
        ErrorCode::UnknownTopicOrPartition.code()
    );

    // The connection is still usable after all of it.
    let r = raw.init(5, None, 10_000);
    assert_eq!(r.error_code, 0);
}

#[test]
fn transactions_disabled_keep_the_fatal_refusal() {
    let broker = Broker::start(&["--transactions-enabled", "false"]);
    let mut raw = Raw::connect(&broker);
    let r = raw.init(4, Some("tx-off"), 10_000);
    assert_eq!(
        ErrorCode::from_code_or_unknown(r.error_code),
        ErrorCode::TransactionalIdAuthorizationFailed
    );
    assert_eq!(
        codes(&raw.add(3, "tx-off", 0, 0, &[("t", &[0])])),
        vec![ErrorCode::TransactionalIdAuthorizationFailed]
    );
    let found: FindCoordinatorResponse = raw.call(
        10,
        3,
        &FindCoordinatorRequest {
            key: "tx-off".into(),
            key_type: 1,
            coordinator_keys: Vec::new(),
        },
    );
    assert_eq!(
        found.error_code,
        ErrorCode::TransactionalIdAuthorizationFailed.code()
    );
}

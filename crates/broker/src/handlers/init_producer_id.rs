//! InitProducerId (KIP-98; KIP-360 re-initialisation), every version Kafka 4.1 serves (v0-v5).
//!
//! With a null transactional id Kafka's transaction coordinator "blindly accepts" the request:
//! a new producer id at epoch 0, whatever producer id and epoch the client sent
//! (`TransactionCoordinator.handleInitProducerId`). A client re-initialising after an error
//! (KIP-360) so gets a fresh id, whose sequences start at 0 on every partition.
//!
//! With a transactional id the transaction coordinator (`crate::txn`) answers: a new id at
//! epoch 0 the first time, then the same id at the next epoch, which fences any older producer
//! with that transactional id (an open transaction of it is aborted first; meanwhile the client
//! gets CONCURRENT_TRANSACTIONS and retries). The answer is sent once the state is durable.
//! With transactions disabled it gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED: the one error
//! that librdkafka, kafka-python and the Java client all treat as fatal.

use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::init_producer_id::{InitProducerIdRequest, InitProducerIdResponse};

use crate::{Broker, PendingReply, encode_frame, ready};

/// Kafka's `RecordBatch.NO_PRODUCER_ID` / `NO_PRODUCER_EPOCH`.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;

fn refused(error: ErrorCode) -> InitProducerIdResponse {
    InitProducerIdResponse {
        error_code: error.code(),
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        ..Default::default()
    }
}

fn granted(producer_id: i64, producer_epoch: i16) -> InitProducerIdResponse {
    InitProducerIdResponse {
        error_code: ErrorCode::None.code(),
        producer_id,
        producer_epoch,
        ..Default::default()
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: InitProducerIdRequest,
) -> PendingReply {
    let respond = |header: &RequestHeader, response: InitProducerIdResponse| {
        ready(encode_frame(header, &response))
    };
    // KafkaApis: the producer id and epoch are given together or not at all (v3+).
    if (request.producer_id == NO_PRODUCER_ID) != (request.producer_epoch == NO_PRODUCER_EPOCH) {
        return respond(&header, refused(ErrorCode::InvalidRequest));
    }
    match request.transactional_id.as_deref() {
        None => {}
        // As Kafka: an empty transactional id is the client's mistake.
        Some("") => return respond(&header, refused(ErrorCode::InvalidRequest)),
        Some(id) if broker.txn.enabled && !broker.coordinates_transaction(id) => {
            return respond(&header, refused(ErrorCode::NotCoordinator));
        }
        Some(id) => {
            if !broker.txn.enabled {
                tracing::info!(transactional_id = id, client_id = ?header.client_id,
                    "InitProducerId for a transactional producer refused: transactions_enabled=false");
            }
            let expected = (request.producer_id != NO_PRODUCER_ID)
                .then_some((request.producer_id, request.producer_epoch));
            let pending =
                broker
                    .txn
                    .init_producer_id(broker, id, request.transaction_timeout_ms, expected);
            let version = header.api_version;
            return Box::pin(async move {
                let result =
                    match tokio::time::timeout(std::time::Duration::from_secs(30), pending.wait())
                        .await
                    {
                        Ok(Ok(result)) => result,
                        Ok(Err(code)) => Err(code),
                        Err(_) => Err(ErrorCode::RequestTimedOut),
                    };
                let response = match result {
                    Ok((producer_id, producer_epoch)) => granted(producer_id, producer_epoch),
                    // KIP-588: PRODUCER_FENCED from v4 on.
                    Err(code) => refused(super::txn::fenced_for(code, 4, version)),
                };
                encode_frame(&header, &response)
            });
        }
    }
    match broker.producer_ids.generate() {
        Ok(producer_id) => respond(&header, granted(producer_id, 0)),
        Err(e) => {
            tracing::error!(error = %e, "could not reserve producer ids");
            respond(&header, refused(ErrorCode::UnknownServerError))
        }
    }
}

//! InitProducerId for idempotent producers (KIP-98; KIP-360 re-initialisation).
//!
//! With a null transactional id Kafka's transaction coordinator "blindly accepts" the request:
//! a new producer id at epoch 0, whatever producer id and epoch the client sent
//! (`TransactionCoordinator.handleInitProducerId`). A client re-initialising after an error
//! (KIP-360) so gets a fresh id, whose sequences start at 0 on every partition.
//!
//! Transactions are not built yet. A transactional id gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED
//! (as does FindCoordinator for a transaction): the one error that librdkafka
//! (`rd_kafka_idemp_check_error`, `rd_kafka_txn_handle_FindCoordinator`), kafka-python and the
//! Java client all treat as fatal, so a transactional client fails at once instead of retrying
//! (librdkafka retries UNSUPPORTED_VERSION and COORDINATOR_NOT_AVAILABLE). InitProducerId has no
//! error message field; FindCoordinator's says that transactions are what is missing. The
//! transaction coordinator will take over this branch.

use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::init_producer_id::{InitProducerIdRequest, InitProducerIdResponse};

use crate::Broker;

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

pub fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    // KafkaApis: the producer id and epoch are given together or not at all (v3+).
    if (request.producer_id == NO_PRODUCER_ID) != (request.producer_epoch == NO_PRODUCER_EPOCH) {
        return refused(ErrorCode::InvalidRequest);
    }
    match request.transactional_id.as_deref() {
        None => {}
        // As Kafka: an empty transactional id is the client's mistake.
        Some("") => return refused(ErrorCode::InvalidRequest),
        Some(id) => {
            tracing::info!(transactional_id = id, client_id = ?header.client_id,
                "InitProducerId for a transactional producer refused: transactions are not supported");
            return refused(ErrorCode::TransactionalIdAuthorizationFailed);
        }
    }
    match broker.producer_ids.generate() {
        Ok(producer_id) => InitProducerIdResponse {
            error_code: ErrorCode::None.code(),
            producer_id,
            producer_epoch: 0,
            ..Default::default()
        },
        Err(e) => {
            tracing::error!(error = %e, "could not reserve producer ids");
            refused(ErrorCode::UnknownServerError)
        }
    }
}

//! Broker errors, and the one place they become Kafka error codes.

use weir_log::{LogError, ProducerStateError};
use weir_protocol::error_code::ErrorCode;

use crate::topic_config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{0}")]
    InvalidTopic(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidConfig(#[from] ConfigError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The data directory is locked by another process or belongs to another
    /// node or cluster: the broker must not start on it.
    #[error("{0}")]
    DataDir(String),
    #[error("corrupt broker metadata: {0}")]
    Corrupt(String),
    #[error("internal: {0}")]
    Internal(String),
    /// No active controller could be reached to decide a metadata change;
    /// clients retry NOT_CONTROLLER.
    #[error("{0}")]
    NoController(String),
    /// A coordinator's prerequisite (its internal topic, a producer-id block)
    /// is not there yet; clients retry.
    #[error("{0}")]
    CoordinatorNotAvailable(String),
}

impl BrokerError {
    /// The Kafka error code a client sees for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::InvalidTopic(_) => ErrorCode::InvalidTopicException,
            BrokerError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            BrokerError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
            BrokerError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            BrokerError::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            BrokerError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            BrokerError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            BrokerError::Log(e) => log_error_code(e),
            BrokerError::Io(_) => ErrorCode::KafkaStorageError,
            BrokerError::NoController(_) => ErrorCode::NotController,
            BrokerError::CoordinatorNotAvailable(_) => ErrorCode::CoordinatorNotAvailable,
            BrokerError::DataDir(_) | BrokerError::Corrupt(_) | BrokerError::Internal(_) => {
                ErrorCode::UnknownServerError
            }
        }
    }
}

/// Storage errors as Kafka codes.
pub fn log_error_code(error: &LogError) -> ErrorCode {
    match error {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        // Retriable: the writer tries again, at the new leader if it moved.
        LogError::NotReplicated(_) => ErrorCode::NotLeaderOrFollower,
        LogError::Producer(ProducerStateError::OutOfOrderSequence(_)) => {
            ErrorCode::OutOfOrderSequenceNumber
        }
        LogError::Producer(ProducerStateError::InvalidProducerEpoch(_)) => {
            ErrorCode::InvalidProducerEpoch
        }
        LogError::Producer(ProducerStateError::InvalidTxnState(_)) => ErrorCode::InvalidTxnState,
        LogError::Producer(ProducerStateError::CoordinatorFenced(_)) => {
            ErrorCode::TransactionCoordinatorFenced
        }
        _ => ErrorCode::KafkaStorageError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_state_refusals_map_to_their_kafka_codes() {
        let cases = [
            (
                ProducerStateError::OutOfOrderSequence(String::new()),
                ErrorCode::OutOfOrderSequenceNumber,
            ),
            (
                ProducerStateError::InvalidProducerEpoch(String::new()),
                ErrorCode::InvalidProducerEpoch,
            ),
            (
                ProducerStateError::InvalidTxnState(String::new()),
                ErrorCode::InvalidTxnState,
            ),
            (
                ProducerStateError::CoordinatorFenced(String::new()),
                ErrorCode::TransactionCoordinatorFenced,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(log_error_code(&LogError::Producer(error)), code);
        }
    }
}

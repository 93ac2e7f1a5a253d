//! The client's one error type.
//!
//! Every variant says what to fix where it can: a refused connection names the
//! address and suggests starting `weir serve`, a Kafka error carries the
//! [`ErrorCode`] the broker returned (with its Kafka name in the message).
//! The type is `Clone` so that one failed produce request can be reported to
//! every record that was in it.

use std::sync::Arc;

use weir_protocol::codec::{DecodeError, EncodeError};
use weir_protocol::error_code::ErrorCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection could be made.
    #[error(
        "could not connect to {addr}: {error}; is `weir serve` running and is the address right?"
    )]
    Connect {
        addr: String,
        error: Arc<std::io::Error>,
    },
    /// An established connection failed while sending or receiving.
    #[error("connection to {addr} failed: {error}")]
    Io {
        addr: String,
        error: Arc<std::io::Error>,
    },
    /// A connect or a request did not finish in time. The connection is dropped.
    #[error("timed out after {timeout_ms} ms waiting for {what} from {addr}")]
    Timeout {
        addr: String,
        what: &'static str,
        timeout_ms: u64,
    },
    /// The broker answered with a Kafka error code.
    #[error("{context}: broker returned {code}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        code: ErrorCode,
        message: Option<String>,
        context: String,
    },
    /// The broker does not serve any version of an API that this client speaks.
    #[error(
        "broker at {addr} does not support {api} (api key {api_key}) in versions {client_min}-{client_max}"
    )]
    UnsupportedApi {
        addr: String,
        api: &'static str,
        api_key: i16,
        client_min: i16,
        client_max: i16,
    },
    /// A response frame announced more bytes than the configured cap.
    #[error("response of {length} bytes from {addr} exceeds the {frame_bytes_max}-byte limit")]
    FrameTooLarge {
        addr: String,
        length: usize,
        frame_bytes_max: usize,
    },
    /// The broker sent bytes that do not parse as the expected response.
    #[error("malformed {api} response from {addr}: {source}")]
    Decode {
        addr: String,
        api: &'static str,
        source: DecodeError,
    },
    /// The broker broke the protocol in some other way (e.g. wrong correlation id).
    #[error("protocol violation by {addr}: {detail}")]
    Protocol { addr: String, detail: String },
    /// A request could not be encoded (a bug or an out-of-range argument).
    #[error("could not encode {api} request: {source}")]
    Encode {
        api: &'static str,
        source: EncodeError,
    },
    /// A record batch could not be built or decoded (includes decompression caps).
    #[error("record batch error: {0}")]
    Record(String),
    /// The topic is not in the cluster's metadata.
    #[error("topic '{0}' does not exist (create it with `weir topic create {0}`)")]
    UnknownTopic(String),
    /// The partition does not exist in the topic.
    #[error("topic '{topic}' has no partition {partition} (it has {partition_count})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        partition_count: usize,
    },
    /// The partition has no leader right now, or the leader's address is unknown.
    #[error("partition {topic}-{partition} has no available leader")]
    NoLeader { topic: String, partition: i32 },
    /// A caller-supplied argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A bootstrap address is not HOST:PORT.
    #[error("bootstrap address '{addr}' {problem}; expected HOST:PORT, e.g. 127.0.0.1:9092")]
    BadAddress { addr: String, problem: &'static str },
    /// Something answered at the address, but not in the Kafka protocol.
    #[error(
        "{addr} does not speak the Kafka protocol ({detail}); is this the broker's Kafka listener (weir serve --listen), not an HTTP or admin port?"
    )]
    NotKafka { addr: String, detail: String },
    /// The connection was accepted, but the ApiVersions handshake got no answer.
    #[error(
        "{addr} accepted the connection but did not answer ApiVersions within {timeout_ms} ms; is it a Kafka listener, and is the broker healthy?"
    )]
    NoAnswer { addr: String, timeout_ms: u64 },
    /// None of the bootstrap addresses could be used.
    #[error("no bootstrap address given; pass --bootstrap HOST:PORT")]
    NoBootstrap,
    /// The producer's background task has stopped (it was closed or it panicked).
    #[error("the producer is closed")]
    ProducerClosed,
}

impl ClientError {
    /// The Kafka error code the broker returned, if this error came from one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying (after a metadata refresh) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Kafka { code, .. } => code.is_retriable(),
            ClientError::NoLeader { .. } | ClientError::Io { .. } | ClientError::Timeout { .. } => {
                true
            }
            // A broker that restarts refuses connections for a moment.
            ClientError::Connect { error, .. } => matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }

    /// Builds a `Kafka` error from a response's code, or `Ok(())` for NONE.
    pub fn check(
        code: i16,
        message: Option<&str>,
        context: impl FnOnce() -> String,
    ) -> Result<(), ClientError> {
        if code == 0 {
            return Ok(());
        }
        Err(ClientError::Kafka {
            code: ErrorCode::from_code_or_unknown(code),
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
            context: context(),
        })
    }
}

impl From<weir_protocol::record::RecordError> for ClientError {
    fn from(e: weir_protocol::record::RecordError) -> Self {
        ClientError::Record(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_error_message_names_the_error_and_context() {
        let e = ClientError::check(36, Some("Topic 'x' already exists."), || {
            "create topic 'x'".into()
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("TOPIC_ALREADY_EXISTS"), "{text}");
        assert!(text.contains("create topic 'x'"), "{text}");
        assert!(text.contains("already exists"), "{text}");
        assert_eq!(e.error_code(), Some(ErrorCode::TopicAlreadyExists));
    }

    #[test]
    fn code_zero_is_success() {
        assert!(ClientError::check(0, Some("ignored"), || unreachable!()).is_ok());
    }

    #[test]
    fn connect_error_suggests_starting_the_broker() {
        let e = ClientError::Connect {
            addr: "127.0.0.1:9092".into(),
            error: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert!(e.to_string().contains("weir serve"));
    }
}

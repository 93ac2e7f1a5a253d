//! One TCP connection to one broker.
//!
//! On connect it sends ApiVersions and remembers the broker's version ranges;
//! every later request goes out at the highest version both sides speak
//! (capped per API by [`Request::CLIENT_MAX_VERSION`]). Requests may be
//! pipelined: [`Connection::write_request`] sends and returns a
//! [`PendingResponse`] token, and [`Connection::read_response`] takes the
//! responses back in the order the requests were written (Kafka answers in
//! order on one connection). Every response frame is bounded by
//! `frame_bytes_max` before its body is allocated.
//!
//! After any I/O error, timeout or framing error the connection is marked
//! broken: a half-read frame leaves the stream unusable, so later calls fail
//! fast and the [`crate::Client`] reconnects.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use weir_protocol::api::{ApiKey, response_header_version};
use weir_protocol::codec::{Decode, Encode, Message};
use weir_protocol::header::{RequestHeader, ResponseHeader};
use weir_protocol::messages;

use crate::error::ClientError;

/// A request type, tied to its response type.
pub trait Request: Encode + Message {
    type Response: Decode + Message;
    /// The highest version this client sends. Lower than `MAX_VERSION` where a
    /// newer version changes semantics the client does not handle.
    const CLIENT_MAX_VERSION: i16 = Self::MAX_VERSION;
}

macro_rules! requests {
    ($( $module:ident :: $req:ident => $resp:ident $(, max $max:literal)? ;)*) => {
        $(
            impl Request for messages::$module::$req {
                type Response = messages::$module::$resp;
                $( const CLIENT_MAX_VERSION: i16 = $max; )?
            }
        )*
    };
}

requests! {
    api_versions::ApiVersionsRequest => ApiVersionsResponse;
    metadata::MetadataRequest => MetadataResponse;
    // Produce v13+ names topics by id only; the client keeps to names.
    produce::ProduceRequest => ProduceResponse, max 12;
    // Fetch v13+ names topics by id only; the client keeps to names.
    fetch::FetchRequest => FetchResponse, max 12;
    list_offsets::ListOffsetsRequest => ListOffsetsResponse;
    offset_for_leader_epoch::OffsetForLeaderEpochRequest => OffsetForLeaderEpochResponse;
    elect_leaders::ElectLeadersRequest => ElectLeadersResponse;
    alter_partition_reassignments::AlterPartitionReassignmentsRequest => AlterPartitionReassignmentsResponse;
    list_partition_reassignments::ListPartitionReassignmentsRequest => ListPartitionReassignmentsResponse;
    create_topics::CreateTopicsRequest => CreateTopicsResponse;
    delete_topics::DeleteTopicsRequest => DeleteTopicsResponse;
    create_partitions::CreatePartitionsRequest => CreatePartitionsResponse;
    delete_records::DeleteRecordsRequest => DeleteRecordsResponse;
    describe_configs::DescribeConfigsRequest => DescribeConfigsResponse;
    alter_configs::AlterConfigsRequest => AlterConfigsResponse;
    incremental_alter_configs::IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse;
    describe_cluster::DescribeClusterRequest => DescribeClusterResponse;
    describe_quorum::DescribeQuorumRequest => DescribeQuorumResponse;
    add_raft_voter::AddRaftVoterRequest => AddRaftVoterResponse;
    remove_raft_voter::RemoveRaftVoterRequest => RemoveRaftVoterResponse;
    describe_log_dirs::DescribeLogDirsRequest => DescribeLogDirsResponse;
    find_coordinator::FindCoordinatorRequest => FindCoordinatorResponse;
    list_groups::ListGroupsRequest => ListGroupsResponse;
    describe_groups::DescribeGroupsRequest => DescribeGroupsResponse;
    offset_fetch::OffsetFetchRequest => OffsetFetchResponse;
    offset_commit::OffsetCommitRequest => OffsetCommitResponse;
    delete_groups::DeleteGroupsRequest => DeleteGroupsResponse;
    describe_producers::DescribeProducersRequest => DescribeProducersResponse;
    weir_compaction::WeirCompactionRequest => WeirCompactionResponse;
    init_producer_id::InitProducerIdRequest => InitProducerIdResponse;
    add_partitions_to_txn::AddPartitionsToTxnRequest => AddPartitionsToTxnResponse;
    add_offsets_to_txn::AddOffsetsToTxnRequest => AddOffsetsToTxnResponse;
    end_txn::EndTxnRequest => EndTxnResponse;
    txn_offset_commit::TxnOffsetCommitRequest => TxnOffsetCommitResponse;
    write_txn_markers::WriteTxnMarkersRequest => WriteTxnMarkersResponse;
    describe_transactions::DescribeTransactionsRequest => DescribeTransactionsResponse;
    list_transactions::ListTransactionsRequest => ListTransactionsResponse;
    offset_delete::OffsetDeleteRequest => OffsetDeleteResponse;
    join_group::JoinGroupRequest => JoinGroupResponse;
    sync_group::SyncGroupRequest => SyncGroupResponse;
    heartbeat::HeartbeatRequest => HeartbeatResponse;
    leave_group::LeaveGroupRequest => LeaveGroupResponse;
}

/// Rewords a failed first exchange: if the peer's bytes are not a Kafka
/// response, say so (with what they look like) instead of reporting a frame
/// length that is really the start of "HTTP/1.1 400".
fn not_kafka(addr: &str, error: ClientError) -> ClientError {
    let detail = match &error {
        ClientError::FrameTooLarge { length, .. } => {
            let prefix = u32::try_from(*length).unwrap_or(u32::MAX).to_be_bytes();
            describe_prefix(prefix)
        }
        ClientError::Protocol { detail, .. } if detail.starts_with("negative frame length") => {
            let length: i32 = detail
                .trim_start_matches("negative frame length ")
                .parse()
                .unwrap_or(-1);
            describe_prefix(length.to_be_bytes())
        }
        ClientError::Decode { .. } => "its answer to ApiVersions does not parse".to_owned(),
        ClientError::Protocol { detail, .. } => detail.clone(),
        ClientError::Io { error: io, .. }
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            "it closed the connection without answering ApiVersions".to_owned()
        }
        _ => return error,
    };
    ClientError::NotKafka {
        addr: addr.to_owned(),
        detail,
    }
}

/// "it answered \"HTTP\"" when the first four bytes are text, else their hex.
fn describe_prefix(prefix: [u8; 4]) -> String {
    if prefix.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        let text: String = prefix.iter().map(|&b| char::from(b)).collect();
        format!("it answered \"{text}...\"")
    } else {
        format!(
            "its answer starts with bytes {:02x}{:02x}{:02x}{:02x}",
            prefix[0], prefix[1], prefix[2], prefix[3]
        )
    }
}

/// The Kafka name of an API, for messages.
pub fn api_name(api_key: i16) -> &'static str {
    ApiKey::from_i16(api_key).map_or("unknown API", ApiKey::name)
}

/// Settings for one connection.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Sent in every request header; shows up in broker logs.
    pub client_id: String,
    pub connect_timeout_ms: u64,
    /// How long one request may take, on top of any wait it asks the broker for.
    pub request_timeout_ms: u64,
    /// Largest response frame accepted; a larger length prefix breaks the connection.
    pub frame_bytes_max: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            client_id: "weir-client".to_owned(),
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            frame_bytes_max: 100 * 1024 * 1024,
        }
    }
}

/// A request that was written and whose response has not been read yet.
#[must_use = "the response must be read with read_response to keep the stream in sync"]
#[derive(Debug)]
pub struct PendingResponse<R> {
    correlation_id: i32,
    version: i16,
    _request: PhantomData<fn() -> R>,
}

impl<R> PendingResponse<R> {
    pub fn version(&self) -> i16 {
        self.version
    }
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    correlation_id: i32,
    api_key: i16,
    version: i16,
}

/// Upper bound on pipelined requests per connection; a caller that writes more
/// without reading gets an error instead of an unbounded queue.
pub const IN_FLIGHT_MAX: usize = 64;

/// Version of ApiVersions tried first. v3 is the first flexible version and is
/// what every current client sends; older brokers answer UNSUPPORTED_VERSION
/// with their range and we retry.
const API_VERSIONS_FIRST_TRY: i16 = 3;

pub struct Connection {
    addr: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    options: ConnectionOptions,
    next_correlation_id: i32,
    /// Requests written but not yet answered, oldest first (Kafka answers in order).
    in_flight: VecDeque<InFlight>,
    /// api key -> (min, max) as advertised by the broker.
    broker_versions: HashMap<i16, (i16, i16)>,
    /// Set once the byte stream can no longer be trusted to be at a frame boundary.
    broken: bool,
    /// Reused encode buffer.
    write_buf: BytesMut,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("broken", &self.broken)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` ("host:port") and negotiates API versions.
    pub async fn connect(
        addr: &str,
        options: ConnectionOptions,
    ) -> Result<Connection, ClientError> {
        let connect_timeout_ms = options.connect_timeout_ms;
        let stream = match tokio::time::timeout(
            Duration::from_millis(connect_timeout_ms),
            TcpStream::connect(addr),
        )
        .await
        {
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: addr.to_owned(),
                    what: "TCP connect",
                    timeout_ms: connect_timeout_ms,
                });
            }
            Ok(Err(e)) => {
                return Err(ClientError::Connect {
                    addr: addr.to_owned(),
                    error: Arc::new(e),
                });
            }
            Ok(Ok(s)) => s,
        };
        // Requests are small and latency-bound; Nagle would delay them.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let mut conn = Connection {
            addr: addr.to_owned(),
            reader: BufReader::with_capacity(64 * 1024, read),
            writer: write,
            options,
            next_correlation_id: 1,
            in_flight: VecDeque::new(),
            broker_versions: HashMap::new(),
            broken: false,
            write_buf: BytesMut::with_capacity(4096),
        };
        // The handshake is bounded too: something that accepts connections
        // but never answers (a stuck process, a non-Kafka listener waiting for
        // a request it understands) must not hang the caller.
        match tokio::time::timeout(
            Duration::from_millis(connect_timeout_ms),
            conn.negotiate_versions(),
        )
        .await
        {
            Err(_) => Err(ClientError::NoAnswer {
                addr: addr.to_owned(),
                timeout_ms: connect_timeout_ms,
            }),
            Ok(Err(e)) => Err(not_kafka(addr, e)),
            Ok(Ok(())) => Ok(conn),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Number of requests written whose responses have not been read.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The broker's advertised range for an api key.
    pub fn broker_versions(&self, api_key: i16) -> Option<(i16, i16)> {
        self.broker_versions.get(&api_key).copied()
    }

    /// The version `R` will be sent at: the highest both sides support.
    pub fn version_for<R: Request>(&self) -> Result<i16, ClientError> {
        let client_max = R::CLIENT_MAX_VERSION.min(R::MAX_VERSION);
        pick_version(self.broker_versions(R::API_KEY), R::MIN_VERSION, client_max).ok_or(
            ClientError::UnsupportedApi {
                addr: self.addr.clone(),
                api: api_name(R::API_KEY),
                api_key: R::API_KEY,
                client_min: R::MIN_VERSION,
                client_max,
            },
        )
    }

    async fn negotiate_versions(&mut self) -> Result<(), ClientError> {
        let request = messages::api_versions::ApiVersionsRequest {
            client_software_name: "weir-client".to_owned(),
            client_software_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let mut version = API_VERSIONS_FIRST_TRY;
        // At most two rounds: our guess, then the broker's advertised maximum.
        for _ in 0..2 {
            let pending = self.write_request_at(&request, version).await?;
            let frame = self
                .read_frame_for(pending.correlation_id, pending.version)
                .await?;
            let response =
                decode_api_versions(frame, version).map_err(|source| ClientError::Decode {
                    addr: self.addr.clone(),
                    api: "ApiVersions",
                    source,
                })?;
            if response.error_code
                == weir_protocol::error_code::ErrorCode::UnsupportedVersion.code()
            {
                let broker_max = response
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == weir_protocol::api::API_VERSIONS_KEY)
                    .map_or(0, |k| k.max_version);
                let next = broker_max.clamp(0, version - 1);
                if next >= version || version == 0 {
                    break;
                }
                version = next;
                continue;
            }
            ClientError::check(response.error_code, None, || {
                format!("ApiVersions to {}", self.addr)
            })?;
            self.broker_versions = response
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            return Ok(());
        }
        Err(ClientError::Protocol {
            addr: self.addr.clone(),
            detail: "ApiVersions negotiation failed".to_owned(),
        })
    }

    /// Sends one request and waits for its response.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, ClientError> {
        self.send_with_extra_wait(request, 0).await
    }

    /// Like [`Connection::send`], allowing `extra_wait_ms` beyond the request
    /// timeout (for a Fetch that asks the broker to wait).
    pub async fn send_with_extra_wait<R: Request>(
        &mut self,
        request: &R,
        extra_wait_ms: u64,
    ) -> Result<R::Response, ClientError> {
        let pending = self.write_request(request).await?;
        self.read_response_with_extra_wait(pending, extra_wait_ms)
            .await
    }

    /// Writes a request for which the broker sends no response (Produce with acks=0).
    pub async fn send_without_response<R: Request>(
        &mut self,
        request: &R,
    ) -> Result<(), ClientError> {
        let version = self.version_for::<R>()?;
        let (correlation_id, _) = self.write_raw(request, version).await?;
        let _ = correlation_id;
        Ok(())
    }

    /// Writes a request at the negotiated version; read its response later.
    pub async fn write_request<R: Request>(
        &mut self,
        request: &R,
    ) -> Result<PendingResponse<R>, ClientError> {
        let version = self.version_for::<R>()?;
        self.write_request_at(request, version).await
    }

    /// Writes a request at an explicit version (which must be one `R` encodes).
    pub async fn write_request_at<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<PendingResponse<R>, ClientError> {
        if self.in_flight.len() >= IN_FLIGHT_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "more than {IN_FLIGHT_MAX} requests in flight on the connection to {}",
                self.addr
            )));
        }
        let (correlation_id, version) = self.write_raw(request, version).await?;
        self.in_flight.push_back(InFlight {
            correlation_id,
            api_key: R::API_KEY,
            version,
        });
        Ok(PendingResponse {
            correlation_id,
            version,
            _request: PhantomData,
        })
    }

    async fn write_raw<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<(i32, i16), ClientError> {
        if self.broken {
            return Err(self.broken_error());
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let header = RequestHeader {
            api_key: R::API_KEY,
            api_version: version,
            correlation_id,
            client_id: Some(self.options.client_id.clone()),
        };
        let api = api_name(R::API_KEY);
        let buf = &mut self.write_buf;
        buf.clear();
        let start = weir_protocol::header::begin_frame(buf);
        header
            .encode(buf)
            .map_err(|source| ClientError::Encode { api, source })?;
        request
            .encode(buf, version)
            .map_err(|source| ClientError::Encode { api, source })?;
        weir_protocol::header::finish_frame(buf, start)
            .map_err(|e| ClientError::InvalidArgument(format!("{api} request too large: {e}")))?;
        let timeout_ms = self.options.request_timeout_ms;
        let write = self.writer.write_all(&self.write_buf);
        match tokio::time::timeout(Duration::from_millis(timeout_ms), write).await {
            Ok(Ok(())) => Ok((correlation_id, version)),
            Ok(Err(e)) => {
                self.broken = true;
                Err(ClientError::Io {
                    addr: self.addr.clone(),
                    error: Arc::new(e),
                })
            }
            Err(_) => {
                self.broken = true;
                Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    what: "request write",
                    timeout_ms,
                })
            }
        }
    }

    /// Reads the response to a request written earlier. Responses must be read
    /// in the order their requests were written.
    pub async fn read_response<R: Request>(
        &mut self,
        pending: PendingResponse<R>,
    ) -> Result<R::Response, ClientError> {
        self.read_response_with_extra_wait(pending, 0).await
    }

    pub async fn read_response_with_extra_wait<R: Request>(
        &mut self,
        pending: PendingResponse<R>,
        extra_wait_ms: u64,
    ) -> Result<R::Response, ClientError> {
        let timeout_ms = self
            .options
            .request_timeout_ms
            .saturating_add(extra_wait_ms);
        let api = api_name(R::API_KEY);
        let read = self.read_frame_for(pending.correlation_id, pending.version);
        let mut frame = match tokio::time::timeout(Duration::from_millis(timeout_ms), read).await {
            Ok(result) => result?,
            Err(_) => {
                self.broken = true;
                return Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    what: api,
                    timeout_ms,
                });
            }
        };
        let response = R::Response::decode(&mut frame, pending.version).map_err(|source| {
            ClientError::Decode {
                addr: self.addr.clone(),
                api,
                source,
            }
        })?;
        Ok(response)
    }

    /// Reads the next frame, checks it answers `correlation_id`, strips the
    /// response header and returns the body.
    async fn read_frame_for(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<Bytes, ClientError> {
        if self.broken {
            return Err(self.broken_error());
        }
        let Some(expected) = self.in_flight.front().copied() else {
            return Err(ClientError::InvalidArgument(
                "read_response without a request in flight".to_owned(),
            ));
        };
        if expected.correlation_id != correlation_id || expected.version != version {
            return Err(ClientError::InvalidArgument(format!(
                "responses must be read in request order (expected correlation id {}, asked for {correlation_id})",
                expected.correlation_id
            )));
        }
        let frame = match self.read_frame().await {
            Ok(f) => f,
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        };
        self.in_flight.pop_front();
        let mut frame = frame;
        let header_version = response_header_version(expected.api_key, expected.version);
        let header = ResponseHeader::decode(&mut frame, header_version).map_err(|source| {
            self.broken = true;
            ClientError::Decode {
                addr: self.addr.clone(),
                api: api_name(expected.api_key),
                source,
            }
        })?;
        if header.correlation_id != correlation_id {
            self.broken = true;
            return Err(ClientError::Protocol {
                addr: self.addr.clone(),
                detail: format!(
                    "expected correlation id {correlation_id}, got {}",
                    header.correlation_id
                ),
            });
        }
        Ok(frame)
    }

    async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let io_err = |addr: &str, e: std::io::Error| ClientError::Io {
            addr: addr.to_owned(),
            error: Arc::new(e),
        };
        let mut prefix = [0u8; 4];
        self.reader
            .read_exact(&mut prefix)
            .await
            .map_err(|e| io_err(&self.addr, e))?;
        let length = i32::from_be_bytes(prefix);
        let length = usize::try_from(length).map_err(|_| ClientError::Protocol {
            addr: self.addr.clone(),
            detail: format!("negative frame length {length}"),
        })?;
        if length > self.options.frame_bytes_max {
            return Err(ClientError::FrameTooLarge {
                addr: self.addr.clone(),
                length,
                frame_bytes_max: self.options.frame_bytes_max,
            });
        }
        let mut body = vec![0u8; length];
        self.reader
            .read_exact(&mut body)
            .await
            .map_err(|e| io_err(&self.addr, e))?;
        Ok(Bytes::from(body))
    }

    fn broken_error(&self) -> ClientError {
        ClientError::Io {
            addr: self.addr.clone(),
            error: Arc::new(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "connection was closed after an earlier error",
            )),
        }
    }
}

/// Highest version in both `[client_min, client_max]` and the broker's range.
pub(crate) fn pick_version(
    broker: Option<(i16, i16)>,
    client_min: i16,
    client_max: i16,
) -> Option<i16> {
    let (broker_min, broker_max) = broker?;
    let version = broker_max.min(client_max);
    (version >= client_min && version >= broker_min).then_some(version)
}

/// An error reply to ApiVersions is encoded at v0 whatever version was asked
/// for, so fall back to v0 when the body does not parse at the sent version.
fn decode_api_versions(
    frame: Bytes,
    version: i16,
) -> Result<messages::api_versions::ApiVersionsResponse, weir_protocol::codec::DecodeError> {
    let mut body = frame.clone();
    match messages::api_versions::ApiVersionsResponse::decode(&mut body, version) {
        Ok(r) => Ok(r),
        Err(e) if version > 0 => {
            let mut body = frame;
            messages::api_versions::ApiVersionsResponse::decode(&mut body, 0).map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use messages::api_versions::{ApiVersion, ApiVersionsResponse};
    use tokio::net::TcpListener;

    #[test]
    fn version_is_highest_common() {
        assert_eq!(pick_version(Some((0, 13)), 0, 12), Some(12));
        assert_eq!(pick_version(Some((0, 9)), 0, 12), Some(9));
        assert_eq!(pick_version(Some((4, 17)), 4, 12), Some(12));
    }

    #[test]
    fn disjoint_ranges_have_no_version() {
        assert_eq!(pick_version(Some((13, 17)), 4, 12), None);
        assert_eq!(pick_version(Some((0, 2)), 3, 12), None);
        assert_eq!(pick_version(None, 0, 12), None);
    }

    /// A scripted broker: answers ApiVersions, then echoes canned frames.
    async fn fake_broker(
        listener: TcpListener,
        api_versions_max: i16,
        first_reply_unsupported: bool,
        extra: Vec<Vec<u8>>,
    ) {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut answered_unsupported = !first_reply_unsupported;
        loop {
            let mut prefix = [0u8; 4];
            if sock.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let mut body = vec![0u8; i32::from_be_bytes(prefix) as usize];
            sock.read_exact(&mut body).await.unwrap();
            let mut b = Bytes::from(body);
            let header = RequestHeader::decode(&mut b).unwrap();
            if header.api_key == 18 {
                let mut resp = ApiVersionsResponse {
                    api_keys: vec![
                        ApiVersion {
                            api_key: 18,
                            min_version: 0,
                            max_version: api_versions_max,
                        },
                        ApiVersion {
                            api_key: 3,
                            min_version: 0,
                            max_version: 12,
                        },
                    ],
                    ..Default::default()
                };
                let version = if !answered_unsupported {
                    answered_unsupported = true;
                    resp.error_code = 35;
                    0
                } else {
                    header.api_version
                };
                let mut out = BytesMut::new();
                let start = weir_protocol::header::begin_frame(&mut out);
                ResponseHeader {
                    correlation_id: header.correlation_id,
                }
                .encode(&mut out, 0);
                resp.encode(&mut out, version).unwrap();
                weir_protocol::header::finish_frame(&mut out, start).unwrap();
                sock.write_all(&out).await.unwrap();
            } else {
                for frame in &extra {
                    sock.write_all(frame).await.unwrap();
                }
            }
        }
    }

    #[tokio::test]
    async fn negotiation_retries_with_broker_max_after_unsupported_version() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(fake_broker(listener, 2, true, vec![]));
        let conn = Connection::connect(&addr, ConnectionOptions::default())
            .await
            .unwrap();
        assert_eq!(conn.broker_versions(3), Some((0, 12)));
        assert_eq!(
            conn.version_for::<messages::metadata::MetadataRequest>()
                .unwrap(),
            12
        );
        let err = conn
            .version_for::<messages::produce::ProduceRequest>()
            .unwrap_err();
        assert!(
            matches!(err, ClientError::UnsupportedApi { api_key: 0, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn oversized_response_frame_breaks_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // A frame claiming 2 GiB - 1 bytes.
        tokio::spawn(fake_broker(
            listener,
            3,
            false,
            vec![vec![0x7f, 0xff, 0xff, 0xff]],
        ));
        let options = ConnectionOptions {
            frame_bytes_max: 1024,
            ..Default::default()
        };
        let mut conn = Connection::connect(&addr, options).await.unwrap();
        let err = conn
            .send(&messages::metadata::MetadataRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::FrameTooLarge { .. }), "{err}");
        assert!(conn.is_broken());
        let again = conn
            .send(&messages::metadata::MetadataRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(again, ClientError::Io { .. }), "{again}");
    }

    #[tokio::test]
    async fn wrong_correlation_id_is_a_protocol_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut frame = BytesMut::new();
        let start = weir_protocol::header::begin_frame(&mut frame);
        ResponseHeader {
            correlation_id: 999,
        }
        .encode(&mut frame, 1);
        messages::metadata::MetadataResponse::default()
            .encode(&mut frame, 12)
            .unwrap();
        weir_protocol::header::finish_frame(&mut frame, start).unwrap();
        tokio::spawn(fake_broker(listener, 3, false, vec![frame.to_vec()]));
        let mut conn = Connection::connect(&addr, ConnectionOptions::default())
            .await
            .unwrap();
        let err = conn
            .send(&messages::metadata::MetadataRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_names_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = Connection::connect(&addr, ConnectionOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&addr), "{err}");
    }

    /// A listener that answers every connection with `reply` (or nothing).
    async fn scripted_peer(reply: Option<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = sock.read(&mut buf).await;
            match reply {
                Some(bytes) => {
                    let _ = sock.write_all(bytes).await;
                    let _ = sock.flush().await;
                }
                None => tokio::time::sleep(Duration::from_secs(60)).await,
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_http_port_is_named_as_not_kafka() {
        let addr = scripted_peer(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n")).await;
        let err = Connection::connect(&addr, ConnectionOptions::default())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClientError::NotKafka { .. }), "{text}");
        assert!(text.contains("\"HTTP...\""), "{text}");
        assert!(text.contains("not an HTTP"), "{text}");
        assert!(!text.contains("1213486160"), "{text}");
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_times_out_with_a_hint() {
        let addr = scripted_peer(None).await;
        let options = ConnectionOptions {
            connect_timeout_ms: 300,
            ..ConnectionOptions::default()
        };
        let started = std::time::Instant::now();
        let err = Connection::connect(&addr, options).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, ClientError::NoAnswer { .. }), "{err}");
        assert!(
            err.to_string().contains("did not answer ApiVersions"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_is_named() {
        let addr = scripted_peer(Some(b"")).await;
        let err = Connection::connect(&addr, ConnectionOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::NotKafka { .. }), "{err}");
        assert!(err.to_string().contains("closed the connection"), "{err}");
    }
}

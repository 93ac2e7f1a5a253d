//! Weir's network shell: tokio listeners, per-connection framing, pipelining and
//! the bounds that keep one client from hurting another.
//!
//! Owns: accepting connections (capped), reading length-prefixed frames (capped
//! at `request_frame_bytes_max`), idle timeouts, and writing responses in request
//! order. It must never interpret Kafka semantics: every request goes to
//! [`weir_broker::Broker::handle`], which does the ordered part of the work at
//! once and returns a future for the part that waits (durability, long-poll).
//! The writer awaits those futures in order, so a connection pipelines up to
//! `in_flight_requests_max` requests while answering them in order, as Kafka
//! clients require.
//!
//! [`controller_net`] is the controller listener: the metadata quorum's
//! transport over TCP, apart from the Kafka listener. [`http`] is the
//! operations listener (metrics and health), apart from both; [`console`] is
//! the web console it also serves.

pub mod console;
pub mod controller_net;
pub mod http;
pub mod warn_limit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use std::os::fd::AsFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use std::sync::atomic::Ordering::Relaxed;
use tokio::io::Interest;
use weir_broker::metrics::RequestTimer;
use weir_broker::produce_trace::{FrameTiming, ProduceTrace};
use weir_broker::{Broker, FrameChunk, PendingReply};
use weir_log::FileRange;
use weir_protocol::header::{RequestHeader, split_frame};

/// Bytes read from a socket per `read` call when the buffer runs dry. Also the
/// size of request a connection may buffer without drawing on the shared
/// request-memory budget.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Responses gathered into one socket write before flushing.
const WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// File ranges up to this size are copied into the gathered write instead of sent with
/// sendfile: a long-poll fetch that wakes for a few fresh records then goes out as one write
/// (one segment for the client to wake on) rather than header, sendfile and trailer. The data
/// was just appended, so the copy reads the page cache; larger ranges keep zero copy.
const FILE_RANGE_COPY_BYTES_MAX: usize = 16 * 1024;
/// On shutdown, how long a connection may keep answering requests already
/// read. Acks waiting on a sync finish well inside it; a long-poll fetch
/// (which may park for up to 30 s) is dropped, and its client retries
/// elsewhere or after restart.
const SHUTDOWN_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Warnings for connections refused over `connections_max`, rate-limited.
static CONNECTION_LIMIT_WARN: warn_limit::WarnLimit = warn_limit::WarnLimit::new();
/// Warnings for frames refused (oversized, negative length), rate-limited.
static BAD_FRAME_WARN: warn_limit::WarnLimit = warn_limit::WarnLimit::new();

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Limits applied to every connection.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub request_frame_bytes_max: usize,
    /// Bytes of large requests (over [`READ_CHUNK_BYTES`]) that may be
    /// buffered across all connections at once (Kafka's `queued.max.request.bytes`).
    pub queued_request_bytes_max: usize,
    pub in_flight_requests_max: usize,
    pub idle_ms_max: u64,
}

/// Accepts connections until `shutdown` turns true, then waits for every
/// connection to finish the requests it has already read.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    connections_max: usize,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let permits = Arc::new(Semaphore::new(connections_max));
    // One permit per byte of large request being received, across all connections.
    let request_memory = Arc::new(Semaphore::new(limits.queued_request_bytes_max));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let metrics = broker.metrics.clone();
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    metrics.connections_refused.fetch_add(1, Relaxed);
                    if let Some(suppressed) = CONNECTION_LIMIT_WARN.check() {
                        tracing::warn!(
                            %peer, connections_max, suppressed,
                            "connection limit reached; refusing (suppressed: refusals not logged \
                             in the last 10 s)"
                        );
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let broker = broker.clone();
                let limits = limits.clone();
                let shutdown = shutdown.clone();
                let request_memory = request_memory.clone();
                metrics.connections_accepted.fetch_add(1, Relaxed);
                metrics.connections_open.fetch_add(1, Relaxed);
                connections.spawn(async move {
                    if let Err(e) =
                        run_connection(stream, peer, broker, limits, request_memory, shutdown).await
                    {
                        tracing::debug!(%peer, error = %e, "connection closed with error");
                    }
                    metrics.connections_open.fetch_sub(1, Relaxed);
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    limits: ConnectionLimits,
    request_memory: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let (mut reader, writer) = stream.into_split();
    let (pending_tx, pending_rx) = mpsc::channel::<Pending>(limits.in_flight_requests_max);
    let steps = StepRecorder {
        metrics: Arc::clone(&broker.metrics),
        env: Arc::clone(broker.log_env()),
        slow_after: match broker.config.slow_produce_warn_ms {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
    };
    let write_task = tokio::spawn(write_replies(writer, pending_rx, Some(steps)));

    let idle = Duration::from_millis(limits.idle_ms_max);
    let mut shutting_down = false;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    // The share of the request-memory budget held for the large frame being
    // received; released once that frame has been handed to the broker.
    let mut reservation: Option<OwnedSemaphorePermit> = None;
    // For the produce step timings: when the frame at the head of `buf` began to arrive, and
    // when the latest read returned (a frame is whole at the read that completed it).
    let mut last_read_at = Instant::now();
    let mut first_byte_at = last_read_at;
    let result: Result<(), ServerError> = 'conn: loop {
        // Answer every complete frame already buffered before reading more.
        loop {
            let frame = match split_frame(&mut buf, limits.request_frame_bytes_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    if let Some(suppressed) = BAD_FRAME_WARN.check() {
                        tracing::warn!(
                            %peer, error = %e, suppressed,
                            "request frame refused; closing connection (request_frame_bytes_max \
                             bounds frames; suppressed: refusals not logged in the last 10 s)"
                        );
                    }
                    break 'conn Ok(());
                }
            };
            let timing = FrameTiming {
                first_byte_at,
                complete_at: last_read_at,
            };
            // What follows in the buffer arrived by the latest read at the earliest.
            first_byte_at = last_read_at;
            let (outcome, timer) = dispatch(&broker, peer, frame).await;
            // A reservation is only ever taken for the frame at the head of the
            // buffer, which is the one just dispatched.
            if reservation.is_some() {
                // The large allocation must go with the reservation: keep
                // whatever followed the frame in a buffer of the normal size.
                if buf.capacity() > 2 * READ_CHUNK_BYTES {
                    let mut fresh = BytesMut::with_capacity(READ_CHUNK_BYTES.max(buf.len()));
                    fresh.extend_from_slice(&buf);
                    buf = fresh;
                }
                reservation = None;
            }
            match outcome {
                Some(pending) => {
                    if pending_tx.send((pending, timer, timing)).await.is_err() {
                        break 'conn Ok(());
                    }
                }
                None => break 'conn Ok(()),
            }
        }
        // A large frame is buffered whole only once the shared budget has
        // room for it; until then this connection reads nothing more.
        let frame_bytes = partial_frame_bytes(&buf);
        if frame_bytes > READ_CHUNK_BYTES && reservation.is_none() {
            let bytes = u32::try_from(frame_bytes).unwrap_or(u32::MAX);
            let permit = match request_memory.clone().try_acquire_many_owned(bytes) {
                Ok(permit) => permit,
                Err(_) => {
                    tracing::debug!(frame_bytes, "request memory exhausted; pausing reads");
                    tokio::select! {
                        permit = request_memory.clone().acquire_many_owned(bytes) => match permit {
                            Ok(permit) => permit,
                            Err(_) => break 'conn Ok(()), // semaphore closed: shutting down
                        },
                        _ = shutdown.changed() => {
                            shutting_down = true;
                            break 'conn Ok(());
                        }
                    }
                }
            };
            reservation = Some(permit);
            buf.reserve(frame_bytes.saturating_sub(buf.len()));
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES && reservation.is_none() {
            buf.reserve(READ_CHUNK_BYTES);
        }
        let was_empty = buf.is_empty();
        let read = tokio::select! {
            read = tokio::time::timeout(idle, reader.read_buf(&mut buf)) => read,
            // The writer stopped (a response that closes the connection, or
            // a write error): nothing more can be answered.
            _ = pending_tx.closed() => break 'conn Ok(()),
            _ = shutdown.changed() => {
                shutting_down = true;
                break 'conn Ok(());
            }
        };
        match read {
            Err(_) => break 'conn Ok(()), // idle too long
            Ok(Ok(0)) => break 'conn Ok(()),
            Ok(Ok(_)) => {
                last_read_at = Instant::now();
                if was_empty {
                    first_byte_at = last_read_at;
                }
            }
            Ok(Err(e)) => break 'conn Err(e.into()),
        }
    };
    drop(pending_tx);
    let mut write_task = write_task;
    let written = if shutting_down {
        match tokio::time::timeout(SHUTDOWN_ANSWER_GRACE, &mut write_task).await {
            Ok(written) => written,
            Err(_) => {
                write_task.abort();
                return result;
            }
        }
    } else {
        write_task.await
    };
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => tracing::error!(error = %e, "connection writer task failed"),
    }
    result
}

/// The total size (length prefix included) of the frame that starts `buf`,
/// once its length prefix has arrived; 0 before that. An invalid length is
/// left for `split_frame` to refuse.
fn partial_frame_bytes(buf: &[u8]) -> usize {
    let Some(prefix) = buf.get(..4) else {
        return 0;
    };
    let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    usize::try_from(len).map_or(0, |len| len.saturating_add(4))
}

/// Appends a (small) file range to `out`. A file shorter than the range means the index and the
/// file disagree: the frame can't be completed, so the connection must close.
fn copy_file_range_into(range: &FileRange, out: &mut BytesMut) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let at = out.len();
    out.resize(at + range.len, 0);
    let Some(dst) = out.get_mut(at..) else {
        return Err(std::io::Error::other("write buffer shorter than resized"));
    };
    range.file.read_exact_at(dst, range.position)
}

/// Writes a file range to the socket with sendfile(2): the bytes go from the
/// page cache to the socket without a trip through user space.
async fn send_file(stream: &TcpStream, range: &FileRange) -> std::io::Result<()> {
    let mut position = range.position;
    let mut left = range.len;
    while left > 0 {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut offset = position;
            rustix::fs::sendfile(stream.as_fd(), range.file.as_fd(), Some(&mut offset), left)
                .map_err(std::io::Error::from)
        });
        match sent {
            // The file is shorter than the index said: the frame can't be
            // completed, so the connection must close rather than send garbage.
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file ended before the fetched range",
                ));
            }
            Ok(n) => {
                position += n as u64;
                left -= n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A request's answer-to-be, with its latency timer (none for a request Weir
/// does not serve).
type Pending = (PendingReply, Option<RequestTimer>, FrameTiming);

/// Where a connection's writer records produce step timings.
struct StepRecorder {
    metrics: Arc<weir_broker::metrics::RequestMetrics>,
    env: Arc<weir_log::LogEnv>,
    /// `slow_produce_warn_ms`; `None` when off.
    slow_after: Option<Duration>,
}

/// Most produce responses of one socket write whose timings wait for that write to finish;
/// any beyond are recorded as the write is gathered. Bounds the per-connection buffer.
const TRACED_PER_WRITE_MAX: usize = 64;

/// Decodes one frame's header and hands the request to the broker. `None`
/// means the connection must close (undecodable header, unknown API).
async fn dispatch(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    frame: Bytes,
) -> (Option<PendingReply>, Option<RequestTimer>) {
    let mut body = frame.clone();
    let header = match RequestHeader::decode(&mut body) {
        Ok(header) => header,
        Err(e) => {
            // An ApiVersions request from a newer client may carry a header shape
            // we can't parse; its fixed prefix is enough to answer it with our
            // supported ranges (KIP-511), so the client can downgrade.
            if let Some(header) = api_versions_prefix(&frame) {
                return (broker.handle(peer, header, Bytes::new()).await, None);
            }
            tracing::debug!(error = %e, "undecodable request header");
            return (None, None);
        }
    };
    let timer = broker
        .metrics
        .request_started(header.api_key, header.api_version);
    (broker.handle(peer, header, body).await, timer)
}

/// The api key, version and correlation id of an ApiVersions request whose
/// version we don't support, read from the fixed 8-byte header prefix.
fn api_versions_prefix(frame: &[u8]) -> Option<RequestHeader> {
    let prefix: &[u8; 8] = frame.get(..8)?.try_into().ok()?;
    let api_key = i16::from_be_bytes([prefix[0], prefix[1]]);
    let api_version = i16::from_be_bytes([prefix[2], prefix[3]]);
    let correlation_id = i32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    let unsupported = !weir_protocol::api::is_supported(api_key, api_version);
    (api_key == weir_protocol::api::API_VERSIONS_KEY && unsupported).then_some(RequestHeader {
        api_key,
        api_version,
        correlation_id,
        client_id: None,
    })
}

/// Answers in request order. Gathers whatever responses are already complete
/// into one write to save syscalls under pipelining, and sends record bytes
/// that live in segment files with sendfile. Returns (dropping the receiver,
/// which tells the reader to stop) after a frame that asks for the connection
/// to close.
async fn write_replies(
    mut writer: OwnedWriteHalf,
    mut pending_rx: mpsc::Receiver<Pending>,
    steps: Option<StepRecorder>,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(64 * 1024);
    // Produce responses in `out`, recorded once it has been written.
    let mut traced: Vec<(ProduceTrace, FrameTiming)> = Vec::with_capacity(TRACED_PER_WRITE_MAX);
    let record = |traced: &mut Vec<(ProduceTrace, FrameTiming)>| {
        let written_at = Instant::now();
        for (trace, timing) in traced.drain(..) {
            if let Some(s) = &steps {
                s.metrics.produce_steps.record(
                    &trace,
                    &timing,
                    written_at,
                    s.slow_after,
                    s.env.sync_stats(),
                );
            }
        }
    };
    while let Some((mut pending, mut timer, mut timing)) = pending_rx.recv().await {
        loop {
            // Responses that are already complete are gathered into one
            // write; before waiting on one that isn't (fsync, long-poll),
            // everything gathered so far goes out, so no ack waits behind
            // a later request's durability.
            let polled = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await;
            let frame = match polled {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if !out.is_empty() {
                        writer.write_all(&out).await?;
                        out.clear();
                        record(&mut traced);
                    }
                    pending.await
                }
            };
            if let Some(trace) = frame.as_ref().and_then(|f| f.produce_trace) {
                if traced.len() < TRACED_PER_WRITE_MAX {
                    traced.push((trace, timing));
                } else {
                    record(&mut vec![(trace, timing)]);
                }
            }
            if let Some(timer) = timer.take() {
                let none = weir_broker::metrics::ErrorTally::default();
                timer.finish(frame.as_ref().map_or(&none, |f| &f.errors));
            }
            let close_connection = frame.as_ref().is_some_and(|f| f.close_connection);
            for chunk in frame.into_iter().flat_map(|f| f.chunks) {
                match chunk {
                    FrameChunk::Bytes(bytes) => out.extend_from_slice(&bytes),
                    FrameChunk::File(range) if range.len <= FILE_RANGE_COPY_BYTES_MAX => {
                        copy_file_range_into(&range, &mut out)?;
                    }
                    FrameChunk::File(range) => {
                        if !out.is_empty() {
                            writer.write_all(&out).await?;
                            out.clear();
                            record(&mut traced);
                        }
                        send_file(writer.as_ref(), &range).await?;
                    }
                }
            }
            if close_connection {
                // Whatever was answered before goes out; nothing after it.
                writer.write_all(&out).await?;
                writer.shutdown().await.ok();
                return Ok(());
            }
            if out.len() >= WRITE_BATCH_BYTES_MAX {
                writer.write_all(&out).await?;
                out.clear();
                record(&mut traced);
            }
            match pending_rx.try_recv() {
                Ok(next) => (pending, timer, timing) = next,
                Err(_) => break,
            }
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
            out.clear();
        }
        record(&mut traced);
    }
    writer.shutdown().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_broker::Frame;

    fn ready(frame: Option<Frame>) -> Pending {
        let now = Instant::now();
        let timing = FrameTiming {
            first_byte_at: now,
            complete_at: now,
        };
        (Box::pin(std::future::ready(frame)), None, timing)
    }

    #[tokio::test]
    async fn a_frame_that_closes_the_connection_ends_the_replies() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_reader, writer) = server.into_split();
        let (tx, rx) = mpsc::channel(8);
        let writer_task = tokio::spawn(write_replies(writer, rx, None));

        tx.send(ready(Some(Frame::from(Bytes::from_static(b"first")))))
            .await
            .unwrap();
        tx.send(ready(None)).await.unwrap(); // acks=0: nothing to send
        tx.send(ready(Some(Frame::close_connection())))
            .await
            .unwrap();
        // Queued behind the failure: must never be sent.
        let _ = tx
            .send(ready(Some(Frame::from(Bytes::from_static(b"after")))))
            .await;

        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut received))
            .await
            .expect("the connection closes rather than waiting")
            .unwrap();
        assert_eq!(received, b"first");
        writer_task.await.unwrap().unwrap();
        assert!(tx.is_closed(), "the reader side is told to stop");
    }
}

//! The controller listener: the metadata quorum's [`Transport`] over TCP.
//!
//! Owns sockets only; what the bytes mean is the quorum's business
//! (`weir_metadata::quorum::rpc`). A frame is `[u32 BE length][payload]` in
//! both directions, one reply per request, in order, per connection.
//!
//! Bounds: frames above [`FRAME_BYTES_MAX`] are refused (the connection is
//! closed, since the stream cannot be resynchronised); connects, whole calls
//! and frame bodies have timeouts; calls in flight, idle pooled connections
//! per peer and accepted connections are capped.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use weir_metadata::quorum::{BoxFuture, Listening, RpcHandler, Transport, TransportError};

/// The largest frame either side sends or accepts: a snapshot chunk or a
/// batch of log entries, with room to spare.
pub const FRAME_BYTES_MAX: u32 = 64 << 20;

#[derive(Debug, Clone)]
pub struct TcpTransportConfig {
    pub connect_timeout_ms: u64,
    /// Once a frame's length has arrived, how long its body may take.
    pub frame_body_timeout_ms: u64,
    pub calls_in_flight_max: usize,
    /// Connections kept open per peer for reuse.
    pub idle_connections_per_peer_max: usize,
    pub accepted_connections_max: usize,
}

impl Default for TcpTransportConfig {
    fn default() -> Self {
        TcpTransportConfig {
            connect_timeout_ms: 1_000,
            frame_body_timeout_ms: 30_000,
            calls_in_flight_max: 64,
            idle_connections_per_peer_max: 4,
            accepted_connections_max: 256,
        }
    }
}

/// The TCP transport. One per process; share it with `Arc`.
pub struct TcpTransport {
    config: TcpTransportConfig,
    /// Idle connections by peer address, reused for the next call.
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
    in_flight: Arc<Semaphore>,
}

impl TcpTransport {
    pub fn new(config: TcpTransportConfig) -> TcpTransport {
        let in_flight = Arc::new(Semaphore::new(config.calls_in_flight_max));
        TcpTransport {
            config,
            idle: Mutex::new(HashMap::new()),
            in_flight,
        }
    }

    fn take_idle(&self, addr: &str) -> Option<TcpStream> {
        self.idle
            .lock()
            .expect("idle pool lock")
            .get_mut(addr)
            .and_then(Vec::pop)
    }

    fn put_idle(&self, addr: &str, stream: TcpStream) {
        let mut idle = self.idle.lock().expect("idle pool lock");
        let pool = idle.entry(addr.to_string()).or_default();
        if pool.len() < self.config.idle_connections_per_peer_max {
            pool.push(stream);
        }
    }

    async fn connect(&self, addr: &str, deadline: Instant) -> Result<TcpStream, TransportError> {
        let connect_deadline =
            deadline.min(Instant::now() + Duration::from_millis(self.config.connect_timeout_ms));
        match tokio::time::timeout_at(connect_deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Raft heartbeats are small and latency-bound.
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(TransportError::Connect {
                addr: addr.to_string(),
                reason: e.to_string(),
            }),
            Err(_) => Err(TransportError::Connect {
                addr: addr.to_string(),
                reason: format!("no connection within {} ms", self.config.connect_timeout_ms),
            }),
        }
    }

    async fn call_inner(
        &self,
        addr: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let deadline = Instant::now() + timeout;
        let timed_out = || TransportError::Timeout {
            addr: addr.to_string(),
            timeout_ms: timeout.as_millis() as u64,
        };
        let _permit = tokio::time::timeout_at(deadline, self.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .expect("semaphore never closed");
        // A pooled connection may have been closed by the peer (it restarted);
        // that shows as an error before any reply byte, and one fresh
        // connection is tried. A fresh connection's failure is final.
        if let Some(mut stream) = self.take_idle(addr) {
            match tokio::time::timeout_at(
                deadline,
                exchange(&mut stream, request, self.frame_timeout()),
            )
            .await
            {
                Ok(Ok(reply)) => {
                    self.put_idle(addr, stream);
                    return Ok(reply);
                }
                Ok(Err(Exchange::Stale(_))) => {}
                Ok(Err(Exchange::Failed(e))) => return Err(io_error(addr, e)),
                Err(_) => return Err(timed_out()),
            }
        }
        let mut stream = self.connect(addr, deadline).await?;
        match tokio::time::timeout_at(
            deadline,
            exchange(&mut stream, request, self.frame_timeout()),
        )
        .await
        {
            Ok(Ok(reply)) => {
                self.put_idle(addr, stream);
                Ok(reply)
            }
            Ok(Err(Exchange::Stale(e) | Exchange::Failed(e))) => Err(io_error(addr, e)),
            Err(_) => Err(timed_out()),
        }
    }

    fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.config.frame_body_timeout_ms)
    }
}

fn io_error(addr: &str, e: io::Error) -> TransportError {
    TransportError::Io {
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}

enum Exchange {
    /// Failed before any reply byte: the peer never answered on this connection.
    Stale(io::Error),
    Failed(io::Error),
}

async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    frame_timeout: Duration,
) -> Result<Vec<u8>, Exchange> {
    write_frame(stream, request)
        .await
        .map_err(Exchange::Stale)?;
    let len = stream.read_u32().await.map_err(Exchange::Stale)?;
    read_body(stream, len, frame_timeout)
        .await
        .map_err(Exchange::Failed)
}

async fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len <= FRAME_BYTES_MAX)
        .ok_or_else(|| {
            io::Error::other(format!(
                "frame of {} bytes above the {FRAME_BYTES_MAX}-byte cap",
                payload.len()
            ))
        })?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await
}

async fn read_body(stream: &mut TcpStream, len: u32, timeout: Duration) -> io::Result<Vec<u8>> {
    if len > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes above the {FRAME_BYTES_MAX}-byte cap"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    tokio::time::timeout(timeout, stream.read_exact(&mut body))
        .await
        .map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "frame body did not arrive in time")
        })??;
    Ok(body)
}

impl Transport for TcpTransport {
    fn call(
        &self,
        addr: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let addr = addr.to_string();
        Box::pin(async move { self.call_inner(&addr, &request, timeout).await })
    }

    fn serve(
        &self,
        listen: SocketAddr,
        handler: Arc<dyn RpcHandler>,
    ) -> BoxFuture<'_, Result<Listening, TransportError>> {
        let config = self.config.clone();
        Box::pin(async move {
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|e| TransportError::Listen {
                    addr: listen.to_string(),
                    reason: e.to_string(),
                })?;
            let local_addr = listener.local_addr().map_err(|e| TransportError::Listen {
                addr: listen.to_string(),
                reason: e.to_string(),
            })?;
            let (stop_tx, stop_rx) = watch::channel(false);
            tokio::spawn(accept_loop(listener, handler, config, stop_rx));
            Ok(Listening::new(local_addr, move || {
                let _ = stop_tx.send(true);
            }))
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    handler: Arc<dyn RpcHandler>,
    config: TcpTransportConfig,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(config.accepted_connections_max));
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|&s| s) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "controller listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = config.accepted_connections_max, "controller listener: too many connections, refusing one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let stop = stop.clone();
        let frame_timeout = Duration::from_millis(config.frame_body_timeout_ms);
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, handler, stop, frame_timeout).await {
                tracing::debug!(%peer, error = %e, "controller connection closed");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    handler: Arc<dyn RpcHandler>,
    mut stop: watch::Receiver<bool>,
    frame_timeout: Duration,
) -> io::Result<()> {
    loop {
        let len = tokio::select! {
            _ = stop.wait_for(|&s| s) => return Ok(()),
            len = stream.read_u32() => match len {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let request = read_body(&mut stream, len, frame_timeout).await?;
        let reply = tokio::select! {
            _ = stop.wait_for(|&s| s) => return Ok(()),
            reply = handler.handle(request) => reply,
        };
        write_frame(&mut stream, &reply).await?;
    }
}

//! Hostile input: garbage, truncated and oversized frames, unknown APIs, bad
//! versions, huge counts, bad CRCs and oversized batches. Each gets an error
//! code or a closed connection; the broker stays up, a well-behaved client
//! running at the same time sees no errors, and RSS stays bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use weir_protocol::codec::Encode;
use weir_protocol::compression::Compression;
use weir_protocol::messages::produce::{PartitionProduceData, ProduceRequest, TopicProduceData};
use weir_protocol::record::{Record, RecordBatchBuilder};

use super::harness::{Broker, create_topic};
use super::rdkafka_roundtrip::{AckContext, Acks};

/// A v1 request header (api key, version, correlation id, client id).
fn header(api_key: i16, version: i16, correlation_id: i32) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_i16(api_key);
    buf.put_i16(version);
    buf.put_i32(correlation_id);
    buf.put_i16(6);
    buf.put_slice(b"hostil");
    buf
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Sends raw bytes and returns the response frame, or None if the broker closed the connection.
pub(super) fn exchange(broker: &Broker, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(broker.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if stream.write_all(bytes).is_err() {
        return None;
    }
    // Half-close so a frame that claims more bytes than we sent ends in EOF
    // rather than a wait for the idle timeout.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            panic!("broker neither answered nor closed the connection")
        }
        Err(_) => return None,
    }
    let size = i32::from_be_bytes(len);
    assert!(
        (0..64 << 20).contains(&size),
        "response frame size {size} is absurd"
    );
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

pub(super) fn produce_frame(topic: &str, records: Bytes) -> Vec<u8> {
    let request = ProduceRequest {
        acks: -1,
        timeout_ms: 5000,
        topic_data: vec![TopicProduceData {
            name: topic.to_string(),
            topic_id: [0; 16],
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(records),
            }],
        }],
        ..Default::default()
    };
    let mut buf = header(0, 7, 77);
    request.encode(&mut buf, 7).expect("encode produce");
    framed(&buf)
}

/// The error code of the single partition in a Produce v7 response body.
pub(super) fn produce_error_code(response: &[u8]) -> i16 {
    // correlation id (4), topics count (4), name (2+len), partitions count (4), index (4), error (2)
    let name_len = i16::from_be_bytes([response[8], response[9]]) as usize;
    let at = 4 + 4 + 2 + name_len + 4 + 4;
    i16::from_be_bytes([response[at], response[at + 1]])
}

fn batch(value_bytes: usize) -> Bytes {
    RecordBatchBuilder::new(Compression::None)
        .record(Record {
            offset_delta: 0,
            timestamp_delta: 0,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from(vec![b'v'; value_bytes])),
            headers: Vec::new(),
        })
        .build()
        .expect("build batch")
}

#[test]
fn hostile_input_gets_errors_and_harms_no_one() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "victim", 1, &[("max.message.bytes", "10000")]);
    create_topic(&broker, "bystander", 1, &[]);

    // A well-behaved producer keeps running the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Acks::default());
    let bystander = {
        let stop = stop.clone();
        let acks = acks.clone();
        let config = broker.client_config();
        std::thread::spawn(move || {
            let producer: ThreadedProducer<AckContext> = config
                .clone()
                .set("acks", "all")
                .set("linger.ms", "1")
                .create_with_context(AckContext(acks))
                .expect("producer");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = i.to_string();
                let record: BaseRecord<'_, String, str, Box<usize>> =
                    BaseRecord::with_opaque_to("bystander", Box::new(i))
                        .key(&key)
                        .payload("fine");
                if producer.send(record).is_ok() {
                    i += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            producer
                .flush(Duration::from_secs(30))
                .expect("bystander flush");
            i
        })
    };
    let rss_before_kib = broker.rss_kib();

    // Random bytes, many times, with random lengths.
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200 {
        let len = (next() % 512) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = exchange(&broker, &bytes);
    }
    // A frame with a plausible length but random content.
    for _ in 0..200 {
        let len = (next() % 256) as usize + 8;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = exchange(&broker, &framed(&body));
    }
    // Truncated frame: claims 1000 bytes, sends 10, then hangs up.
    {
        let mut stream = TcpStream::connect(broker.addr).unwrap();
        stream.write_all(&1000i32.to_be_bytes()).unwrap();
        stream.write_all(&[0u8; 10]).unwrap();
    }
    // A frame over the cap (100 MiB) is refused without reading it.
    let mut huge = Vec::new();
    huge.extend_from_slice(&(200 * 1024 * 1024i32).to_be_bytes());
    huge.extend_from_slice(&header(18, 0, 1));
    assert!(
        exchange(&broker, &huge).is_none(),
        "an over-cap frame must close the connection"
    );
    // Negative length.
    assert!(exchange(&broker, &(-5i32).to_be_bytes()).is_none());
    // Unknown API key.
    assert!(
        exchange(&broker, &framed(&header(999, 0, 2))).is_none(),
        "unknown api key must close"
    );
    // Bad version of a known API.
    assert!(
        exchange(&broker, &framed(&header(0, 99, 3))).is_none(),
        "produce v99 must close"
    );
    // ApiVersions at an unknown version: a v0 reply with UNSUPPORTED_VERSION (35).
    let reply =
        exchange(&broker, &framed(&header(18, 99, 4))).expect("ApiVersions v99 gets a reply");
    assert_eq!(
        i32::from_be_bytes(reply[0..4].try_into().unwrap()),
        4,
        "correlation id echoed"
    );
    assert_eq!(
        i16::from_be_bytes(reply[4..6].try_into().unwrap()),
        35,
        "UNSUPPORTED_VERSION"
    );
    // Huge array count in a tiny Metadata v1 body.
    let mut body = header(3, 1, 5);
    body.put_i32(0x7fff_ffff);
    assert!(
        exchange(&broker, &framed(&body)).is_none(),
        "huge count must close, not allocate"
    );
    // Huge string length.
    let mut body = header(3, 1, 6);
    body.put_i32(1);
    body.put_i16(0x7fff);
    assert!(exchange(&broker, &framed(&body)).is_none());

    // A batch with a flipped payload bit fails its CRC: CORRUPT_MESSAGE (2).
    let mut corrupt = BytesMut::from(&batch(100)[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    let reply =
        exchange(&broker, &produce_frame("victim", corrupt.freeze())).expect("produce reply");
    assert_eq!(
        produce_error_code(&reply),
        2,
        "bad CRC must be CORRUPT_MESSAGE"
    );
    // A batch over max.message.bytes: MESSAGE_TOO_LARGE (10).
    let reply = exchange(&broker, &produce_frame("victim", batch(20_000))).expect("produce reply");
    assert_eq!(
        produce_error_code(&reply),
        10,
        "oversized batch must be MESSAGE_TOO_LARGE"
    );
    // A batch claiming more bytes than it has.
    let mut lying = BytesMut::from(&batch(100)[..]);
    lying[8..12].copy_from_slice(&100_000i32.to_be_bytes());
    let reply = exchange(&broker, &produce_frame("victim", lying.freeze())).expect("produce reply");
    assert_eq!(
        produce_error_code(&reply),
        2,
        "lying batch length must be CORRUPT_MESSAGE"
    );
    // A good batch still works on the same topic afterwards.
    let reply = exchange(&broker, &produce_frame("victim", batch(100))).expect("produce reply");
    assert_eq!(
        produce_error_code(&reply),
        0,
        "a valid batch must still be accepted"
    );

    stop.store(true, Ordering::Relaxed);
    let sent = bystander.join().expect("bystander thread");
    let failed = acks.failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "the well-behaved client saw errors: {:?}",
        failed.first()
    );
    assert_eq!(
        acks.placed.lock().unwrap().len(),
        sent,
        "every bystander record acknowledged"
    );
    let rss_after_kib = broker.rss_kib();
    assert!(
        rss_after_kib < rss_before_kib + 256 * 1024,
        "RSS grew from {rss_before_kib} KiB to {rss_after_kib} KiB"
    );
}

/// Kafka's `queued.max.request.bytes`: eight connections that each stall half
/// way through a 90 MiB request must not make the broker buffer 8 x 45 MiB.
/// Past the cap, connections stop being read; a well-behaved client with small
/// requests goes on meanwhile, and once the stalled ones go, large requests
/// are served again.
#[test]
fn stalled_large_requests_are_held_to_the_request_memory_cap() {
    const CAP_MIB: u64 = 128;
    let config_dir = tempfile::tempdir().unwrap();
    let config_path = config_dir.path().join("weir.toml");
    std::fs::write(
        &config_path,
        format!("queued_request_bytes_max = {}\n", CAP_MIB << 20),
    )
    .unwrap();
    let broker = Broker::start(&["--config", config_path.to_str().unwrap()]);
    create_topic(&broker, "bystander", 1, &[]);
    let rss_before_kib = broker.rss_kib();

    const CLAIM_BYTES: usize = 90 << 20;
    const SENT_BYTES: usize = 45 << 20;
    let stalled: Vec<_> = (0..8)
        .map(|_| {
            let stream = TcpStream::connect(broker.addr).expect("connect");
            let writer = stream.try_clone().expect("clone");
            let thread = std::thread::spawn(move || {
                let mut writer = writer;
                let mut head = (CLAIM_BYTES as i32).to_be_bytes().to_vec();
                head.extend_from_slice(&header(0, 9, 1));
                let _ = writer.write_all(&head);
                let chunk = vec![0x5au8; 1 << 20];
                let mut sent = 0;
                // Blocks once the broker stops reading this connection; ends
                // with an error when the test shuts the socket.
                while sent < SENT_BYTES {
                    if writer.write_all(&chunk).is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
            });
            (stream, thread)
        })
        .collect();
    // Let the broker take in what it will.
    std::thread::sleep(Duration::from_secs(3));
    let rss_stalled_kib = broker.rss_kib();
    let grown_mib = rss_stalled_kib.saturating_sub(rss_before_kib) / 1024;
    assert!(
        grown_mib < CAP_MIB + 64,
        "RSS grew by {grown_mib} MiB with stalled large requests (cap {CAP_MIB} MiB)"
    );

    // A small-request client is not held up by the stalled ones.
    let acks = Arc::new(Acks::default());
    let producer: ThreadedProducer<AckContext> = broker
        .client_config()
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .create_with_context(AckContext(acks.clone()))
        .expect("producer");
    for i in 0..100 {
        producer
            .send(
                BaseRecord::<(), str, Box<usize>>::with_opaque_to("bystander", Box::new(i))
                    .payload("small"),
            )
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(20)).expect("flush");
    assert_eq!(acks.placed.lock().unwrap().len(), 100);
    assert!(acks.failed.lock().unwrap().is_empty());

    // The stalled connections go; their memory comes back, and a large
    // (900 KiB) request is read and answered again.
    for (stream, _) in &stalled {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    for (_, thread) in stalled {
        let _ = thread.join();
    }
    let reply = exchange(&broker, &produce_frame("bystander", batch(900 << 10)))
        .expect("a produce after the stall is answered");
    assert!(!reply.is_empty());
}

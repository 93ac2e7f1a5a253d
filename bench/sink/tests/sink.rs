//! weir-sink against librdkafka: records are acknowledged with dense offsets
//! per partition, fetched back from the kept template with dense offsets, and
//! a hostile frame closes only its own connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

const RECORDS: usize = 20_000;
const PARTITIONS: i32 = 3;

struct Sink {
    child: Child,
    addr: String,
}

impl Sink {
    fn start() -> Sink {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir-sink"))
            .args(["--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir-sink");
        let stderr = child.stderr.take().expect("sink stderr");
        let mut line = String::new();
        BufReader::new(stderr)
            .read_line(&mut line)
            .expect("read sink banner");
        let addr = line
            .trim()
            .strip_prefix("weir-sink: listening on ")
            .unwrap_or_else(|| panic!("unexpected banner: {line:?}"))
            .to_owned();
        Sink { child, addr }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Deliveries {
    /// (partition, offset) of every acknowledged record; errors as text.
    acked: Mutex<Vec<(i32, i64)>>,
    errors: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => self.acked.lock().unwrap().push((m.partition(), m.offset())),
            Err((e, _)) => self.errors.lock().unwrap().push(e.to_string()),
        }
    }
}

fn create_topic(addr: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .expect("create topics");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

/// Sends `RECORDS` 100-byte records round robin over the partitions of `topic`
/// and returns every acknowledged (partition, offset), sorted.
fn produce_all(addr: &str, topic: &str) -> Vec<(i32, i64)> {
    create_topic(addr, topic, PARTITIONS);
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("enable.idempotence", "false")
        .create_with_context(Deliveries::default())
        .expect("producer");
    let value = [b'x'; 100];
    for i in 0..RECORDS {
        let partition = (i % PARTITIONS as usize) as i32;
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .payload(&value[..])
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let context = producer.context();
    assert_eq!(*context.errors.lock().unwrap(), Vec::<String>::new());
    let mut acked = context.acked.lock().unwrap().clone();
    acked.sort_unstable();
    acked
}

#[test]
fn acks_every_record_with_dense_offsets_per_partition() {
    let sink = Sink::start();
    let acked = produce_all(&sink.addr, "t");
    assert_eq!(acked.len(), RECORDS);
    for p in 0..PARTITIONS {
        let offsets: Vec<i64> = acked.iter().filter(|a| a.0 == p).map(|a| a.1).collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "partition {p}");
    }
}

#[test]
fn fetch_serves_what_was_produced_with_dense_offsets() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let sink = Sink::start();
    let acked = produce_all(&sink.addr, "c");
    assert_eq!(acked.len(), RECORDS);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &sink.addr)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut ends = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks("c", p, Duration::from_secs(10))
            .expect("watermarks");
        let produced = acked.iter().filter(|a| a.0 == p).count() as i64;
        // The end is whole copies of the first batch: never past what was
        // produced, and not empty.
        assert_eq!(low, 0);
        assert!(
            high > 0 && high <= produced,
            "partition {p}: end {high} of {produced}"
        );
        ends.push(high);
        assignment
            .add_partition_offset("c", p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen: Vec<Vec<i64>> = vec![Vec::new(); PARTITIONS as usize];
    let total: i64 = ends.iter().sum();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.iter().map(|s| s.len() as i64).sum::<i64>() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "consumed {seen:?} of {ends:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("a fetched record");
        assert_eq!(m.payload(), Some(&[b'x'; 100][..]));
        seen[m.partition() as usize].push(m.offset());
    }
    for (p, offsets) in seen.iter().enumerate() {
        let expected: Vec<i64> = (0..ends[p]).collect();
        assert_eq!(offsets, &expected, "partition {p}");
    }
}

#[test]
fn hostile_frame_closes_only_its_connection() {
    let sink = Sink::start();
    // A frame that claims 2 GiB: refused before anything is allocated.
    let mut bad = TcpStream::connect(&sink.addr).expect("connect");
    bad.write_all(&i32::MAX.to_be_bytes()).expect("write");
    bad.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut rest = Vec::new();
    let read = bad
        .read_to_end(&mut rest)
        .expect("the sink closes the connection");
    assert_eq!(read, 0);
    // A request it does not serve (DeleteTopics v1) closes its connection too.
    let mut unknown = TcpStream::connect(&sink.addr).expect("connect");
    let mut frame = Vec::new();
    frame.extend_from_slice(&20_i16.to_be_bytes()); // api key
    frame.extend_from_slice(&1_i16.to_be_bytes()); // version
    frame.extend_from_slice(&7_i32.to_be_bytes()); // correlation id
    frame.extend_from_slice(&(-1_i16).to_be_bytes()); // null client id
    frame.extend_from_slice(&0_i32.to_be_bytes()); // no topics
    frame.extend_from_slice(&1000_i32.to_be_bytes()); // timeout
    unknown
        .write_all(&(frame.len() as i32).to_be_bytes())
        .and_then(|()| unknown.write_all(&frame))
        .expect("write");
    unknown
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut rest = Vec::new();
    assert_eq!(unknown.read_to_end(&mut rest).expect("closed"), 0);
    // The sink still serves everyone else.
    create_topic(&sink.addr, "after", 1);
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &sink.addr)
        .set("enable.idempotence", "false")
        .create_with_context(Deliveries::default())
        .expect("producer");
    producer
        .send(BaseRecord::<(), _>::to("after").payload("still here"))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(*producer.context().acked.lock().unwrap(), vec![(0, 0)]);
}

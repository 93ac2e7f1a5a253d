//! The data directory belongs to one process and one node, and recovery never
//! deletes intact data: a second broker on a directory in use, or a broker
//! started under another node id, refuses to start with a message that says
//! why; a damaged segment in the middle of a log stops the partition there and
//! keeps every later segment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use std::sync::Arc;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ThreadedProducer};

use super::harness::{Broker, create_topic};
use super::rdkafka_roundtrip::{AckContext, Acks, consume_all, produce_all};

/// Produces `count` 200-byte records in batches of at most ~4 KiB, so that
/// small segments roll often (a batch is never split across segments).
fn produce_small_batches(broker: &Broker, topic: &str, count: usize) -> Arc<Acks> {
    let acks = Arc::new(Acks::default());
    let producer: ThreadedProducer<AckContext> = broker
        .client_config()
        .set("acks", "all")
        .set("batch.size", "4096")
        .set("linger.ms", "1")
        .create_with_context(AckContext(acks.clone()))
        .expect("producer");
    let value = "v".repeat(200);
    for i in 0..count {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(i)).payload(value.as_str());
        loop {
            match producer.send::<(), str>(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    acks
}

/// Runs `weir serve` on `data_dir` with extra flags; it is expected to refuse
/// at once. Killed after 20 s so a broker that wrongly starts fails the test
/// instead of hanging it.
fn serve_expecting_refusal(data_dir: &Path, extra: &[&str]) -> Output {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .env("WEIR_HTTP_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir serve");
    for _ in 0..200 {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    panic!(
        "a second weir serve on {} did not refuse to start; its log:\n{}",
        data_dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn produce_one(broker: &Broker, topic: &str, value: &str) -> Result<(), String> {
    let producer: BaseProducer = broker
        .client_config()
        .set("acks", "all")
        .set("message.timeout.ms", "5000")
        .create()
        .expect("producer");
    producer
        .send(BaseRecord::<(), str>::to(topic).payload(value))
        .map_err(|(e, _)| e.to_string())?;
    producer
        .flush(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    // A failed delivery is only seen through the delivery callback; BaseProducer
    // without a context drops it, so check the partition's end offset instead
    // (the callers do).
    Ok(())
}

#[test]
fn second_broker_on_a_data_dir_in_use_refuses_and_names_the_holder() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "locked", 1, &[]);
    let acks = produce_all(&broker, "locked", "none", 100);
    assert!(acks.failed.lock().unwrap().is_empty());

    let refused = serve_expecting_refusal(&broker.data_dir, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "must exit non-zero: {stderr}");
    assert!(
        stderr.contains(&broker.data_dir.display().to_string()),
        "names the directory: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", broker.pid())),
        "names the holder's pid {}: {stderr}",
        broker.pid()
    );

    // The first broker is unharmed: its data is all there and it takes more.
    assert_eq!(consume_all(&broker, "locked", 1, 100).len(), 100);
    let more = produce_all(&broker, "locked", "none", 10);
    assert!(more.failed.lock().unwrap().is_empty());
    assert_eq!(consume_all(&broker, "locked", 1, 110).len(), 110);
}

#[test]
fn data_dir_written_as_node_1_refuses_to_start_as_node_7() {
    let mut broker = Broker::start(&["--node-id", "1"]);
    create_topic(&broker, "owned", 1, &[]);
    let acks = produce_all(&broker, "owned", "none", 50);
    assert!(acks.failed.lock().unwrap().is_empty());
    assert!(broker.stop());
    let properties =
        std::fs::read_to_string(broker.data_dir.join("meta.properties")).expect("meta.properties");
    assert!(properties.contains("node.id=1"), "{properties}");
    assert!(properties.contains("cluster.id="), "{properties}");

    let refused = serve_expecting_refusal(&broker.data_dir, &["--node-id", "7"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "must exit non-zero: {stderr}");
    assert!(
        stderr.contains("node 1") && stderr.contains("node 7"),
        "says which node the directory belongs to: {stderr}"
    );

    broker.restart();
    assert_eq!(consume_all(&broker, "owned", 1, 50).len(), 50);
}

/// A segment's base offset, from its file name.
fn base_offset_of(segment: &Path) -> i64 {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{} is not a segment file", segment.display()))
}

fn segment_files(partition_dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(partition_dir)
        .expect("partition dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn damaged_middle_segment_stops_the_partition_there_and_keeps_later_segments() {
    let mut broker = Broker::start(&[]);
    // Small segments so that 3,000 records span many of them.
    create_topic(&broker, "damaged", 1, &[("segment.bytes", "16384")]);
    let acks = produce_small_batches(&broker, "damaged", 3_000);
    assert!(acks.failed.lock().unwrap().is_empty());
    assert!(broker.stop());

    let partition_dir = broker.data_dir.join("damaged-0");
    let logs = segment_files(&partition_dir);
    assert!(
        logs.len() >= 6,
        "expected many segments, got {}",
        logs.len()
    );
    // Flip a byte in the middle of the third segment and lose its index, which
    // forces the recovery scan that finds the damage.
    let damaged = logs[2].clone();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&damaged, &bytes).unwrap();
    std::fs::remove_file(damaged.with_extension("index")).unwrap();
    let later: Vec<(PathBuf, Vec<u8>)> = logs[3..]
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    let damaged_base = base_offset_of(&damaged);
    let next_base = base_offset_of(&logs[3]);

    broker.restart();
    let log = broker.log();
    assert!(log.contains("DATA DAMAGE"), "logged loudly:\n{log}");
    assert!(
        log.contains(&damaged.display().to_string()),
        "names the segment:\n{log}"
    );

    // Served densely from 0 up to the damage, inside the damaged segment.
    let seen = consume_all(&broker, "damaged", 1, 0);
    let served = seen.len() as i64;
    assert!(
        served > damaged_base && served < next_base,
        "served {served} records; damaged segment holds {damaged_base}..{next_base}"
    );
    for (i, (_, offset, _)) in seen.iter().enumerate() {
        assert_eq!(*offset, i as i64);
    }
    // Writes are refused; the partition does not grow.
    let _ = produce_one(&broker, "damaged", "after the damage");
    assert_eq!(consume_all(&broker, "damaged", 1, 0).len() as i64, served);

    // Every later segment is still on disk, byte for byte, also after a
    // clean stop.
    assert!(broker.stop());
    for (path, content) in &later {
        assert_eq!(
            &std::fs::read(path).unwrap_or_default(),
            content,
            "{} must be kept",
            path.display()
        );
    }
}

/// A node whose metadata log can no longer be written (here its directory is gone; in
/// the soak, a full disk) halts with EX_IOERR, as Kafka halts a node whose metadata log
/// directory failed, instead of staying up as a quorum member that refuses every vote
/// until someone restarts it. Restarted on a working directory, it serves again.
#[test]
fn broker_halts_when_its_metadata_log_cannot_be_written_and_serves_after_restart() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let mut broker = Broker::start(&[]);
    create_topic(&broker, "before", 1, &[]);
    let metadata_dir = broker.data_dir.join("metadata");
    std::fs::rename(&metadata_dir, broker.data_dir.join("metadata-moved-away")).unwrap();

    // A decision the controller must write: committing it fails on this node.
    let admin: AdminClient<DefaultClientContext> =
        broker.client_config().create().expect("admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let topic = NewTopic::new("after", 1, TopicReplication::Fixed(1));
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let _ = runtime.block_on(admin.create_topics([&topic], &options));

    let status = broker
        .wait_for_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running; log:\n{}", broker.log()));
    assert_eq!(status.code(), Some(74), "log:\n{}", broker.log());
    assert!(
        broker.log().contains("the metadata log cannot be written"),
        "says why: {}",
        broker.log()
    );

    // The disk works again: the node restarts with what it had and serves.
    std::fs::rename(broker.data_dir.join("metadata-moved-away"), &metadata_dir).unwrap();
    broker.restart();
    create_topic(&broker, "after-restart", 1, &[]);
    assert!(
        produce_all(&broker, "after-restart", "none", 10)
            .failed
            .lock()
            .unwrap()
            .is_empty()
    );
}

//! The operations HTTP listener of a real `weir serve`: health through
//! startup and shutdown, and `/metrics` after a known librdkafka workload.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::harness::{Broker, create_topic, free_port};

/// A bare HTTP/1.1 GET: (status, body). `None` when nothing accepts the connection.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "responses carry a length: {head}"
    );
    Some((status, body.to_string()))
}

/// Polls `path` until `check` accepts the answer; panics with the last one after `timeout`.
fn wait_for_answer(
    addr: &str,
    path: &str,
    timeout: Duration,
    mut check: impl FnMut(Option<&(u16, String)>) -> bool,
) -> Option<(u16, String)> {
    let started = Instant::now();
    loop {
        let answer = http_get(addr, path);
        if check(answer.as_ref()) {
            return answer;
        }
        assert!(
            started.elapsed() < timeout,
            "{path} never gave the expected answer; last: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ready_follows_registration_and_shutdown_while_live_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let controller: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let voters = format!("1@{},2@{}", controller[0], controller[1]);
    let http: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let launch = |id: usize| {
        let dir = tmp.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let id_arg = id.to_string();
        Broker::launch_in(
            dir.join("data"),
            dir.join("broker.log"),
            &[
                "--node-id",
                id_arg.as_str(),
                "--controller-voters",
                voters.as_str(),
                "--http-listen",
                http[id - 1].as_str(),
            ],
            &[],
        )
    };
    // Alone, node 1 has recovered its logs but no quorum will register it: live, not ready.
    let mut first = launch(1);
    let (status, body) = wait_for_answer(&http[0], "/health/live", Duration::from_secs(30), |a| {
        a.is_some()
    })
    .expect("live answers");
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = http_get(&http[0], "/health/ready").expect("ready answers");
    assert_eq!(status, 503, "not ready without a quorum: {body}");
    let reason: serde_json::Value = serde_json::from_str(&body).expect("JSON reason");
    assert_eq!(reason["status"], "not ready", "{body}");
    assert!(
        reason["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    // With a second voter the quorum forms, both register and are unfenced: ready.
    let mut second = launch(2);
    for addr in &http {
        wait_for_answer(addr, "/health/ready", Duration::from_secs(60), |a| {
            a.is_some_and(|(status, _)| *status == 200)
        });
    }
    first.wait_until_listening();
    // Node 1 loses its quorum, then is asked to stop: its controlled shutdown waits for a
    // controller that can't answer, and meanwhile it must say it is not ready, yet live.
    second.kill9();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(first.pid().to_string())
        .status();
    let (_, body) = wait_for_answer(&http[0], "/health/ready", Duration::from_secs(5), |a| {
        a.is_some_and(|(status, _)| *status == 503)
    })
    .expect("ready answers while stopping");
    assert!(body.contains("shutting down"), "{body}");
    let (status, _) = http_get(&http[0], "/health/live").expect("live while stopping");
    assert_eq!(status, 200);
    // Once stopped, nothing answers.
    assert!(first.stop(), "clean exit; log:\n{}", first.log());
    assert!(http_get(&http[0], "/health/live").is_none());
}

/// One sample of an exposition: `name{labels} value` lines, labels as given.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            (
                series.to_string(),
                value.parse::<f64>().expect("numeric value"),
            )
        })
        .collect()
}

#[test]
fn metrics_count_a_known_workload() {
    const RECORDS: usize = 500;
    const VALUE_BYTES: usize = 100;
    const COMMITTED: i64 = 320;
    let http = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start(&[
        "--http-listen",
        &http,
        "--group-initial-rebalance-delay-ms",
        "0",
    ]);
    create_topic(&broker, "metered", 1, &[]);

    let producer: BaseProducer = broker
        .client_config()
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let value = vec![b'v'; VALUE_BYTES];
    for i in 0..RECORDS {
        let key = format!("k{i}");
        producer
            .send(BaseRecord::to("metered").key(&key).payload(&value))
            .expect("enqueue");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    // A group member reads part of the topic and commits at COMMITTED.
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "metered-group")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["metered"]).expect("subscribe");
    let mut read = 0;
    let started = Instant::now();
    while read < COMMITTED {
        assert!(started.elapsed() < Duration::from_secs(60), "read {read}");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("message");
            assert_eq!(message.payload().map(<[u8]>::len), Some(VALUE_BYTES));
            read += 1;
        }
    }
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("metered", 0, Offset::Offset(COMMITTED))
        .expect("offset");
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");

    let (status, text) = http_get(&http, "/metrics").expect("metrics answer");
    assert_eq!(status, 200, "{text}");
    let samples = samples(&text);
    let get = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        get(r#"weir_topic_records_in_total{topic="metered"}"#),
        RECORDS as f64
    );
    let bytes_in = get(r#"weir_topic_bytes_in_total{topic="metered"}"#);
    // Record batches carry each value plus framing: at least the values, and exactly
    // what the log holds, since nothing else wrote to it.
    assert!(bytes_in >= (RECORDS * VALUE_BYTES) as f64, "{bytes_in}");
    assert_eq!(
        bytes_in,
        get(r#"weir_partition_log_size_bytes{topic="metered",partition="0"}"#)
    );
    assert_eq!(
        get(r#"weir_partition_high_watermark{topic="metered",partition="0"}"#),
        RECORDS as f64
    );
    assert_eq!(
        get(r#"weir_group_lag_offsets{group="metered-group",topic="metered",partition="0"}"#),
        (RECORDS as i64 - COMMITTED) as f64
    );
    assert_eq!(get(r#"weir_group_members{group="metered-group"}"#), 1.0);
    assert_eq!(
        get(r#"weir_group_state{group="metered-group",state="Stable"}"#),
        1.0
    );
    assert!(
        get(r#"weir_topic_bytes_out_total{topic="metered"}"#)
            >= (COMMITTED as usize * VALUE_BYTES) as f64
    );
    // Every Produce request was counted under its version, and timed.
    let produce_requests: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with(r#"weir_requests_total{api="Produce","#))
        .map(|(_, v)| v)
        .sum();
    let produce_timed: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with(r#"weir_request_duration_seconds_count{api="Produce","#))
        .map(|(_, v)| v)
        .sum();
    assert!(produce_requests >= 1.0, "{text}");
    assert_eq!(produce_requests, produce_timed);
    // Every acks=all produce waited for a group-commit sync: each sync was timed,
    // and together the syncs acknowledged at least those produces.
    let syncs = get("weir_log_sync_duration_seconds_count");
    assert!(syncs >= 1.0, "{text}");
    assert_eq!(syncs, get("weir_log_sync_batch_appends_count"));
    assert!(
        get("weir_log_sync_batch_appends_sum") >= produce_requests,
        "{text}"
    );
    assert!(
        get(r#"weir_log_sync_duration_seconds_bucket{le="+Inf"}"#) == syncs,
        "{text}"
    );
    assert_eq!(get("weir_log_sync_failures_total"), 0.0);
    // Every answered produce was also timed step by step.
    let traced = get(r#"weir_produce_step_duration_seconds_count{step="total"}"#);
    assert_eq!(traced, produce_requests, "{text}");
    for step in [
        "read",
        "decode",
        "handle",
        "validate",
        "append",
        "sync_wait",
        "sync",
        "replicate",
        "respond",
    ] {
        let series = format!(r#"weir_produce_step_duration_seconds_count{{step="{step}"}}"#);
        assert_eq!(get(&series), traced, "{series}");
    }
    // acks=all with fsync: each produce waited for a sync that took time.
    assert!(get(r#"weir_produce_step_duration_seconds_sum{step="sync"}"#) > 0.0);
    assert!(
        get(r#"weir_produce_step_duration_seconds_sum{step="total"}"#)
            >= get(r#"weir_produce_step_duration_seconds_sum{step="sync_wait"}"#),
        "{text}"
    );
    assert!(get("weir_connections_open") >= 2.0);
    assert!(get("weir_connections_accepted_total") >= 2.0);
    assert_eq!(get("weir_metrics_partition_series_dropped"), 0.0);
    drop(consumer);

    // Errors by API and code: creating the topic again is refused twice with
    // TOPIC_ALREADY_EXISTS, and that is all that fails meanwhile. (The workload
    // above has its protocol's own errors, such as JoinGroup's MEMBER_ID_REQUIRED.)
    let errors_total = |samples: &HashMap<String, f64>| -> f64 {
        samples
            .iter()
            .filter(|(k, _)| k.starts_with("weir_response_errors_total{"))
            .map(|(_, v)| v)
            .sum()
    };
    let errors_before = errors_total(&samples);
    assert_eq!(
        samples.get(r#"weir_response_errors_total{api="JoinGroup",error="MEMBER_ID_REQUIRED"}"#),
        Some(&1.0),
        "librdkafka's first JoinGroup is answered MEMBER_ID_REQUIRED (KIP-394): {text}"
    );
    assert!(
        !samples
            .keys()
            .any(|k| k.starts_with(r#"weir_response_errors_total{api="CreateTopics""#)),
        "{text}"
    );
    for _ in 0..2 {
        let outcome = create_topic_outcome(&broker, "metered");
        assert_eq!(
            outcome,
            Err(rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)
        );
    }
    let (_, text) = http_get(&http, "/metrics").expect("metrics answer");
    let samples = self::samples(&text);
    assert_eq!(
        samples
            .get(r#"weir_response_errors_total{api="CreateTopics",error="TOPIC_ALREADY_EXISTS"}"#),
        Some(&2.0),
        "{text}"
    );
    assert_eq!(errors_total(&samples), errors_before + 2.0, "{text}");
}

/// CreateTopics for `name` (one partition) through librdkafka's admin client: its outcome.
fn create_topic_outcome(
    broker: &Broker,
    name: &str,
) -> Result<(), rdkafka::types::RDKafkaErrorCode> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        broker.client_config().create().expect("admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let topic = NewTopic::new(name, -1, TopicReplication::Fixed(-1));
    let mut results = runtime
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create_topics request");
    results
        .pop()
        .expect("one result")
        .map(|_| ())
        .map_err(|(_, e)| e)
}

/// Every config key can be set from the file, a `WEIR_*` variable and a flag; a
/// flag beats a variable, which beats the file. The startup dump says where each
/// value came from, `/v1/config` too, and the broker behaves by the winner.
#[test]
fn config_keys_come_from_file_env_and_flags_in_that_precedence() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("weir.toml");
    std::fs::write(
        &file,
        "default_partitions = 2\nmetrics_partition_series_max = 1\ngroup_max_size = 7\n\
         [topic_defaults]\n\"retention.ms\" = 3600000\n",
    )
    .expect("config file");
    let http = format!("127.0.0.1:{}", free_port());
    let file_arg = file.to_str().expect("utf-8 path");
    let broker = Broker::start_in(
        tmp.path().join("data"),
        tmp.path().join("broker.log"),
        &[
            "--config",
            file_arg,
            "--http-listen",
            &http,
            // Conflicts with the variable and the file below: the flag wins.
            "--metrics-partition-series-max",
            "3",
            // Settable only in TOML before.
            "--in-flight-requests-max",
            "32",
        ],
        &[
            ("WEIR_METRICS_PARTITION_SERIES_MAX", "2"),
            // Beats the file's 2.
            ("WEIR_DEFAULT_PARTITIONS", "4"),
            ("WEIR_OFFSET_METADATA_BYTES_MAX", "100"),
        ],
    );
    let log = broker.log();
    for line in [
        "default_partitions = 4  # env",
        "metrics_partition_series_max = 3  # flag",
        "in_flight_requests_max = 32  # flag",
        "offset_metadata_bytes_max = 100  # env",
        "group_max_size = 7  # file",
        "connections_max = 10000  # default",
        "\"retention.ms\" = \"3600000\"  # file",
        "# rack: not set  # default",
    ] {
        assert!(log.contains(line), "dump lacks {line:?}:\n{log}");
    }
    // Behaviour: a topic created with the broker's default partition count has the
    // variable's count; the flag's series cap holds.
    assert_eq!(create_topic_outcome(&broker, "defaulted"), Ok(()));
    let (status, body) = http_get(&http, "/v1/topics/defaulted").expect("topic answer");
    assert_eq!(status, 200, "{body}");
    let topic: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        topic["partitions"].as_array().map(Vec::len),
        Some(4),
        "{body}"
    );
    let (_, text) = http_get(&http, "/metrics").expect("metrics answer");
    let shown = samples(&text)
        .keys()
        .filter(|k| k.starts_with("weir_partition_log_end_offset{"))
        .count();
    assert_eq!(shown, 3, "{text}");
    // The admin API reports the same values and sources.
    let (_, body) = http_get(&http, "/v1/config").expect("config answer");
    let config: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let entry = |name: &str| {
        config["entries"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    };
    assert_eq!(
        entry("default_partitions"),
        serde_json::json!({"name": "default_partitions", "value": 4, "source": "env"})
    );
    assert_eq!(entry("in_flight_requests_max")["source"], "flag");
    assert_eq!(entry("group_max_size")["source"], "file");
    assert_eq!(entry("topic_defaults.retention.ms")["source"], "file");
    assert_eq!(entry("connections_max")["source"], "default");
}

/// A bad value is refused at start, naming where it came from.
#[test]
fn a_bad_config_value_names_its_source() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log_path = tmp.path().join("broker.log");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "serve",
            "--listen",
            &listen,
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .env("WEIR_IN_FLIGHT_REQUESTS_MAX", "many")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("run weir serve");
    // A broker that ignored the variable would serve instead of exiting: bounded wait.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir serve started despite WEIR_IN_FLIGHT_REQUESTS_MAX=many");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let stderr = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        stderr.contains("WEIR_IN_FLIGHT_REQUESTS_MAX=many"),
        "{stderr}"
    );
}

#[test]
fn per_partition_series_stop_at_the_cap() {
    let http = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start(&[
        "--http-listen",
        &http,
        "--metrics-partition-series-max",
        "3",
    ]);
    create_topic(&broker, "wide", 5, &[]);
    let (_, text) = http_get(&http, "/metrics").expect("metrics answer");
    let samples = samples(&text);
    let shown = samples
        .keys()
        .filter(|k| k.starts_with("weir_partition_log_end_offset{"))
        .count();
    assert_eq!(shown, 3, "{text}");
    // Internal topics (sorted first) may hold partitions too: at least wide's last two drop.
    assert!(
        samples["weir_metrics_partition_series_dropped"] >= 2.0,
        "{text}"
    );
}

#[test]
fn log_events_are_timed_on_metrics() {
    const RECORDS: usize = 200;
    let http = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start(&["--http-listen", &http]);
    // 1 KiB records in 16 KiB segments: a roll every dozen or so records.
    create_topic(&broker, "rolling", 1, &[("segment.bytes", "16384")]);
    let producer: BaseProducer = broker
        .client_config()
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let value = vec![b'r'; 1024];
    for _ in 0..RECORDS {
        producer
            .send(BaseRecord::<(), _>::to("rolling").payload(&value))
            .expect("enqueue");
        // One record per request: librdkafka would batch them past a segment's size at once.
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let (status, text) = http_get(&http, "/metrics").expect("metrics answer");
    assert_eq!(status, 200, "{text}");
    let samples = samples(&text);
    let get = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let rolls = get(r#"weir_log_event_duration_seconds_count{event="roll"}"#);
    assert!(rolls >= 5.0, "{text}");
    // Each roll seals its segment's index files.
    assert_eq!(
        get(r#"weir_log_event_duration_seconds_count{event="index_write"}"#),
        rolls
    );
    // A sealed segment synced is a recovery point due.
    assert!(get(r#"weir_log_event_duration_seconds_count{event="recovery_point"}"#) >= 1.0);
    assert!(get(r#"weir_log_event_duration_seconds_count{event="checkpoint"}"#) >= 1.0);
    assert_eq!(
        get(r#"weir_log_event_duration_seconds_count{event="retention_delete"}"#),
        0.0
    );
}

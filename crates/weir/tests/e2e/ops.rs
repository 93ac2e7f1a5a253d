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
    assert!(get("weir_connections_open") >= 2.0);
    assert!(get("weir_connections_accepted_total") >= 2.0);
    assert_eq!(get("weir_metrics_partition_series_dropped"), 0.0);
    drop(consumer);
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

//! End-to-end tests of the client subcommands: a real `weir serve` process
//! on a free port, driven by the `weir` binary's own `topic`, `produce`,
//! `consume` and `cluster` commands.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

struct Broker {
    child: Child,
    bootstrap: String,
    _data_dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let bootstrap = format!("127.0.0.1:{port}");
        let child = Command::new(WEIR)
            .args(["serve", "--data-dir"])
            .arg(data_dir.path())
            .args(["--listen", &bootstrap])
            .env_remove("WEIR_BOOTSTRAP")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weir serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&bootstrap).is_err() {
            assert!(
                Instant::now() < deadline,
                "weir serve did not listen on {bootstrap}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker {
            child,
            bootstrap,
            _data_dir: data_dir,
        }
    }

    /// Runs `weir ARGS --bootstrap ADDR` with `stdin` as input.
    fn weir(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(WEIR)
            .args(args)
            .args(["--bootstrap", &self.bootstrap])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("wait weir")
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.weir(args, stdin);
        assert!(
            out.status.success(),
            "weir {args:?} failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs a command that must fail and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.weir(args, "");
        assert!(
            !out.status.success(),
            "weir {args:?} unexpectedly succeeded"
        );
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn topic_lifecycle_create_list_describe_alter_grow_delete() {
    let broker = Broker::start();
    broker.ok(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=60000",
        ],
        "",
    );
    assert!(lines(&broker.ok(&["topic", "list"], "")).contains(&"orders"));

    let described = broker.ok(&["topic", "describe", "orders"], "");
    assert!(described.contains("partitions: 2"), "{described}");
    assert!(described.contains("partition 1  leader"), "{described}");
    assert!(described.contains("retention.ms=60000"), "{described}");

    broker.ok(
        &[
            "topic",
            "alter",
            "orders",
            "--config",
            "retention.ms=120000",
        ],
        "",
    );
    assert!(
        broker
            .ok(&["topic", "describe", "orders"], "")
            .contains("retention.ms=120000")
    );
    broker.ok(
        &[
            "topic",
            "alter",
            "orders",
            "--delete-config",
            "retention.ms",
        ],
        "",
    );
    assert!(
        !broker
            .ok(&["topic", "describe", "orders"], "")
            .contains("retention.ms=120000")
    );

    broker.ok(&["topic", "add-partitions", "orders", "--count", "4"], "");
    assert!(
        broker
            .ok(&["topic", "describe", "orders"], "")
            .contains("partitions: 4")
    );

    broker.ok(&["topic", "delete", "orders"], "");
    assert!(!lines(&broker.ok(&["topic", "list"], "")).contains(&"orders"));
}

#[test]
fn creating_an_existing_topic_names_the_kafka_error() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "dup", "--partitions", "1"], "");
    let stderr = broker.fails(&["topic", "create", "dup", "--partitions", "1"]);
    assert!(stderr.contains("TOPIC_ALREADY_EXISTS"), "{stderr}");
}

#[test]
fn produced_lines_come_back_in_order_with_keys_and_headers() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "events", "--partitions", "1"], "");
    let out = broker.weir(
        &[
            "produce",
            "events",
            "--key-separator",
            ":",
            "--header",
            "src=test",
            "--compression",
            "zstd",
        ],
        "k1:one\nk2:two\nthree\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("records/s"));

    let consumed = broker.ok(
        &[
            "consume",
            "events",
            "--print-offsets",
            "--print-key",
            "--print-headers",
        ],
        "",
    );
    assert_eq!(
        lines(&consumed),
        vec![
            "0:0\tk1\tsrc=test\tone",
            "0:1\tk2\tsrc=test\ttwo",
            "0:2\t\tsrc=test\tthree"
        ]
    );
}

#[test]
fn consume_start_positions_and_count() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "nums", "--partitions", "1"], "");
    let input: String = (0..100).map(|i| format!("{i}\n")).collect();
    broker.ok(
        &["produce", "nums", "--acks", "1", "--compression", "lz4"],
        &input,
    );

    assert_eq!(lines(&broker.ok(&["consume", "nums"], "")).len(), 100);
    assert_eq!(
        lines(&broker.ok(&["consume", "nums", "--from", "offset:95"], "")),
        vec!["95", "96", "97", "98", "99"]
    );
    assert_eq!(
        lines(&broker.ok(
            &["consume", "nums", "--from", "offset:10", "--count", "3"],
            ""
        )),
        vec!["10", "11", "12"]
    );
    assert!(
        broker
            .ok(&["consume", "nums", "--from", "end"], "")
            .is_empty()
    );
    assert_eq!(
        lines(&broker.ok(
            &["consume", "nums", "--from", "timestamp:0", "--count", "1"],
            ""
        )),
        vec!["0"]
    );
}

#[test]
fn records_spread_over_partitions_are_all_consumed() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "spread", "--partitions", "3"], "");
    let input: String = (0..300).map(|i| format!("key{i}|value{i}\n")).collect();
    broker.ok(&["produce", "spread", "--key-separator", "|"], &input);
    let consumed = broker.ok(&["consume", "spread"], "");
    let mut values: Vec<&str> = lines(&consumed);
    values.sort_unstable();
    let mut expected: Vec<String> = (0..300).map(|i| format!("value{i}")).collect();
    expected.sort_unstable();
    assert_eq!(values, expected);
    let only_p0 = broker.ok(&["consume", "spread", "--partition", "0"], "");
    assert!(!only_p0.is_empty() && lines(&only_p0).len() < 300);
}

#[test]
fn cluster_info_reports_one_broker_and_the_topic_count() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "a", "--partitions", "1"], "");
    let info = broker.ok(&["cluster", "info"], "");
    assert!(info.contains("brokers: 1"), "{info}");
    assert!(info.contains(&broker.bootstrap), "{info}");
    let topic_count: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("topics: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no topic count in {info}"));
    assert!(topic_count >= 1, "{info}");
}

#[test]
fn unreachable_broker_error_says_to_start_weir_serve() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = Command::new(WEIR)
        .args(["topic", "list", "--bootstrap", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run weir");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("weir serve"), "{stderr}");
}

#[test]
fn consuming_a_missing_topic_fails_with_a_hint() {
    let broker = Broker::start();
    let stderr = broker.fails(&["consume", "missing-topic"]);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

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
    data_dir: tempfile::TempDir,
}

/// Waits until something listens on `addr`.
fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn_serve(data_dir: &std::path::Path, bootstrap: &str) -> Child {
    let child = Command::new(WEIR)
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", bootstrap])
        .env_remove("WEIR_BOOTSTRAP")
        .env("WEIR_HTTP_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn weir serve");
    wait_listening(bootstrap);
    child
}

impl Broker {
    fn start() -> Broker {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let bootstrap = format!("127.0.0.1:{}", free_port());
        let child = spawn_serve(data_dir.path(), &bootstrap);
        Broker {
            child,
            bootstrap,
            data_dir,
        }
    }

    /// Kills the broker process (its data stays).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same address and data.
    fn restart(&mut self) {
        self.kill();
        self.child = spawn_serve(self.data_dir.path(), &self.bootstrap);
    }

    /// `weir ARGS --bootstrap ADDR` as a command, not yet started.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(WEIR);
        command
            .args(args)
            .args(["--bootstrap", &self.bootstrap])
            .env_remove("WEIR_BOOTSTRAP")
            .env("HOME", self.data_dir.path());
        command
    }

    /// Runs `weir ARGS --bootstrap ADDR` with `stdin` as input.
    fn weir(&self, args: &[&str], stdin: &str) -> Output {
        self.weir_bytes(args, stdin.as_bytes())
    }

    fn weir_bytes(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin).expect("write stdin");
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

    /// Runs a command that must succeed and parses its stdout as JSON.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args, "");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("weir {args:?}: not JSON ({e}): {out}"))
    }
}

/// Waits for a child for at most `limit`; kills it and fails the test if it
/// is still running then.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_all(pipe: Option<impl std::io::Read>) -> String {
    let mut text = String::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_string(&mut text);
    }
    text
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

    broker.ok(&["topic", "add-partitions", "orders", "--total", "3"], "");
    assert!(
        broker
            .ok(&["topic", "describe", "orders"], "")
            .contains("partitions: 3")
    );
    // rpk's -n: how many to add.
    let grown = broker.ok(&["topic", "add-partitions", "orders", "-n", "1"], "");
    assert!(grown.contains("now has 4 partitions (1 added)"), "{grown}");
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
fn cluster_info_shows_the_metadata_quorum_of_a_single_node() {
    let broker = Broker::start();
    let info = broker.ok(&["cluster", "info"], "");
    // A quorum of one: node 1 leads, is the only voter and has no lag.
    assert!(info.contains("quorum: leader 1, epoch "), "{info}");
    let leader_row = info
        .lines()
        .find(|l| l.trim_start().starts_with("leader\t"))
        .unwrap_or_else(|| panic!("no leader row in {info}"));
    let cells: Vec<&str> = leader_row.split_whitespace().collect();
    assert_eq!(cells.first(), Some(&"leader"), "{info}");
    assert_eq!(cells.get(1), Some(&"1"), "{info}");
    assert_eq!(cells.last(), Some(&"0"), "lag of the leader: {info}");
    assert!(!info.contains("fenced brokers"), "{info}");

    let json = broker.json(&["cluster", "info", "--format", "json"]);
    let quorum = &json["quorum"];
    assert_eq!(quorum["leader"], 1, "{json}");
    assert!(
        quorum["leader_epoch"].as_i64().is_some_and(|e| e >= 1),
        "{json}"
    );
    let high_watermark = quorum["high_watermark"].as_i64().expect("high watermark");
    assert!(
        high_watermark >= 1,
        "the broker's registration is committed: {json}"
    );
    let voters = quorum["voters"].as_array().expect("voters");
    assert_eq!(voters.len(), 1, "{json}");
    assert_eq!(voters[0]["id"], 1);
    assert_eq!(voters[0]["lag"], 0);
    assert!(
        voters[0]["log_end_offset"]
            .as_i64()
            .is_some_and(|o| o >= high_watermark)
    );
    assert_eq!(quorum["observers"].as_array().map(Vec::len), Some(0));
    assert_eq!(json["fenced_brokers"].as_array().map(Vec::len), Some(0));
    assert_eq!(json["unregistered_nodes"].as_array().map(Vec::len), Some(0));
}

#[test]
fn cluster_health_of_a_healthy_single_node_exits_zero() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "h", "--partitions", "3"], "");
    let text = broker.ok(&["cluster", "health"], "");
    assert!(text.contains("every partition has a leader"), "{text}");
    assert!(text.contains("metadata quorum leader: 1"), "{text}");
    let json = broker.json(&["cluster", "health", "--format", "json"]);
    assert_eq!(json["healthy"], true, "{json}");
    assert_eq!(json["offline_partitions"].as_array().map(Vec::len), Some(0));
    assert_eq!(json["fenced_brokers"].as_array().map(Vec::len), Some(0));
    assert_eq!(json["quorum_leader"], 1);
    let help = broker.ok(&["cluster", "health", "--help"], "");
    assert!(help.contains("2 when not"), "{help}");
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

/// Every setting's flag in `weir serve --help` says what the setting means (its
/// doc comment on `BrokerConfig`), not only its name and default.
#[test]
fn serve_help_describes_each_setting() {
    let out = Command::new(WEIR)
        .args(["serve", "--help"])
        .output()
        .expect("run weir");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, meaning) in [
        ("--broker-session-timeout-ms", "fences a broker"),
        ("--http-listen", "operations HTTP listener"),
        ("--controller-voters", "quorum's voters"),
    ] {
        // The flag's whole entry: its line and the wrapped text up to the next flag.
        let mut entry = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(flag));
        let first = entry.next().unwrap_or_default();
        let line = std::iter::once(first)
            .chain(entry.take_while(|l| !l.trim_start().starts_with('-')))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(line.contains(meaning), "{flag}: {line:?}\n{help}");
        assert!(line.contains("[default: "), "{flag}: {line:?}");
    }
}

#[test]
fn consuming_a_missing_topic_fails_with_a_hint() {
    let broker = Broker::start();
    let stderr = broker.fails(&["consume", "missing-topic"]);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

// ---- flags and errors (issue 19 item 7) -----------------------------------

#[test]
fn bootstrap_is_global_before_or_after_the_subcommand() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "g1"], "");
    for args in [
        vec!["-b", broker.bootstrap.as_str(), "topic", "list"],
        vec!["--bootstrap", broker.bootstrap.as_str(), "topic", "list"],
        vec!["topic", "-b", broker.bootstrap.as_str(), "list"],
        vec!["topic", "list", "-b", broker.bootstrap.as_str()],
    ] {
        let out = Command::new(WEIR)
            .args(&args)
            .env_remove("WEIR_BOOTSTRAP")
            .output()
            .expect("run weir");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(lines(&stdout).contains(&"g1"), "{args:?}: {stdout}");
    }
}

#[test]
fn a_client_profile_supplies_the_bootstrap_and_unknown_profiles_are_named() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "profiled"], "");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("client.toml");
    std::fs::write(
        &path,
        format!(
            "default_profile = \"dev\"\n[profiles.dev]\nbootstrap = \"{}\"\nrequest_timeout_ms = 5000\n",
            broker.bootstrap
        ),
    )
    .expect("write config");
    let run = |extra: &[&str]| {
        Command::new(WEIR)
            .args(["--client-config"])
            .arg(&path)
            .args(extra)
            .args(["topic", "list"])
            .env_remove("WEIR_BOOTSTRAP")
            .output()
            .expect("run weir")
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("profiled"));
    let out = run(&["--profile", "prod"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no profile 'prod'") && stderr.contains("dev"),
        "{stderr}"
    );
}

fn weir_alone(args: &[&str]) -> Output {
    Command::new(WEIR)
        .args(args)
        .env_remove("WEIR_BOOTSTRAP")
        .output()
        .expect("run weir")
}

#[test]
fn a_bootstrap_without_port_says_what_to_fix() {
    let out = weir_alone(&["topic", "list", "--bootstrap", "localhost"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'localhost' has no port") && stderr.contains("HOST:PORT"),
        "{stderr}"
    );
}

#[test]
fn an_http_port_is_reported_as_not_kafka() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 512];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let out = weir_alone(&["topic", "list", "--bootstrap", &addr]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not speak the Kafka protocol"),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP"), "{stderr}");
    assert!(!stderr.contains("1213486160"), "{stderr}");
}

#[test]
fn a_listener_that_never_answers_fails_in_bounded_time() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    // Accepts and holds connections without a word.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let mut child = Command::new(WEIR)
        .args(["topic", "list", "--bootstrap", &addr])
        .env_remove("WEIR_BOOTSTRAP")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let status = wait_bounded(&mut child, Duration::from_secs(20), "weir topic list");
    assert!(!status.success());
    let stderr = read_all(child.stderr.take());
    assert!(stderr.contains("did not answer ApiVersions"), "{stderr}");
}

#[test]
fn group_list_rejects_unknown_states() {
    let broker = Broker::start();
    let stderr = broker.fails(&["group", "list", "--state", "Sleeping"]);
    assert!(
        stderr.contains("unknown group state 'Sleeping'"),
        "{stderr}"
    );
    assert!(stderr.contains("PreparingRebalance"), "{stderr}");
    broker.ok(&["group", "list", "--state", "stable"], "");
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "piped", "--partitions", "2"], "");
    let records: String = (0..200).map(|i| format!("record {i}\n")).collect();
    broker.ok(&["produce", "piped"], &records);
    for args in [
        vec!["topic", "describe", "piped"],
        vec!["topic", "list"],
        vec!["cluster", "info"],
        vec!["consume", "piped"],
        vec!["group", "list"],
        // bench keeps SIGPIPE ignored (its report is written, and EPIPE is a quiet end).
        vec![
            "bench",
            "produce",
            "--driver",
            "weir",
            "--topic",
            "piped-bench",
            "--records",
            "100",
        ],
    ] {
        let mut child = broker
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reader goes away before weir has written anything.
        drop(child.stdout.take());
        let status = wait_bounded(
            &mut child,
            Duration::from_secs(30),
            "weir with closed stdout",
        );
        let stderr = read_all(child.stderr.take());
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        // Ended by SIGPIPE (no code, as `cat` is) or exited 0: never a failure exit.
        assert!(
            status.success() || status.code().is_none(),
            "{args:?}: {status:?} {stderr}"
        );
    }
}

// ---- retries and deadlines (item 8) ---------------------------------------

#[test]
fn produce_fails_fast_when_the_broker_dies_and_counts_only_acknowledged_records() {
    let mut broker = Broker::start();
    broker.ok(&["topic", "create", "dying", "--partitions", "1"], "");
    let mut child = broker
        .command(&["produce", "dying", "--acks", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn produce");
    let mut stdin = child.stdin.take().expect("stdin");
    // An endless input, as `yes | weir produce` would be.
    let writer = std::thread::spawn(move || {
        let line = b"a record that keeps coming\n".repeat(1000);
        while stdin.write_all(&line).is_ok() {}
    });
    std::thread::sleep(Duration::from_secs(2));
    broker.kill();
    let killed_at = Instant::now();
    let status = wait_bounded(&mut child, Duration::from_secs(30), "weir produce");
    let took = killed_at.elapsed();
    assert!(!status.success());
    let stderr = read_all(child.stderr.take());
    let _ = writer.join();
    assert!(took < Duration::from_secs(25), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("stopped at the first failed record"),
        "{stderr}"
    );
    let acknowledged: u64 = stderr
        .split("record: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no acknowledged count in {stderr}"));
    // The count is what the broker has: restart and compare.
    broker.restart();
    let stored = broker.json(&["offsets", "dying", "--format", "json"]);
    let high_watermark = stored[0]["high_watermark"].as_u64().expect("hwm");
    assert!(acknowledged > 0);
    assert!(
        acknowledged <= high_watermark,
        "claimed {acknowledged} acknowledged, broker has {high_watermark}"
    );
}

#[test]
fn bench_fails_within_seconds_when_the_broker_dies() {
    let mut broker = Broker::start();
    let mut child = broker
        .command(&[
            "bench",
            "produce",
            "--topic",
            "bench-dies",
            "--records",
            "1000000000",
            "--record-size",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bench");
    std::thread::sleep(Duration::from_secs(3));
    broker.kill();
    let status = wait_bounded(&mut child, Duration::from_secs(60), "weir bench");
    assert!(!status.success());
    let stderr = read_all(child.stderr.take());
    assert!(stderr.contains("stopped acknowledging"), "{stderr}");
}

#[test]
fn consume_follow_reconnects_after_a_broker_restart() {
    let mut broker = Broker::start();
    broker.ok(&["topic", "create", "restarts", "--partitions", "1"], "");
    broker.ok(&["produce", "restarts"], "before\n");
    let mut child = broker
        .command(&["consume", "restarts", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn consume");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).as_deref(),
        Ok("before")
    );
    broker.kill();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    broker.ok(&["produce", "restarts"], "after\n");
    let got = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let stderr = read_all(child.stderr.take());
    assert_eq!(got.as_deref(), Ok("after"), "stderr: {stderr}");
    assert!(stderr.contains("reconnecting in"), "{stderr}");
    assert!(stderr.contains("reconnected"), "{stderr}");
}

#[test]
fn ctrl_c_prints_a_summary() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "sigint", "--partitions", "1"], "");
    broker.ok(&["produce", "sigint"], "one\ntwo\nthree\n");
    let mut child = broker
        .command(&["consume", "sigint", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn consume");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while !String::from_utf8_lossy(&seen).contains("three") {
        let n = std::io::Read::read(&mut stdout, &mut buf).expect("read");
        assert!(n > 0, "consume ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sends SIGINT to our own child process.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let status = wait_bounded(&mut child, Duration::from_secs(10), "weir consume");
    let stderr = read_all(child.stderr.take());
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("interrupted: consumed 3 records"),
        "{stderr}"
    );
    assert!(stderr.contains("sigint-0@3"), "{stderr}");
}

// ---- output (item 1) ---------------------------------------------------------

#[test]
fn read_commands_print_json_with_a_stable_schema() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "js", "--partitions", "2"], "");
    broker.ok(&["produce", "js", "-K", ":"], "k:v\n");
    let topics = broker.json(&["topic", "list", "--format", "json"]);
    assert_eq!(topics[0]["name"], "js");
    assert_eq!(topics[0]["partitions"], 2);
    assert_eq!(topics[0]["internal"], false);

    let described = broker.json(&["topic", "describe", "js", "--format", "json"]);
    assert_eq!(described["name"], "js");
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(2));
    assert_eq!(described["partitions"][0]["leader"], 1);
    assert!(
        described["configs"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );

    let info = broker.json(&["cluster", "info", "--format", "json"]);
    assert_eq!(info["brokers"].as_array().map(Vec::len), Some(1));
    assert!(info["cluster_id"].is_string());
    assert_eq!(info["topics"], 1);

    broker.ok(&["consume", "js", "--group", "jg"], "");
    let groups = broker.json(&["group", "list", "--format", "json"]);
    assert!(
        groups
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["group"] == "jg")),
        "{groups}"
    );
    let group = broker.json(&["group", "describe", "jg", "--format", "json"]);
    assert_eq!(group["group"], "jg");
    let offsets = group["offsets"].as_array().expect("offsets");
    let total_lag: i64 = offsets.iter().filter_map(|o| o["lag"].as_i64()).sum();
    assert_eq!(total_lag, 0, "{group}");

    let consumed = broker.ok(&["consume", "js", "--format", "json"], "");
    let record: serde_json::Value = serde_json::from_str(consumed.trim()).expect("json line");
    assert_eq!(record["topic"], "js");
    assert_eq!(record["key"], "k");
    assert_eq!(record["value"], "v");
    assert_eq!(record["value_encoding"], "text");
    assert!(record["timestamp"].as_i64().is_some_and(|t| t > 0));
}

#[test]
fn consume_format_strings_and_escapes() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "fmt", "--partitions", "1"], "");
    broker.ok(
        &["produce", "fmt", "--format", "%k\\t%h\\t%T\\t%v\\n"],
        "key1\tsrc=a,n=1\t1700000000000\tvalue one\n",
    );
    let out = broker.ok(
        &[
            "consume",
            "fmt",
            "--format",
            "%t|%p|%o|%k|%K|%v|%S|%T|%h\\t100%%\\\\\\n",
        ],
        "",
    );
    assert_eq!(
        out,
        "fmt|0|0|key1|4|value one|9|1700000000000|src=a,n=1\t100%\\\n"
    );
}

#[test]
fn a_malformed_format_string_is_rejected_with_a_message() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "bad-fmt", "--partitions", "1"], "");
    for (format, says) in [
        ("%v %q", "unknown directive %q"),
        ("%v%", "lone %"),
        ("%v\\q", "unknown escape \\q"),
    ] {
        let stderr = broker.fails(&["consume", "bad-fmt", "--format", format]);
        assert!(stderr.contains(says), "{format}: {stderr}");
    }
    let stderr = broker.fails(&["produce", "bad-fmt", "--format", "%k%v\\n"]);
    assert!(stderr.contains("literal between them"), "{stderr}");
}

// ---- offsets (item 2) ----------------------------------------------------------

#[test]
fn describe_offsets_and_the_offsets_command_show_log_bounds_and_timestamps() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "offs", "--partitions", "1"], "");
    let input: String = (0..10)
        .map(|i| format!("{}\tv{i}\n", 1_700_000_000_000_i64 + i * 1000))
        .collect();
    broker.ok(&["produce", "offs", "--format", "%T\\t%v\\n"], &input);
    broker.ok(&["topic", "trim", "offs", "--offset", "4", "--execute"], "");
    let described = broker.json(&["topic", "describe", "offs", "--offsets", "--format", "json"]);
    let o = &described["partitions"][0]["offsets"];
    assert_eq!(o["log_start"], 4, "{described}");
    assert_eq!(o["high_watermark"], 10);
    assert_eq!(o["last_stable"], 10);
    assert!(
        o["size_bytes"].as_i64().is_some_and(|s| s > 0),
        "{described}"
    );
    let text = broker.ok(&["topic", "describe", "offs", "--offsets"], "");
    assert!(
        text.contains("LOG-START\tHIGH-WATERMARK\tLAST-STABLE\tSIZE-BYTES"),
        "{text}"
    );

    let at = broker.json(&[
        "offsets",
        "offs",
        "--at",
        "@1700000006500",
        "--format",
        "json",
    ]);
    assert_eq!(at[0]["at"]["offset"], 7, "{at}");
    assert_eq!(at[0]["at"]["timestamp"], 1_700_000_007_000_i64);
    let past_end = broker.json(&[
        "offsets",
        "offs",
        "--at",
        "1800000000000",
        "--format",
        "json",
    ]);
    assert_eq!(past_end[0]["at"]["offset"], -1, "{past_end}");
}

// ---- produce (item 3) and kcat cross-checks ---------------------------------------

fn kcat_available() -> bool {
    Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn binary_records_round_trip_through_weir_and_kcat() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "bin", "--partitions", "1"], "");
    // Every byte value, newlines and NULs included, split by a delimiter
    // that cannot occur in them.
    let values: Vec<Vec<u8>> = vec![
        (0u8..=255).collect(),
        b"line one\nline two\r\n".to_vec(),
        vec![0, 0, 0xff, b'\n'],
    ];
    let mut input = Vec::new();
    for v in &values {
        input.extend_from_slice(b"key\x1f");
        input.extend_from_slice(v);
        input.extend_from_slice(b"\x1e\x1e");
    }
    let out = broker.weir_bytes(
        &["produce", "bin", "-D", "\\x1e\\x1e", "-K", "\\x1f"],
        &input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // weir reads them back as JSON (base64 where not UTF-8).
    let consumed = broker.ok(&["consume", "bin", "--format", "json"], "");
    let decoded: Vec<Vec<u8>> = consumed
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            assert_eq!(v["key"], "key");
            let text = v["value"].as_str().expect("value").to_owned();
            if v["value_encoding"] == "base64" {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .expect("base64")
            } else {
                text.into_bytes()
            }
        })
        .collect();
    assert_eq!(decoded, values);

    // weir's %v with a length prefix gives the same bytes.
    let raw = broker.weir_bytes(&["consume", "bin", "--format", "%S:%v"], b"");
    let mut expected = Vec::new();
    for v in &values {
        expected.extend_from_slice(format!("{}:", v.len()).as_bytes());
        expected.extend_from_slice(v);
    }
    assert_eq!(raw.stdout, expected);

    if !kcat_available() {
        eprintln!("kcat not installed; skipping the kcat half");
        return;
    }
    let kcat = Command::new("kcat")
        .args([
            "-b",
            &broker.bootstrap,
            "-C",
            "-t",
            "bin",
            "-e",
            "-q",
            "-f",
            "%S:%s",
        ])
        .output()
        .expect("run kcat");
    assert!(
        kcat.status.success(),
        "{}",
        String::from_utf8_lossy(&kcat.stderr)
    );
    assert_eq!(
        kcat.stdout, expected,
        "kcat read different bytes than weir wrote"
    );
}

#[test]
fn records_produced_by_kcat_read_the_same_through_weir_format() {
    if !kcat_available() {
        eprintln!("kcat not installed; skipping");
        return;
    }
    let broker = Broker::start();
    broker.ok(&["topic", "create", "from-kcat", "--partitions", "1"], "");
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            &broker.bootstrap,
            "-P",
            "-t",
            "from-kcat",
            "-K",
            ":",
            "-H",
            "h=1",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run kcat");
    kcat.stdin
        .take()
        .expect("stdin")
        .write_all(b"k1:v1\nk2:v2\n")
        .expect("write");
    assert!(kcat.wait().expect("kcat").success());
    let weir = broker.ok(
        &["consume", "from-kcat", "--format", "%o %k=%v [%h]\\n"],
        "",
    );
    assert_eq!(weir, "0 k1=v1 [h=1]\n1 k2=v2 [h=1]\n");
    let kcat_view = Command::new("kcat")
        .args([
            "-b",
            &broker.bootstrap,
            "-C",
            "-t",
            "from-kcat",
            "-e",
            "-q",
            "-f",
            "%o %k=%s [%h]\\n",
        ])
        .output()
        .expect("kcat");
    assert_eq!(String::from_utf8_lossy(&kcat_view.stdout), weir);
}

#[test]
fn produce_tombstones_null_keys_timestamps_and_partitioners() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "tomb", "--partitions", "1"], "");
    broker.ok(
        &["produce", "tomb", "-K", ":", "-Z", "--timestamp", "1234"],
        "k1:\n:v2\nk3:v3\n",
    );
    let out = broker.ok(&["consume", "tomb", "--format", "%K %S %T %k %v\\n"], "");
    assert_eq!(out, "2 -1 1234 k1 \n-1 2 1234  v2\n2 2 1234 k3 v3\n");

    broker.ok(&["topic", "create", "rr", "--partitions", "3"], "");
    // Same key every time: murmur2 puts all on one partition, round-robin spreads them.
    broker.ok(
        &["produce", "rr", "-K", ":", "--partitioner", "round-robin"],
        &"k:v\n".repeat(9),
    );
    let counts = broker.json(&["offsets", "rr", "--format", "json"]);
    for p in counts.as_array().expect("rows") {
        assert_eq!(p["high_watermark"], 3, "{counts}");
    }
    broker.ok(&["topic", "create", "keyed", "--partitions", "3"], "");
    broker.ok(&["produce", "keyed", "-K", ":"], &"k:v\n".repeat(9));
    let keyed = broker.json(&["offsets", "keyed", "--format", "json"]);
    let nonempty = keyed
        .as_array()
        .expect("rows")
        .iter()
        .filter(|p| p["high_watermark"] != 0)
        .count();
    assert_eq!(nonempty, 1, "{keyed}");
    broker.ok(&["produce", "keyed", "-p", "2"], "x\n");
    assert_eq!(
        broker.ok(&["consume", "keyed", "-p", "2", "-o", "-1"], ""),
        "x\n"
    );
}

// ---- consume (item 4) ----------------------------------------------------------

#[test]
fn consume_offset_ranges_several_topics_and_regex() {
    let broker = Broker::start();
    broker.ok(
        &[
            "topic",
            "create",
            "r-a",
            "r-b",
            "other",
            "--partitions",
            "1",
        ],
        "",
    );
    let input: String = (0..10).map(|i| format!("{i}\n")).collect();
    broker.ok(&["produce", "r-a"], &input);
    broker.ok(&["produce", "r-b"], "b\n");
    broker.ok(&["produce", "other"], "o\n");
    let consume = |o: &str| lines(&broker.ok(&["consume", "r-a", "-o", o], "")).join(",");
    assert_eq!(consume("+7"), "7,8,9");
    assert_eq!(consume("-2"), "8,9");
    assert_eq!(consume("3:5"), "3,4");
    assert_eq!(consume("start:+2"), "0,1");
    assert_eq!(consume("end"), "");
    let stderr = broker.fails(&["consume", "r-a", "-o", "sideways"]);
    assert!(stderr.contains("-o must be"), "{stderr}");

    let both = broker.ok(
        &["consume", "r-a", "r-b", "-o", "-1", "--format", "%t:%v\\n"],
        "",
    );
    assert_eq!(lines(&both), vec!["r-a:9", "r-b:b"]);
    let matched = broker.ok(
        &["consume", "-r", "r-.*", "-o", "-1", "--format", "%t\\n"],
        "",
    );
    assert_eq!(lines(&matched), vec!["r-a", "r-b"]);
}

#[test]
fn consume_timestamp_start() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "ts", "--partitions", "1"], "");
    broker.ok(
        &["produce", "ts", "--format", "%T %v\\n"],
        "1000 a\n2000 b\n3000 c\n",
    );
    assert_eq!(
        lines(&broker.ok(&["consume", "ts", "-o", "@2000"], "")),
        vec!["b", "c"]
    );
    assert_eq!(
        lines(&broker.ok(&["consume", "ts", "-o", "@1500:@3000"], "")),
        vec!["b"]
    );
    assert_eq!(
        lines(&broker.ok(&["consume", "ts", "-o", "@1500:3000"], "")),
        vec!["b"]
    );
    assert_eq!(
        lines(&broker.ok(&["consume", "ts", "-o", "@:2000"], "")),
        vec!["a"]
    );
}

#[test]
fn consume_with_a_group_commits_and_resumes() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "grp", "--partitions", "2"], "");
    let input: String = (0..6).map(|i| format!("k{i}:{i}\n")).collect();
    broker.ok(&["produce", "grp", "-K", ":"], &input);
    assert_eq!(
        lines(&broker.ok(&["consume", "grp", "-g", "readers", "-n", "2"], "")).len(),
        2
    );
    let rest = broker.ok(&["consume", "grp", "-g", "readers"], "");
    assert_eq!(lines(&rest).len(), 4, "{rest}");
    assert!(
        broker
            .ok(&["consume", "grp", "-g", "readers"], "")
            .is_empty()
    );
    let group = broker.json(&["group", "describe", "readers", "--format", "json"]);
    let committed: i64 = group["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .filter_map(|o| o["committed"].as_i64())
        .sum();
    assert_eq!(committed, 6, "{group}");
}

// ---- groups (item 5) -------------------------------------------------------------

#[test]
fn group_seek_across_topics_partitions_shift_and_file_then_offset_delete() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "ga", "gb", "--partitions", "2"], "");
    for t in ["ga", "gb"] {
        broker.ok(&["produce", t, "-p", "0"], "1\n2\n3\n4\n");
        broker.ok(&["produce", t, "-p", "1"], "1\n2\n3\n4\n");
    }
    broker.ok(&["consume", "ga", "gb", "-g", "ops"], "");
    let committed = |broker: &Broker| -> Vec<(String, i64, Option<i64>)> {
        let g = broker.json(&["group", "describe", "ops", "--format", "json"]);
        g["offsets"]
            .as_array()
            .expect("offsets")
            .iter()
            .map(|o| {
                (
                    o["topic"].as_str().unwrap_or_default().to_owned(),
                    o["partition"].as_i64().unwrap_or(-1),
                    o["committed"].as_i64(),
                )
            })
            .collect()
    };
    // Dry run changes nothing.
    let plan = broker.ok(
        &["group", "seek", "ops", "--to", "earliest", "--topic", "ga"],
        "",
    );
    assert!(plan.contains("ga\t0\t4\t0"), "{plan}");
    assert!(committed(&broker).iter().all(|(_, _, c)| *c == Some(4)));

    broker.ok(
        &[
            "group",
            "reset-offsets",
            "ops",
            "--to",
            "offset:1",
            "--topic",
            "ga:1",
            "--topic",
            "gb",
            "--execute",
        ],
        "",
    );
    let after = committed(&broker);
    assert!(after.contains(&("ga".into(), 0, Some(4))), "{after:?}");
    assert!(after.contains(&("ga".into(), 1, Some(1))), "{after:?}");
    assert!(after.contains(&("gb".into(), 0, Some(1))), "{after:?}");

    broker.ok(
        &[
            "group",
            "reset-offsets",
            "ops",
            "--shift-by",
            "-2",
            "--topic",
            "ga:0",
            "--execute",
        ],
        "",
    );
    assert!(committed(&broker).contains(&("ga".into(), 0, Some(2))));
    // Shifting past the log start clamps.
    broker.ok(
        &[
            "group",
            "reset-offsets",
            "ops",
            "--shift-by",
            "-10",
            "--topic",
            "ga:0",
            "--execute",
        ],
        "",
    );
    assert!(committed(&broker).contains(&("ga".into(), 0, Some(0))));

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("offsets.txt");
    std::fs::write(&file, "# rpk-style\nga 0 3\ngb,1,2\n").expect("write");
    broker.ok(
        &[
            "group",
            "seek",
            "ops",
            "--to-file",
            file.to_str().expect("path"),
            "--execute",
        ],
        "",
    );
    let after = committed(&broker);
    assert!(after.contains(&("ga".into(), 0, Some(3))), "{after:?}");
    assert!(after.contains(&("gb".into(), 1, Some(2))), "{after:?}");

    broker.ok(&["group", "offset-delete", "ops", "--topic", "gb"], "");
    let after = committed(&broker);
    assert!(after.iter().all(|(t, _, _)| t != "gb"), "{after:?}");
    assert!(after.iter().any(|(t, _, _)| t == "ga"), "{after:?}");
}

// ---- topics and cluster (item 6) ------------------------------------------------------

#[test]
fn topics_are_created_deleted_and_trimmed_several_at_once() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "m1", "m2", "m3", "-p", "2"], "");
    let names = broker.ok(&["topic", "list"], "");
    assert_eq!(lines(&names), vec!["m1", "m2", "m3"]);
    broker.ok(&["topic", "delete", "m1", "m3"], "");
    assert_eq!(lines(&broker.ok(&["topic", "list"], "")), vec!["m2"]);

    broker.ok(&["produce", "m2", "-p", "0"], "a\nb\nc\n");
    let dry = broker.ok(&["topic", "trim", "m2", "-o", "2"], "");
    assert!(dry.contains("0\t0\t2\t3"), "{dry}");
    assert_eq!(lines(&broker.ok(&["consume", "m2"], "")).len(), 3);
    broker.ok(
        &["topic", "trim", "m2", "-o", "end", "-p", "0", "--execute"],
        "",
    );
    assert!(broker.ok(&["consume", "m2"], "").is_empty());
    let stderr = broker.fails(&["topic", "add-partitions", "m2", "--total", "1"]);
    assert!(stderr.contains("already has 2 partitions"), "{stderr}");
}

#[test]
fn cluster_config_get_set_export_and_logdirs() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "sized", "--partitions", "1"], "");
    broker.ok(&["produce", "sized"], "some bytes\n");
    let got = broker.ok(&["cluster", "config", "get", "log.retention.ms"], "");
    assert!(got.starts_with("log.retention.ms="), "{got}");
    broker.ok(
        &["cluster", "config", "set", "log.retention.ms=3600000"],
        "",
    );
    assert_eq!(
        broker.ok(&["cluster", "config", "get", "log.retention.ms"], ""),
        "log.retention.ms=3600000\n"
    );
    let exported = broker.ok(&["cluster", "config", "export"], "");
    assert!(exported.contains("log.retention.ms=3600000"), "{exported}");
    let stderr = broker.fails(&["cluster", "config", "get", "no.such.config"]);
    assert!(stderr.contains("no config 'no.such.config'"), "{stderr}");

    let dirs = broker.json(&["cluster", "logdirs", "--format", "json"]);
    let partitions = dirs[0]["partitions"].as_array().expect("partitions");
    let sized = partitions
        .iter()
        .find(|p| p["topic"] == "sized")
        .expect("sized partition");
    assert!(
        sized["size_bytes"].as_i64().is_some_and(|s| s > 0),
        "{dirs}"
    );
}

/// Reads a child's stderr lines into a channel.
fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns it.
fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?} within {limit:?}; saw {seen:?}");
}

#[test]
fn two_group_members_split_the_partitions_and_rebalance() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "shared", "--partitions", "4"], "");
    let spawn_member = || {
        broker
            .command(&[
                "consume", "shared", "-g", "crew", "-f", "--format", "%p:%v\\n",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn member")
    };
    let mut first = spawn_member();
    let first_log = stderr_lines(&mut first);
    let joined = wait_for_line(&first_log, "joined group crew", Duration::from_secs(30));
    assert!(joined.contains("assigned shared:0,1,2,3"), "{joined}");

    let mut second = spawn_member();
    let second_log = stderr_lines(&mut second);
    let second_joined = wait_for_line(&second_log, "joined group crew", Duration::from_secs(40));
    wait_for_line(&first_log, "rejoining", Duration::from_secs(10));
    let first_rejoined = wait_for_line(&first_log, "joined group crew", Duration::from_secs(30));
    // Range over sorted member ids: one member gets 0,1 and the other 2,3.
    let halves = [first_rejoined.as_str(), second_joined.as_str()];
    assert!(
        halves.iter().any(|l| l.ends_with("assigned shared:0,1"))
            && halves.iter().any(|l| l.ends_with("assigned shared:2,3")),
        "{halves:?}"
    );

    let input: String = (0..40).map(|i| format!("{i}\n")).collect();
    broker.ok(
        &["produce", "shared", "--partitioner", "round-robin"],
        &input,
    );
    std::thread::sleep(Duration::from_secs(3));
    for child in [&mut first, &mut second] {
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: SIGINT to our own child: it commits, leaves and exits.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        wait_bounded(child, Duration::from_secs(15), "group member");
    }
    let mut values: Vec<i64> = Vec::new();
    for child in [&mut first, &mut second] {
        let out = read_all(child.stdout.take());
        let partitions: std::collections::BTreeSet<&str> =
            out.lines().filter_map(|l| l.split(':').next()).collect();
        assert!(
            partitions == ["0", "1"].into() || partitions == ["2", "3"].into(),
            "a member read partitions it was not assigned: {out}"
        );
        values.extend(
            out.lines()
                .filter_map(|l| l.split(':').nth(1)?.parse::<i64>().ok()),
        );
    }
    values.sort_unstable();
    assert_eq!(
        values,
        (0..40).collect::<Vec<_>>(),
        "every record exactly once"
    );
    // Both left: the group is empty and its offsets cover everything.
    let group = broker.json(&["group", "describe", "crew", "--format", "json"]);
    assert_eq!(group["state"], "Empty", "{group}");
    let lag: i64 = group["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .filter_map(|o| o["lag"].as_i64())
        .sum();
    assert_eq!(lag, 0, "{group}");
}

#[test]
fn weir_and_kcat_share_one_consumer_group() {
    if !kcat_available() {
        eprintln!("kcat not installed; skipping");
        return;
    }
    let broker = Broker::start();
    broker.ok(&["topic", "create", "mixed", "--partitions", "2"], "");
    let mut weir = broker
        .command(&["consume", "mixed", "-g", "mixed-crew", "-f"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    let weir_log = stderr_lines(&mut weir);
    wait_for_line(
        &weir_log,
        "joined group mixed-crew",
        Duration::from_secs(30),
    );
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            &broker.bootstrap,
            "-G",
            "mixed-crew",
            "-X",
            "partition.assignment.strategy=range",
            "-q",
            "mixed",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kcat");
    let rejoined = {
        wait_for_line(&weir_log, "rejoining", Duration::from_secs(30));
        wait_for_line(
            &weir_log,
            "joined group mixed-crew",
            Duration::from_secs(30),
        )
    };
    let _ = kcat.kill();
    let _ = kcat.wait();
    let _ = weir.kill();
    let _ = weir.wait();
    // Two members, two partitions: weir keeps exactly one.
    assert!(
        rejoined.ends_with("assigned mixed:0") || rejoined.ends_with("assigned mixed:1"),
        "{rejoined}"
    );
}

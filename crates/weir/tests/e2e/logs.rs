//! What a broker writes to its log when stderr is a file (as under systemd or a container):
//! no colour codes, and with `--log-format json` one JSON object per line.

use super::harness::{Broker, create_topic};

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let mut broker = Broker::start(&[]);
    create_topic(&broker, "plain-logs", 1, &[]);
    assert!(broker.stop(), "clean stop");
    let log = broker.log();
    assert!(log.contains("weir starting"), "{log}");
    assert!(log.contains("clean shutdown complete"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file:\n{log}"
    );
    assert!(
        !log.contains("cluster_id = \"\""),
        "the config dump shows an empty cluster id while one is in use:\n{log}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut broker = Broker::start(&["--log-format", "json"]);
    create_topic(&broker, "json-logs", 1, &[]);
    assert!(broker.stop(), "clean stop");
    let log = broker.log();
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(event["level"].is_string(), "no level: {line}");
        assert!(event["timestamp"].is_string(), "no timestamp: {line}");
        messages.push(
            event["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    for expected in [
        "weir starting",
        "effective configuration",
        "weir is serving",
        "clean shutdown complete",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "no {expected:?} in {messages:?}"
        );
    }
}

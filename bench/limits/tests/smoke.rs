//! `weir-limits` runs and reports what `bench/run` reads: tiny runs of each limit.

use std::process::Command;

use serde_json::Value;

fn limits(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_weir-limits"))
        .args(args)
        .output()
        .expect("weir-limits runs");
    assert!(
        out.status.success(),
        "weir-limits {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn group_commit_reports_ordered_percentiles_for_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let v = limits(&[
        "group-commit",
        "--dir",
        dir_arg,
        "--rate",
        "2000",
        "--seconds",
        "1",
    ]);
    assert_eq!(v["limit"], "group_commit_latency");
    assert_eq!(number(&v, "records"), 2000.0, "every record is timed once");
    let (p50, p99, p999, max) = (
        number(&v, "p50_ms"),
        number(&v, "p99_ms"),
        number(&v, "p999_ms"),
        number(&v, "max_ms"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max, "{v}");
    // The scratch file is removed.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Runs `weir-limits disk` on 8 MiB in a fresh directory with `extra` flags;
/// checks that it reports a throughput as `name` and leaves no file behind.
fn check_disk_limit(extra: &[&str], name: &str) {
    // In the build's tmp dir, on the project's filesystem: /tmp may be a
    // tmpfs, which refuses O_DIRECT.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut args = vec!["disk", "--dir", dir.path().to_str().unwrap(), "--mib", "8"];
    args.extend_from_slice(extra);
    let v = limits(&args);
    assert_eq!(v["limit"], name);
    assert!(number(&v, "mib_per_s") > 0.0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn disk_limit_reports_throughput_and_removes_its_file() {
    check_disk_limit(
        &["--sync-every-kib", "1024"],
        "disk_write_fdatasync_every_1024kib",
    );
}

#[test]
fn direct_disk_limit_writes_with_o_direct_and_removes_its_file() {
    check_disk_limit(&["--sync-every-kib", "0", "--direct"], "disk_write_direct");
}

#[test]
fn unknown_limit_is_refused_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir-limits"))
        .arg("fsync-everything")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

#[test]
fn group_commit_refuses_a_run_too_long_to_keep_in_memory() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir-limits"))
        .args([
            "group-commit",
            "--dir",
            ".",
            "--rate",
            "1000000",
            "--seconds",
            "3600",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the limit is"));
}

//! Real-process crash test: a child process (this same test binary, switched by an env var)
//! appends with fsync-before-ack and prints each acknowledged batch; the parent SIGKILLs it at
//! random moments, reopens the directory, and checks every acknowledged batch is there with
//! identical bytes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use weir_log::test_support::with_offset_and_epoch;
use weir_log::{Log, LogConfig, LogEnv};

const CHILD_DIR_ENV: &str = "WEIR_LOG_KILL9_CHILD_DIR";
const CHILD_RUN_ENV: &str = "WEIR_LOG_KILL9_RUN";
const KILLS: u64 = 24;

fn config() -> LogConfig {
    // Frequent recovery points, so kills land both before and after mid-segment ones.
    LogConfig {
        segment_bytes: 64 * 1024,
        recovery_point_interval_bytes: 8 * 1024,
        ..LogConfig::default()
    }
}

fn batch_id(run: u64, k: u64) -> u64 {
    run * 1_000_000 + k
}

fn batch_len(id: u64) -> usize {
    (id % 3000) as usize + 1
}

/// Child body: append forever, printing `ACK <base_offset> <batch id>` once each batch is durable.
fn child(dir: &str, run: u64) {
    let env = LogEnv::new(64);
    let log = Log::open(&env, std::path::Path::new(dir), config()).expect("child open");
    let mut k = 0u64;
    loop {
        let id = batch_id(run, k);
        let info = append(
            &log,
            &batch(id, (id % 4) as i32 + 1, batch_len(id), id as i64),
        );
        let (tx, rx) = mpsc::channel();
        log.on_durable(
            info.last_offset + 1,
            Box::new(move |r| tx.send(r.is_ok()).unwrap_or(())),
        );
        assert!(rx.recv().expect("durable callback"));
        println!("ACK {} {}", info.base_offset, id);
        k += 1;
    }
}

#[test]
fn acked_batches_survive_sigkill_during_appends() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let run = std::env::var(CHILD_RUN_ENV)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        child(&dir, run);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(i64, u64)> = Vec::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let started = Instant::now();
    for run in 1..=KILLS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_ms = 30 + rng % 250;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "acked_batches_survive_sigkill_during_appends",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_RUN_ENV, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut it = line.split_whitespace();
                if it.next() == Some("ACK") {
                    let off: i64 = it.next().unwrap().parse().unwrap();
                    let id: u64 = it.next().unwrap().parse().unwrap();
                    let _ = tx.send((off, id));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(run_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let new: Vec<(i64, u64)> = rx.try_iter().collect();
        acked.extend(new.iter().copied());

        // Reopen as the next run would, and check every ack so far.
        let env = LogEnv::new(64);
        let log = Log::open(&env, dir.path(), config()).unwrap();
        for &(off, id) in &acked {
            let r = log
                .read(off, 1, i64::MAX)
                .unwrap_or_else(|e| panic!("run {run}: acked offset {off} unreadable: {e}"));
            let mut buf = Vec::new();
            r.read_into(&mut buf).unwrap();
            let expected = with_offset_and_epoch(
                &batch(id, (id % 4) as i32 + 1, batch_len(id), id as i64),
                off,
                0,
            );
            assert_eq!(buf, expected, "run {run}: acked batch at {off} differs");
        }
        // Offsets dense and every batch valid.
        let all = read_all(&log, 0, log.log_end_offset());
        let mut next = 0;
        for b in &all {
            assert_eq!(b.0, next);
            assert!(b.2);
            next = b.1 + 1;
        }
        assert_eq!(next, log.log_end_offset());
        drop(log);
        env.shutdown();
    }
    assert!(
        acked.len() > KILLS as usize,
        "children acked too little to mean anything"
    );
    eprintln!(
        "kill9: {} acked batches over {KILLS} kills in {:?}",
        acked.len(),
        started.elapsed()
    );
}

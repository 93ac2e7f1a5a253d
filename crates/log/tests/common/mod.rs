#![allow(dead_code)]
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use weir_log::test_support::{build_batch, split_read};
use weir_log::{AppendOptions, FlushPolicy, Log, LogConfig, LogEnv};

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

pub fn no_fsync(config: LogConfig) -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Interval {
            messages: u64::MAX,
            ms: 3_600_000,
        },
        ..config
    }
}

/// Deterministic payload for batch number `n`.
pub fn payload(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn batch(n: u64, records: i32, len: usize, ts: i64) -> Bytes {
    Bytes::from(build_batch(records, ts, &payload(n, len)))
}

pub fn append(log: &Log, b: &Bytes) -> weir_log::AppendInfo {
    log.append(
        b,
        &AppendOptions {
            leader_epoch: 0,
            log_append_time_ms: None,
        },
    )
    .expect("append")
}

/// Reads everything in [from, to) and returns (base, last, crc_ok, bytes) per batch.
pub fn read_all(log: &Log, from: i64, to: i64) -> Vec<(i64, i64, bool, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < to {
        let r = log.read(next, 64 * 1024, to).expect("read");
        if r.bytes == 0 {
            break;
        }
        let mut buf = Vec::new();
        r.read_into(&mut buf).expect("read_into");
        let batches = split_read(&buf).expect("read returned whole batches");
        next = batches.last().map(|b| b.1 + 1).unwrap_or(to);
        out.extend(batches);
    }
    out
}

pub fn open(env: &Arc<LogEnv>, dir: &Path, config: LogConfig) -> Log {
    Log::open(env, dir, config).expect("open")
}

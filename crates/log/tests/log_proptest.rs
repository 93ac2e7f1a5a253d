//! Model-based property test: random appends, reads, rolls, retention, DeleteRecords,
//! truncations, clean reopens and simulated crashes (the last segment cut to a random length at
//! or above what was synced, optionally with a garbage tail). Invariants: no synced batch is lost,
//! every returned batch has a valid CRC and matches what was appended, offsets are dense.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use weir_log::test_support::with_offset_and_epoch;
use weir_log::{Log, LogConfig, LogEnv};

#[derive(Debug, Clone)]
enum Op {
    Append {
        batches: u8,
        records: i32,
        len: usize,
    },
    Read {
        at: f64,
        max_bytes: usize,
    },
    Roll,
    Flush,
    Retention {
        bytes: i64,
    },
    DeleteRecords {
        at: f64,
    },
    Truncate {
        at: f64,
    },
    Crash {
        cut: f64,
        garbage_from: Option<f64>,
        seed: u64,
    },
    CleanReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u8..4, 1i32..5, 0usize..700).prop_map(|(batches, records, len)| Op::Append { batches, records, len }),
        3 => (0.0f64..1.0, 1usize..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        2 => Just(Op::Flush),
        1 => (0i64..10_000).prop_map(|bytes| Op::Retention { bytes }),
        1 => (0.0f64..1.0).prop_map(|at| Op::DeleteRecords { at }),
        1 => (0.0f64..1.0).prop_map(|at| Op::Truncate { at }),
        2 => (0.0f64..1.0, proptest::option::of(0.0f64..1.0), any::<u64>())
            .prop_map(|(cut, garbage_from, seed)| Op::Crash { cut, garbage_from, seed }),
        1 => Just(Op::CleanReopen),
    ]
}

struct Model {
    /// (base, last, bytes as stored) for every batch at or above log start.
    batches: Vec<(i64, i64, Vec<u8>)>,
    log_start: i64,
    log_end: i64,
    /// Offset below which everything was synced, and where the last segment stood then.
    synced_offset: i64,
    synced_segment: (i64, u64),
}

fn last_segment(dir: &Path) -> (i64, PathBuf) {
    let mut best: Option<(i64, PathBuf)> = None;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            let base: i64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            if best.as_ref().is_none_or(|(b, _)| base > *b) {
                best = Some((base, p));
            }
        }
    }
    best.unwrap()
}

/// Byte position in a segment file where the batch with base offset `offset` starts (the file
/// length if there is none): everything before it was synced if `offset` was.
fn position_of(path: &Path, offset: i64) -> u64 {
    let data = std::fs::read(path).unwrap();
    let mut pos = 0usize;
    while pos + 12 <= data.len() {
        let base = i64::from_be_bytes(data[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap());
        if base >= offset || len < 49 {
            break;
        }
        pos += len as usize + 12;
    }
    (pos as u64).min(data.len() as u64)
}

fn pick(from: i64, to: i64, at: f64) -> i64 {
    from + ((to - from) as f64 * at) as i64
}

fn mark_synced(log: &Log, m: &mut Model) {
    log.flush().unwrap();
    let (base, path) = last_segment(log.dir());
    m.synced_offset = log.log_end_offset();
    m.synced_segment = (base, std::fs::metadata(path).unwrap().len());
}

fn check_whole_log(log: &Log, m: &Model) {
    assert_eq!(log.log_start_offset(), m.log_start);
    assert_eq!(log.log_end_offset(), m.log_end);
    let got = read_all(log, m.log_start, m.log_end);
    assert_eq!(got.len(), m.batches.len());
    for (g, e) in got.iter().zip(&m.batches) {
        assert!(g.2, "bad CRC returned");
        assert_eq!((g.0, g.1), (e.0, e.1));
        assert_eq!(g.3, e.2);
    }
}

fn run(ops: Vec<Op>, recovery_point_every_sync: bool) {
    let env = LogEnv::new(16);
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig {
        segment_bytes: 3000,
        ..no_fsync(small_config())
    };
    if recovery_point_every_sync {
        // Persist a recovery point after every sync, so crashes land after mid-segment ones.
        config.recovery_point_interval_bytes = 0;
    }
    let mut log = Log::open(&env, dir.path(), config).unwrap();
    let mut m = Model {
        batches: Vec::new(),
        log_start: 0,
        log_end: 0,
        synced_offset: 0,
        synced_segment: (0, 0),
    };
    let mut n: u64 = 0;
    for op in ops {
        match op {
            Op::Append {
                batches,
                records,
                len,
            } => {
                let mut buf = Vec::new();
                let mut parts = Vec::new();
                for _ in 0..batches {
                    n += 1;
                    let b = batch(n, records, len, n as i64);
                    parts.push(b.to_vec());
                    buf.extend_from_slice(&b);
                }
                let info = append(&log, &bytes::Bytes::from(buf));
                assert_eq!(info.base_offset, m.log_end);
                let mut next = info.base_offset;
                for p in parts {
                    m.batches.push((
                        next,
                        next + i64::from(records) - 1,
                        with_offset_and_epoch(&p, next, 0),
                    ));
                    next += i64::from(records);
                }
                m.log_end = next;
                assert_eq!(info.last_offset, next - 1);
            }
            Op::Read { at, max_bytes } => {
                let offset = pick(m.log_start, m.log_end, at);
                let r = log.read(offset, max_bytes, i64::MAX).unwrap();
                let mut buf = Vec::new();
                r.read_into(&mut buf).unwrap();
                let got = weir_log::test_support::split_read(&buf).unwrap();
                if offset == m.log_end {
                    assert!(got.is_empty());
                    continue;
                }
                let i = m.batches.iter().position(|b| b.1 >= offset).unwrap();
                assert!(!got.is_empty());
                assert!(buf.len() <= max_bytes.max(m.batches[i].2.len()));
                for (k, g) in got.iter().enumerate() {
                    assert!(g.2);
                    assert_eq!(g.3, m.batches[i + k].2);
                }
            }
            Op::Roll => log.roll().unwrap(),
            Op::Flush => mark_synced(&log, &mut m),
            Op::Retention { bytes } => {
                log.set_high_watermark(m.log_end);
                log.update_config(LogConfig {
                    retention_bytes: bytes,
                    ..config
                });
                log.apply_retention(0).unwrap();
                log.update_config(config);
                let start = log.log_start_offset();
                assert!(start >= m.log_start && start <= m.log_end);
                let moved = start != m.log_start;
                m.log_start = start;
                m.batches.retain(|b| b.1 >= start);
                if moved {
                    assert!(
                        m.batches.first().is_none_or(|b| b.0 == start),
                        "retention removes whole segments"
                    );
                }
            }
            Op::DeleteRecords { at } => {
                let target = pick(m.log_start, m.log_end, at);
                log.set_high_watermark(m.log_end);
                assert_eq!(log.delete_records_before(target).unwrap(), target);
                m.log_start = target;
                m.batches.retain(|b| b.1 >= target);
            }
            Op::Truncate { at } => {
                let target = pick(m.log_start, m.log_end, at);
                log.truncate_to(target).unwrap();
                if target <= m.log_start {
                    m.batches.clear();
                    m.log_start = target;
                    m.log_end = target;
                } else {
                    // The batch containing the target goes too; the end lands on its base.
                    if let Some(cut) = m.batches.iter().find(|b| b.1 >= target).map(|b| b.0) {
                        m.log_end = cut;
                        m.log_start = m.log_start.min(cut);
                    }
                    m.batches.retain(|b| b.1 < target);
                }
                mark_synced(&log, &mut m);
            }
            Op::Crash {
                cut,
                garbage_from,
                seed,
            } => {
                // Background syncs (after rolls) may have made more durable than the model's last
                // explicit flush; a crash cannot damage any of it.
                let synced = log.abandon_for_test();
                m.synced_offset = m.synced_offset.max(synced);
                let (base, path) = last_segment(dir.path());
                let len = std::fs::metadata(&path).unwrap().len();
                let lo_model = if base == m.synced_segment.0 {
                    m.synced_segment.1
                } else {
                    0
                };
                let lo_log = if synced > base {
                    position_of(&path, synced)
                } else {
                    0
                };
                let lo = lo_model.max(lo_log).min(len);
                let new_len = lo + ((len - lo) as f64 * cut) as u64;
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(new_len).unwrap();
                if let Some(g) = garbage_from {
                    use std::os::unix::fs::FileExt;
                    let from = lo + ((new_len - lo) as f64 * g) as u64;
                    let junk = payload(seed, (new_len - from) as usize);
                    f.write_all_at(&junk, from).unwrap();
                }
                drop(f);
                log = Log::open(&env, dir.path(), config).unwrap();
                let end = log.log_end_offset();
                assert!(
                    end >= m.synced_offset,
                    "synced data lost: end {end} < synced {}",
                    m.synced_offset
                );
                assert!(end <= m.log_end);
                m.batches.retain(|b| b.1 < end);
                assert_eq!(
                    m.batches
                        .last()
                        .map_or(m.log_start, |b| b.1 + 1)
                        .max(m.log_start),
                    end.max(m.log_start)
                );
                m.log_end = end;
                if end < m.log_start {
                    // Everything from log start on was torn away: the log restarts at its end.
                    m.log_start = log.log_start_offset();
                }
                check_whole_log(&log, &m);
                mark_synced(&log, &mut m);
            }
            Op::CleanReopen => {
                log.close().unwrap();
                drop(log);
                log = Log::open(&env, dir.path(), config).unwrap();
                check_whole_log(&log, &m);
                mark_synced(&log, &mut m);
            }
        }
    }
    check_whole_log(&log, &m);
    log.close().unwrap();
    drop(log);
    let log = Log::open(&env, dir.path(), config).unwrap();
    check_whole_log(&log, &m);
    drop(Arc::clone(&env));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_survives_random_operations_and_crashes(ops in proptest::collection::vec(op(), 1..60), recovery_point_every_sync in any::<bool>()) {
        run(ops, recovery_point_every_sync);
    }
}

//! A producer's batch that fails to be written (the file size limit stands in for a full disk)
//! and the batches it had in flight behind it.
//!
//! Alone in its own test binary: the file size limit is the process's.

mod common;

use bytes::Bytes;
use common::*;
use weir_log::{AppendOptions, LogConfig, LogEnv, LogError, ProducerStateError};
use weir_protocol::record::{Compression, Record, RecordBatchBuilder};

fn idem(pid: i64, epoch: i16, seq: i32) -> Bytes {
    RecordBatchBuilder::new(Compression::None)
        .base_timestamp(1_700_000_000_000)
        .producer(pid, epoch, seq)
        .record(Record {
            offset_delta: 0,
            timestamp_delta: 0,
            key: None,
            value: Some(Bytes::from(format!("{pid}/{epoch}/{seq}"))),
            headers: Vec::new(),
        })
        .build()
        .expect("batch")
}

fn try_append(log: &weir_log::Log, b: &Bytes) -> Result<weir_log::AppendInfo, LogError> {
    log.append(b, &AppendOptions::default())
}

/// Sets the soft file size limit (the hard one stays), so that writes past `bytes` fail with
/// EFBIG instead of raising SIGXFSZ.
fn limit_file_size(bytes: u64) {
    // SAFETY: plain libc calls with valid arguments; SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut lim = std::mem::zeroed::<libc::rlimit>();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

fn segment_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn batches_behind_a_failed_write_get_the_storage_error_until_it_is_retried() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = open(&env, dir.path(), config);
    for seq in 0..2 {
        try_append(&log, &idem(5, 0, seq)).expect("before the fault");
    }
    let end_before = log.log_end_offset();

    // The disk "fills": sequence 2 of producer 5, and the first batch of producer 7 (which the
    // log has never seen), are not written.
    limit_file_size(segment_bytes(dir.path()) + 16);
    assert!(
        matches!(try_append(&log, &idem(5, 0, 2)), Err(LogError::Io(_))),
        "the file size limit must fail the write"
    );
    assert!(matches!(
        try_append(&log, &idem(7, 0, 0)),
        Err(LogError::Io(_))
    ));
    limit_file_size(u64::MAX);
    assert_eq!(
        log.log_end_offset(),
        end_before,
        "a failed write leaves nothing"
    );

    // The space is back. What each producer had in flight behind its failed batch gets the
    // same storage error, not OUT_OF_ORDER_SEQUENCE_NUMBER, whose answer in librdkafka is an
    // epoch bump that can duplicate records.
    for (pid, seq, failed) in [(5, 3, 2), (5, 4, 2), (7, 1, 0)] {
        match try_append(&log, &idem(pid, 0, seq)) {
            Err(LogError::BehindFailedWrite {
                producer_id,
                sequence,
            }) => assert_eq!((producer_id, sequence), (pid, failed)),
            other => panic!("producer {pid} sequence {seq}: {other:?}"),
        }
    }
    // A retry of a batch written before the failure is still a duplicate, and other producers
    // are not held up.
    let dup = try_append(&log, &idem(5, 0, 1)).expect("duplicate");
    assert!(dup.duplicate);
    try_append(&log, &idem(6, 0, 0)).expect("another producer");

    // The retries in order: each is written once, and nothing is out of sequence.
    for (pid, seq) in [(5, 2), (5, 3), (5, 4), (7, 0), (7, 1)] {
        let info = try_append(&log, &idem(pid, 0, seq)).expect("retry after the fault");
        assert!(!info.duplicate);
    }
    // A gap is still a gap.
    assert!(matches!(
        try_append(&log, &idem(5, 0, 9)),
        Err(LogError::Producer(ProducerStateError::OutOfOrderSequence(
            _
        )))
    ));

    // A new epoch forgets a failure of the old one.
    limit_file_size(segment_bytes(dir.path()) + 16);
    assert!(matches!(
        try_append(&log, &idem(5, 0, 5)),
        Err(LogError::Io(_))
    ));
    limit_file_size(u64::MAX);
    try_append(&log, &idem(5, 1, 0)).expect("the new epoch starts at sequence 0");

    // A failed batch that reaches this log another way (written through another leader and
    // replicated here) holds nothing up: the producer's next batch is taken.
    limit_file_size(segment_bytes(dir.path()) + 16);
    assert!(matches!(
        try_append(&log, &idem(8, 0, 0)),
        Err(LogError::Io(_))
    ));
    limit_file_size(u64::MAX);
    let replicated = Bytes::from(weir_log::test_support::with_offset_and_epoch(
        &idem(8, 0, 0),
        log.log_end_offset(),
        0,
    ));
    log.append_as_follower(&replicated).expect("replicated");
    try_append(&log, &idem(8, 0, 1)).expect("the batch after the replicated one");

    let values: Vec<Vec<u8>> = read_all(&log, 0, log.log_end_offset())
        .into_iter()
        .map(|(_, _, crc_ok, bytes)| {
            assert!(crc_ok);
            bytes
        })
        .collect();
    assert_eq!(
        values.len(),
        2 + 1 + 5 + 1 + 2,
        "every batch once, none twice"
    );
}

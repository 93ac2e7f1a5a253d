//! Small per-partition files that are replaced atomically (write temp, fsync, rename, fsync dir):
//! the log checkpoint (recovery point, log start, high watermark), the leader-epoch cache and the
//! producer-state snapshots. Each is validated on load; an invalid file is treated as absent.

use std::io;
use std::path::Path;

use crate::producer_state::{PRODUCER_BATCHES_RETAINED, ProducerBatch, ProducerEntry};

pub(crate) const LOG_CHECKPOINT_FILE: &str = "log-checkpoint";
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const PRODUCER_SNAPSHOT_EXT: &str = "snapshot";

/// Upper bound on entries read from a leader-epoch file: far above any real epoch history.
const LEADER_EPOCH_ENTRIES_MAX: usize = 1 << 20;

pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    crate::durable::write_file_atomically(&dir.join(name), contents)
}

/// [`write_atomic`] without its syncs (`durable::write_file_unsynced`): the caller syncs later.
pub(crate) fn write_unsynced(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    crate::durable::write_file_unsynced(&dir.join(name), contents)
}

/// What survives across restarts about the log as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogCheckpoint {
    /// Every segment whose data lies wholly below this offset has been synced and (if its index
    /// files validate) need not be scanned on open. After a clean shutdown it is the log end.
    pub recovery_point: i64,
    pub log_start: i64,
    pub high_watermark: i64,
    /// Where the newest synced data ends inside its segment, so that recovery can resume there
    /// instead of rescanning that segment from its start.
    pub position: Option<RecoveryPosition>,
}

/// A synced point inside one segment and the in-memory index state at that point. Everything
/// in the segment before `position` was fdatasynced before this was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryPosition {
    pub segment_base: i64,
    /// Byte position in the segment file: a batch boundary.
    pub position: u64,
    /// Offset of the first batch at `position`.
    pub next_offset: i64,
    /// Entries of the segment's `.rpindex` file covered (all before `position`), and their CRC32C.
    pub index_count: u32,
    pub index_crc: u32,
    pub max_ts: i64,
    pub max_ts_offset: i64,
    pub bytes_since_index: u64,
}

impl LogCheckpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = format!(
            "weir-log-checkpoint 2 {} {} {}",
            self.recovery_point, self.log_start, self.high_watermark
        );
        if let Some(p) = &self.position {
            body.push_str(&format!(
                " {} {} {} {} {} {} {} {}",
                p.segment_base,
                p.position,
                p.next_offset,
                p.index_count,
                p.index_crc,
                p.max_ts,
                p.max_ts_offset,
                p.bytes_since_index
            ));
        }
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body} {crc:08x}\n").into_bytes()
    }

    /// Accepts version 1 (no position) and version 2.
    pub fn decode(b: &[u8]) -> Option<LogCheckpoint> {
        let s = std::str::from_utf8(b).ok()?.trim_end();
        let (body, crc) = s.rsplit_once(' ')?;
        if u32::from_str_radix(crc, 16).ok()? != crc32c::crc32c(body.as_bytes()) {
            return None;
        }
        let mut it = body.split(' ');
        if it.next()? != "weir-log-checkpoint" {
            return None;
        }
        let version = it.next()?;
        if version != "1" && version != "2" {
            return None;
        }
        let mut cp = LogCheckpoint {
            recovery_point: it.next()?.parse().ok()?,
            log_start: it.next()?.parse().ok()?,
            high_watermark: it.next()?.parse().ok()?,
            position: None,
        };
        if let Some(first) = it.next() {
            if version == "1" {
                return None;
            }
            cp.position = Some(RecoveryPosition {
                segment_base: first.parse().ok()?,
                position: it.next()?.parse().ok()?,
                next_offset: it.next()?.parse().ok()?,
                index_count: it.next()?.parse().ok()?,
                index_crc: it.next()?.parse().ok()?,
                max_ts: it.next()?.parse().ok()?,
                max_ts_offset: it.next()?.parse().ok()?,
                bytes_since_index: it.next()?.parse().ok()?,
            });
        }
        it.next().is_none().then_some(cp)
    }

    pub fn load(dir: &Path) -> Option<LogCheckpoint> {
        LogCheckpoint::decode(&std::fs::read(dir.join(LOG_CHECKPOINT_FILE)).ok()?)
    }

    pub fn store(&self, dir: &Path) -> io::Result<()> {
        write_atomic(dir, LOG_CHECKPOINT_FILE, &self.encode())
    }
}

/// Kafka's text format: version line `0`, entry count, then `epoch start_offset` lines.
pub(crate) fn encode_leader_epochs(entries: &[(i32, i64)]) -> Vec<u8> {
    let mut s = format!("0\n{}\n", entries.len());
    for (epoch, start) in entries {
        s.push_str(&format!("{epoch} {start}\n"));
    }
    s.into_bytes()
}

pub(crate) fn decode_leader_epochs(b: &[u8]) -> Option<Vec<(i32, i64)>> {
    let s = std::str::from_utf8(b).ok()?;
    let mut lines = s.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    if count > LEADER_EPOCH_ENTRIES_MAX {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let line = lines.next()?;
        let (e, o) = line.trim().split_once(' ')?;
        let entry: (i32, i64) = (e.parse().ok()?, o.parse().ok()?);
        // Epochs and start offsets only grow.
        if out
            .last()
            .is_some_and(|&(pe, po): &(i32, i64)| entry.0 <= pe || entry.1 < po)
        {
            return None;
        }
        out.push(entry);
    }
    Some(out)
}

/// Version 3 adds each producer's coordinator epoch and open transaction's first offset.
const PRODUCER_SNAPSHOT_MAGIC: &[u8; 8] = b"WEIRPSS3";
/// Version 2 (before transactions) still loads: its producers have no open transaction.
const PRODUCER_SNAPSHOT_MAGIC_V2: &[u8; 8] = b"WEIRPSS2";
/// Producer id, epoch, last timestamp, batch count (version 2).
const PRODUCER_ENTRY_FIXED_BYTES: usize = 8 + 2 + 8 + 1;
/// Coordinator epoch and open transaction's first offset (version 3).
const PRODUCER_ENTRY_TXN_BYTES: usize = 4 + 8;
/// First and last sequence, first and last offset.
const PRODUCER_BATCH_BYTES: usize = 4 + 4 + 8 + 8;

pub(crate) fn producer_snapshot_name(offset: i64) -> String {
    format!("{offset:020}.{PRODUCER_SNAPSHOT_EXT}")
}

/// Parses a snapshot file name back to its offset.
pub(crate) fn producer_snapshot_offset(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".snapshot")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// Format: magic, snapshot offset (i64), entry count (u32), entries (each: producer id, epoch,
/// last timestamp, coordinator epoch (i32), open transaction's first offset (i64, -1 for none),
/// batch count (u8), then that many batches: first/last sequence, first/last offset), CRC32C of
/// all before it. Big-endian throughout. Version 2 lacks the two transaction fields.
pub(crate) fn encode_producer_snapshot(offset: i64, entries: &[ProducerEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(
        24 + entries.len()
            * (PRODUCER_ENTRY_FIXED_BYTES
                + PRODUCER_ENTRY_TXN_BYTES
                + PRODUCER_BATCHES_RETAINED * PRODUCER_BATCH_BYTES),
    );
    b.extend_from_slice(PRODUCER_SNAPSHOT_MAGIC);
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        b.extend_from_slice(&e.producer_id.to_be_bytes());
        b.extend_from_slice(&e.epoch.to_be_bytes());
        b.extend_from_slice(&e.last_timestamp_ms.to_be_bytes());
        b.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
        b.extend_from_slice(&e.current_txn_first_offset.to_be_bytes());
        let batches = e.batches();
        b.push(batches.len() as u8);
        for bt in batches {
            b.extend_from_slice(&bt.first_sequence.to_be_bytes());
            b.extend_from_slice(&bt.last_sequence.to_be_bytes());
            b.extend_from_slice(&bt.first_offset.to_be_bytes());
            b.extend_from_slice(&bt.last_offset.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

fn take<const N: usize>(b: &[u8], pos: &mut usize) -> Option<[u8; N]> {
    let out: [u8; N] = b.get(*pos..pos.checked_add(N)?)?.try_into().ok()?;
    *pos += N;
    Some(out)
}

pub(crate) fn decode_producer_snapshot(b: &[u8]) -> Option<(i64, Vec<ProducerEntry>)> {
    let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
        return None;
    }
    let with_txn = match body.get(..8)? {
        m if m == PRODUCER_SNAPSHOT_MAGIC => true,
        m if m == PRODUCER_SNAPSHOT_MAGIC_V2 => false,
        _ => return None,
    };
    let mut pos = 8;
    let offset = i64::from_be_bytes(take(body, &mut pos)?);
    let count = usize::try_from(u32::from_be_bytes(take(body, &mut pos)?)).ok()?;
    // Bounded by the bytes actually present before allocating.
    if count > body.len() / PRODUCER_ENTRY_FIXED_BYTES {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let producer_id = i64::from_be_bytes(take(body, &mut pos)?);
        let epoch = i16::from_be_bytes(take(body, &mut pos)?);
        let last_timestamp_ms = i64::from_be_bytes(take(body, &mut pos)?);
        let (coordinator_epoch, current_txn_first_offset) = if with_txn {
            (
                i32::from_be_bytes(take(body, &mut pos)?),
                i64::from_be_bytes(take(body, &mut pos)?),
            )
        } else {
            (-1, -1)
        };
        let [batch_count] = take::<1>(body, &mut pos)?;
        if usize::from(batch_count) > PRODUCER_BATCHES_RETAINED {
            return None;
        }
        let mut e = ProducerEntry::new(producer_id, epoch, last_timestamp_ms);
        for _ in 0..batch_count {
            let batch = ProducerBatch {
                first_sequence: i32::from_be_bytes(take(body, &mut pos)?),
                last_sequence: i32::from_be_bytes(take(body, &mut pos)?),
                first_offset: i64::from_be_bytes(take(body, &mut pos)?),
                last_offset: i64::from_be_bytes(take(body, &mut pos)?),
            };
            e.push_batch(epoch, batch, last_timestamp_ms);
        }
        e.coordinator_epoch = coordinator_epoch;
        e.current_txn_first_offset = current_txn_first_offset;
        out.push(e);
    }
    (pos == body.len()).then_some((offset, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_checkpoint_round_trips_and_rejects_corruption() {
        let cp = LogCheckpoint {
            recovery_point: 42,
            log_start: 7,
            high_watermark: 40,
            position: None,
        };
        let enc = cp.encode();
        assert_eq!(LogCheckpoint::decode(&enc), Some(cp));
        let mut bad = enc.clone();
        bad[20] ^= 1;
        assert_eq!(LogCheckpoint::decode(&bad), None);
        let with_position = LogCheckpoint {
            position: Some(RecoveryPosition {
                segment_base: 30,
                position: 4096,
                next_offset: 42,
                index_count: 3,
                index_crc: 0xdead_beef,
                max_ts: 1_700_000_000_000,
                max_ts_offset: 41,
                bytes_since_index: 100,
            }),
            ..cp
        };
        assert_eq!(
            LogCheckpoint::decode(&with_position.encode()),
            Some(with_position)
        );
    }

    #[test]
    fn version_1_checkpoint_still_loads_without_position() {
        let body = "weir-log-checkpoint 1 42 7 40";
        let v1 = format!("{body} {:08x}\n", crc32c::crc32c(body.as_bytes()));
        let cp = LogCheckpoint::decode(v1.as_bytes()).expect("v1 decodes");
        assert_eq!(
            (
                cp.recovery_point,
                cp.log_start,
                cp.high_watermark,
                cp.position
            ),
            (42, 7, 40, None)
        );
    }

    #[test]
    fn leader_epochs_round_trip_and_reject_non_monotonic() {
        let e = vec![(1, 0), (3, 10), (4, 10)];
        assert_eq!(decode_leader_epochs(&encode_leader_epochs(&e)), Some(e));
        assert_eq!(decode_leader_epochs(b"0\n2\n3 10\n2 11\n"), None);
        assert_eq!(decode_leader_epochs(b"0\n999999999\n"), None);
    }

    #[test]
    fn producer_snapshot_round_trips_and_rejects_truncation() {
        let mut one = ProducerEntry::new(9, 2, 123);
        for n in 0..7 {
            one.push_batch(
                2,
                ProducerBatch {
                    first_sequence: n * 3,
                    last_sequence: n * 3 + 2,
                    first_offset: 100 + i64::from(n) * 3,
                    last_offset: 102 + i64::from(n) * 3,
                },
                123,
            );
        }
        let mut in_txn = ProducerEntry::new(10, 0, -1);
        in_txn.coordinator_epoch = 3;
        in_txn.current_txn_first_offset = 77;
        let e = vec![one, in_txn];
        let enc = encode_producer_snapshot(101, &e);
        assert_eq!(decode_producer_snapshot(&enc), Some((101, e)));
        assert_eq!(decode_producer_snapshot(&enc[..enc.len() - 1]), None);
        assert_eq!(
            producer_snapshot_offset(&producer_snapshot_name(101)),
            Some(101)
        );
    }

    #[test]
    fn version_2_producer_snapshot_loads_without_transactions() {
        // Version 2 layout: one producer (id 5, epoch 1, last timestamp 9) without batches.
        let mut b = Vec::new();
        b.extend_from_slice(PRODUCER_SNAPSHOT_MAGIC_V2);
        b.extend_from_slice(&40i64.to_be_bytes());
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&5i64.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&9i64.to_be_bytes());
        b.push(0);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        let (offset, entries) = decode_producer_snapshot(&b).expect("v2 decodes");
        assert_eq!(offset, 40);
        assert_eq!(entries, vec![ProducerEntry::new(5, 1, 9)]);
        assert!(!entries[0].has_open_txn());
    }
}

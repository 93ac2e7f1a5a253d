//! The aborted-transaction index of a segment (Kafka's `.txnindex`): one entry per transaction
//! whose abort marker lies in the segment, so that a read_committed fetch can tell its consumer
//! which producers' records to drop in the range it returns.
//!
//! The entries live in memory with their segment (`Segment::aborted`) and are written to
//! `<base>.txnindex` with the segment's other index files: when the segment is sealed (roll)
//! and at clean close. Like those files the index is trusted on open only for a segment that
//! recovery trusts (sealed, below the recovery point, index files valid). The active segment's
//! file is also replaced atomically with each recovery point (before the producer snapshot
//! taken there), so after a crash its aborts below the newest snapshot come from the file and
//! the replay from that snapshot (batch headers and markers) finds the rest; a sealed segment
//! recovery scans is rebuilt by replaying from the snapshot at or below its base. A segment
//! without aborted transactions has no file.
//!
//! File layout: magic `WEIRTXI1`, entry count (u32), CRC32C of the entries (u32), then the
//! entries in Kafka's `AbortedTxn` layout (34 bytes each: version i16 = 0, producer id i64,
//! first offset i64, last offset i64, last stable offset i64). Big-endian.

use std::io;
use std::path::Path;

use crate::producer_state::AbortedTxn;

const TXN_INDEX_MAGIC: &[u8; 8] = b"WEIRTXI1";
const TXN_INDEX_HEADER_BYTES: usize = 16;
const ABORTED_TXN_BYTES: usize = 2 + 8 + 8 + 8 + 8;
const ABORTED_TXN_VERSION: i16 = 0;

pub(crate) const TXN_INDEX_EXT: &str = "txnindex";

pub(crate) fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * ABORTED_TXN_BYTES);
    for e in entries {
        body.extend_from_slice(&ABORTED_TXN_VERSION.to_be_bytes());
        body.extend_from_slice(&e.producer_id.to_be_bytes());
        body.extend_from_slice(&e.first_offset.to_be_bytes());
        body.extend_from_slice(&e.last_offset.to_be_bytes());
        body.extend_from_slice(&e.last_stable_offset.to_be_bytes());
    }
    let mut out = Vec::with_capacity(TXN_INDEX_HEADER_BYTES + body.len());
    out.extend_from_slice(TXN_INDEX_MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// `None` if the bytes are torn, corrupt or inconsistent with the segment's offsets
/// `[base, next)`.
pub(crate) fn decode(b: &[u8], base: i64, next: i64) -> Option<Vec<AbortedTxn>> {
    if b.get(..8)? != TXN_INDEX_MAGIC {
        return None;
    }
    let count = usize::try_from(u32::from_be_bytes(b.get(8..12)?.try_into().ok()?)).ok()?;
    let crc = u32::from_be_bytes(b.get(12..16)?.try_into().ok()?);
    let body = b.get(TXN_INDEX_HEADER_BYTES..)?;
    // The count is checked against the bytes present before anything is allocated.
    if body.len() != count.checked_mul(ABORTED_TXN_BYTES)? || crc32c::crc32c(body) != crc {
        return None;
    }
    let i64_at = |e: &[u8], at: usize| -> Option<i64> {
        Some(i64::from_be_bytes(e.get(at..at + 8)?.try_into().ok()?))
    };
    let mut out = Vec::with_capacity(count);
    for e in body.chunks_exact(ABORTED_TXN_BYTES) {
        let version = i16::from_be_bytes(e.get(..2)?.try_into().ok()?);
        let t = AbortedTxn {
            producer_id: i64_at(e, 2)?,
            first_offset: i64_at(e, 10)?,
            last_offset: i64_at(e, 18)?,
            last_stable_offset: i64_at(e, 26)?,
        };
        // The marker lies in this segment; the transaction began at or before it.
        if version != ABORTED_TXN_VERSION
            || t.last_offset < base
            || t.last_offset >= next
            || t.first_offset > t.last_offset
            || t.producer_id < 0
        {
            return None;
        }
        out.push(t);
    }
    Some(out)
}

/// Writes the index (not synced: `segment::sync_index_files` does that before a recovery point
/// relies on it), or removes a stale file when there is nothing to index.
pub(crate) fn write(path: &Path, entries: &[AbortedTxn]) -> io::Result<()> {
    if entries.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    std::fs::write(path, encode(entries))
}

/// The segment's entries: empty without a file, `None` if the file is invalid.
pub(crate) fn load(path: &Path, base: i64, next: i64) -> Option<Vec<AbortedTxn>> {
    match std::fs::read(path) {
        Ok(b) => decode(&b, base, next),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Vec::new()),
        Err(_) => None,
    }
}

/// Kafka's `TransactionIndex.collectAbortedTxns` over one segment: the entries overlapping
/// `[fetch_offset, upper_bound)`. Returns true once an entry's last stable offset reaches the
/// upper bound: no later segment can hold an abort of a transaction in the range.
pub(crate) fn collect(
    entries: &[AbortedTxn],
    fetch_offset: i64,
    upper_bound: i64,
    out: &mut Vec<AbortedTxn>,
) -> bool {
    for e in entries {
        if e.last_offset >= fetch_offset && e.first_offset < upper_bound {
            out.push(*e);
        }
        if e.last_stable_offset >= upper_bound {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn round_trips_and_rejects_torn_or_foreign_entries() {
        let e = vec![txn(1, 0, 12, 13), txn(2, 5, 20, 21)];
        let enc = encode(&e);
        assert_eq!(enc.len(), TXN_INDEX_HEADER_BYTES + 2 * 34);
        assert_eq!(decode(&enc, 10, 30), Some(e.clone()));
        assert_eq!(decode(&enc[..enc.len() - 1], 10, 30), None);
        // An entry whose marker lies outside the segment is not this segment's.
        assert_eq!(decode(&enc, 13, 30), None);
        let mut bad = enc.clone();
        bad[20] ^= 1;
        assert_eq!(decode(&bad, 10, 30), None);
    }

    #[test]
    fn collect_returns_overlapping_entries_and_stops_at_the_upper_bound() {
        let e = [txn(1, 0, 4, 5), txn(2, 6, 9, 10), txn(3, 12, 15, 16)];
        let mut out = Vec::new();
        // Fetch [5, 10): only producer 2's transaction overlaps; the second entry's LSO (10)
        // reaches the bound, so the search is complete.
        assert!(collect(&e, 5, 10, &mut out));
        assert_eq!(out, vec![txn(2, 6, 9, 10)]);
        out.clear();
        // Fetch [0, 30): all three, and later segments may still hold more.
        assert!(!collect(&e, 0, 30, &mut out));
        assert_eq!(out.len(), 3);
    }
}

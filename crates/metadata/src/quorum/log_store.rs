//! The Raft log on local disk: `<data_dir>/metadata/`.
//!
//! - `raft-log`: append-only; each entry is `[u32 LE length][u32 LE crc32c of
//!   the payload][payload: the openraft entry as JSON]`. A torn tail (short
//!   header, short payload, bad CRC, undecodable payload) is cut on open, as
//!   Kafka's log recovery cuts at the first invalid batch. Every length read
//!   from disk is checked against [`ENTRY_BYTES_MAX`] before allocation.
//! - `vote.json`, `committed.json`, `purged.json`: small state written by
//!   temp file + fsync + rename + fsync of the directory, so a crash leaves
//!   either the old or the new value.
//!
//! Truncation (a conflict with a new leader) cuts the file at the first
//! removed entry. Purging (entries folded into a snapshot) records the purge
//! point first and rewrites the file without the purged prefix once that
//! prefix outweighs the live entries, so the file stays proportional to the
//! live log.
//!
//! After a failed write or fsync the store poisons itself and refuses all
//! further writes: the page cache may no longer match the disk, and pretending
//! otherwise could lose an acknowledged entry.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Entry, NodeId, TypeConfig};

/// The largest log entry we write or read: one controller decision. Far above
/// any real decision (a 10,000-partition CreateTopics is about 2 MiB).
pub const ENTRY_BYTES_MAX: u32 = 64 << 20;
/// The largest small-state file (vote, committed, purged, voters) we read.
pub const STATE_FILE_BYTES_MAX: u64 = 1 << 20;
const HEADER_BYTES: u64 = 8;
const LOG_FILE: &str = "raft-log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const PURGED_FILE: &str = "purged.json";
/// Rewrite the file once at least this many purged entries sit at its head
/// (and they outnumber the live ones).
const COMPACT_PURGED_ENTRIES_MIN: u64 = 1024;

/// The on-disk Raft log. Cheap to clone: clones share one open file.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

struct LogInner {
    dir: PathBuf,
    file: File,
    file_bytes: u64,
    /// Live entries by index, each with its offset in the file. A map, not a
    /// vector: openraft's storage suite appends with gaps, and we keep
    /// whatever openraft hands us.
    entries: BTreeMap<u64, (u64, Entry)>,
    /// Purged entries still physically at the head of the file.
    purged_in_file: u64,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    /// Set after a failed write: the reason every later write is refused.
    poisoned: Option<String>,
}

/// What opening found, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecovery {
    pub entries: u64,
    /// Bytes cut from a torn tail, 0 when the file was clean.
    pub torn_tail_bytes: u64,
}

fn io_err(context: impl std::fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

/// Writes `bytes` to `dir/name` so that a crash leaves the old or the new content.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    {
        let mut f = File::create(&tmp).map_err(|e| io_err(tmp.display(), e))?;
        io::Write::write_all(&mut f, bytes).map_err(|e| io_err(tmp.display(), e))?;
        f.sync_all().map_err(|e| io_err(tmp.display(), e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io_err(path.display(), e))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir.display(), e))
}

/// Reads a small JSON state file; `None` when it does not exist.
pub(crate) fn read_state<T: DeserializeOwned>(dir: &Path, name: &str) -> io::Result<Option<T>> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path.display(), e)),
    };
    let mut bytes = Vec::new();
    // Bounded read: one byte past the cap tells "too large" from "exactly at the cap".
    file.take(STATE_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(path.display(), e))?;
    if bytes.len() as u64 > STATE_FILE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: larger than {STATE_FILE_BYTES_MAX} bytes",
                path.display()
            ),
        ));
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

pub(crate) fn write_state<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_atomic(dir, name, &bytes)
}

/// Encodes one entry as it sits in the file.
fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(entry).map_err(io::Error::other)?;
    if payload.len() > ENTRY_BYTES_MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "log entry {} is {} bytes, above the {ENTRY_BYTES_MAX}-byte cap",
                entry.log_id,
                payload.len()
            ),
        ));
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Reads the entry at `offset`; `None` if what is there is not a whole valid entry.
fn read_entry_at(file: &File, offset: u64, file_bytes: u64) -> io::Result<Option<(Entry, u64)>> {
    if file_bytes - offset < HEADER_BYTES {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_BYTES as usize];
    file.read_exact_at(&mut header, offset)?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len > ENTRY_BYTES_MAX || u64::from(len) > file_bytes - offset - HEADER_BYTES {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_BYTES)?;
    if crc32c::crc32c(&payload) != crc {
        return Ok(None);
    }
    match serde_json::from_slice::<Entry>(&payload) {
        Ok(entry) => Ok(Some((entry, HEADER_BYTES + u64::from(len)))),
        Err(_) => Ok(None),
    }
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir`, cutting a torn tail.
    pub fn open(dir: &Path) -> io::Result<(LogStore, LogRecovery)> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir.display(), e))?;
        let vote = read_state(dir, VOTE_FILE)?;
        let committed = read_state(dir, COMMITTED_FILE)?;
        let last_purged: Option<LogId<NodeId>> = read_state(dir, PURGED_FILE)?;
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(path.display(), e))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| io_err(path.display(), e))?
            .len();

        let mut entries: BTreeMap<u64, (u64, Entry)> = BTreeMap::new();
        let mut purged_in_file = 0u64;
        let mut offset = 0u64;
        while offset < file_bytes {
            let Some((entry, bytes)) =
                read_entry_at(&file, offset, file_bytes).map_err(|e| io_err(path.display(), e))?
            else {
                break;
            };
            if last_purged
                .as_ref()
                .is_some_and(|p| entry.log_id.index <= p.index)
            {
                purged_in_file += 1;
            } else {
                // A later entry at an index already seen cannot come from our
                // writes (truncate cuts the file first): the file is corrupt.
                if entries
                    .last_key_value()
                    .is_some_and(|(&last, _)| last >= entry.log_id.index)
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: entry {} at byte {offset} does not come after the previous one: the metadata log is corrupt",
                            path.display(),
                            entry.log_id,
                        ),
                    ));
                }
                entries.insert(entry.log_id.index, (offset, entry));
            }
            offset += bytes;
        }
        let torn_tail_bytes = file_bytes - offset;
        if torn_tail_bytes > 0 {
            tracing::warn!(path = %path.display(), at = offset, torn_tail_bytes, "metadata log: cutting a torn tail");
            file.set_len(offset)
                .map_err(|e| io_err(path.display(), e))?;
            file.sync_all().map_err(|e| io_err(path.display(), e))?;
        }
        let recovery = LogRecovery {
            entries: entries.len() as u64,
            torn_tail_bytes,
        };
        let mut inner = LogInner {
            dir: dir.to_path_buf(),
            file,
            file_bytes: offset,
            entries,
            purged_in_file,
            last_purged,
            vote,
            committed,
            poisoned: None,
        };
        inner.maybe_compact()?;
        Ok((
            LogStore {
                inner: Arc::new(Mutex::new(inner)),
            },
            recovery,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panic while holding the lock leaves in-memory state we cannot trust
        // against the disk; stopping is the honest answer.
        self.inner.lock().expect("metadata log lock poisoned")
    }

    /// Runs blocking file work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LogInner) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut inner = store.lock();
            if let Some(reason) = &inner.poisoned {
                return Err(io::Error::other(format!(
                    "metadata log refuses writes after an earlier failure: {reason}"
                )));
            }
            let result = f(&mut inner);
            if let Err(e) = &result {
                inner.poisoned = Some(e.to_string());
            }
            result
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The committed log id last saved.
    pub fn committed(&self) -> Option<LogId<NodeId>> {
        self.lock().committed
    }
}

impl LogInner {
    fn append(&mut self, new: Vec<Entry>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(new.len());
        let mut after = self.entries.last_key_value().map(|(&last, _)| last);
        for entry in &new {
            if after.is_some_and(|after| entry.log_id.index <= after) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "append of entry {} at or below the last index {after:?}",
                        entry.log_id
                    ),
                ));
            }
            after = Some(entry.log_id.index);
            offsets.push(self.file_bytes + buf.len() as u64);
            encode_entry(entry, &mut buf)?;
        }
        self.file.write_all_at(&buf, self.file_bytes)?;
        self.file.sync_data()?;
        self.file_bytes += buf.len() as u64;
        for (offset, entry) in offsets.into_iter().zip(new) {
            self.entries.insert(entry.log_id.index, (offset, entry));
        }
        Ok(())
    }

    fn truncate(&mut self, since: u64) -> io::Result<()> {
        let Some((_, (offset, _))) = self.entries.range(since..).next() else {
            return Ok(());
        };
        let offset = *offset;
        self.file.set_len(offset)?;
        self.file.sync_all()?;
        self.file_bytes = offset;
        self.entries.split_off(&since);
        Ok(())
    }

    fn purge(&mut self, upto: LogId<NodeId>) -> io::Result<()> {
        if self
            .last_purged
            .as_ref()
            .is_some_and(|p| p.index >= upto.index)
        {
            return Ok(());
        }
        // The purge point is durable before any entry leaves the file, so a
        // crash in between only leaves entries that open() skips.
        write_state(&self.dir, PURGED_FILE, &Some(upto))?;
        self.last_purged = Some(upto);
        let live = self.entries.split_off(&(upto.index + 1));
        self.purged_in_file += self.entries.len() as u64;
        self.entries = live;
        self.maybe_compact()
    }

    /// Rewrites the file without its purged head when that head is large, or
    /// empties it when nothing live is left (so a later append after a
    /// snapshot install does not sit behind a gap).
    fn maybe_compact(&mut self) -> io::Result<()> {
        if self.purged_in_file == 0 {
            return Ok(());
        }
        if self.entries.is_empty() {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.file_bytes = 0;
            self.purged_in_file = 0;
            return Ok(());
        }
        if self.purged_in_file < COMPACT_PURGED_ENTRIES_MIN
            || self.purged_in_file < self.entries.len() as u64
        {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(self.entries.len());
        for (_, entry) in self.entries.values() {
            offsets.push(buf.len() as u64);
            encode_entry(entry, &mut buf)?;
        }
        write_atomic(&self.dir, LOG_FILE, &buf)?;
        let path = self.dir.join(LOG_FILE);
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(path.display(), e))?;
        self.file_bytes = buf.len() as u64;
        for ((offset, _), new_offset) in self.entries.values_mut().zip(offsets) {
            *offset = new_offset;
        }
        self.purged_in_file = 0;
        Ok(())
    }

    fn range<RB: RangeBounds<u64>>(&self, range: RB) -> Vec<Entry> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        // BTreeMap::range panics on an empty or inverted range; openraft may ask for one.
        let empty = match (start, end) {
            (Bound::Included(s), Bound::Excluded(e)) => s >= e,
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Excluded(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => {
                s >= e
            }
            _ => false,
        };
        if empty {
            return Vec::new();
        }
        self.entries
            .range((start, end))
            .map(|(_, (_, e))| e.clone())
            .collect()
    }
}

fn storage_write(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        // In memory: no disk read, so no need to leave the async worker.
        Ok(self.lock().range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock();
        let last_log_id = inner
            .entries
            .last_key_value()
            .map(|(_, (_, e))| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.blocking(move |inner| {
            write_state(&inner.dir, VOTE_FILE, &vote)?;
            inner.vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |inner| {
            if inner.committed == committed {
                return Ok(());
            }
            write_state(&inner.dir, COMMITTED_FILE, &committed)?;
            inner.committed = committed;
            Ok(())
        })
        .await
        .map_err(storage_write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self.blocking(move |inner| inner.append(entries)).await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(storage_write(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |inner| inner.truncate(log_id.index))
            .await
            .map_err(storage_write)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |inner| inner.purge(log_id))
            .await
            .map_err(storage_write)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite, log_id};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::quorum::state_machine::StateMachineStore;
    use crate::quorum::testing::TestImage;
    use crate::records::MetadataRecord;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(vec![MetadataRecord::NoOp]),
        }
    }

    fn indexes(store: &LogStore) -> Vec<(u64, u64)> {
        store
            .lock()
            .entries
            .values()
            .map(|(_, e)| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    fn log_bytes(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(LOG_FILE)).unwrap().len()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn appended_entries_vote_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (mut store, _) = LogStore::open(dir.path()).unwrap();
            store
                .blocking_append((1..=5).map(|i| entry(1, i)))
                .await
                .unwrap();
            store.save_vote(&Vote::new(3, 2)).await.unwrap();
            store.save_committed(Some(log_id(1, 1, 4))).await.unwrap();
        });
        let (mut store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            recovery,
            LogRecovery {
                entries: 5,
                torn_tail_bytes: 0
            }
        );
        assert_eq!(indexes(&store), (1..=5).map(|i| (1, i)).collect::<Vec<_>>());
        rt().block_on(async {
            assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
            assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 4)));
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id, Some(log_id(1, 1, 5)));
        });
    }

    #[test]
    fn torn_tail_is_cut_on_open_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (mut store, _) = LogStore::open(dir.path()).unwrap();
            store
                .blocking_append((1..=3).map(|i| entry(1, i)))
                .await
                .unwrap();
        });
        let clean_bytes = log_bytes(dir.path());
        // A crash in the middle of writing entry 4: its header and half its payload.
        let mut torn = Vec::new();
        encode_entry(&entry(1, 4), &mut torn).unwrap();
        torn.truncate(torn.len() / 2);
        OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap()
            .write_all(&torn)
            .unwrap();

        let (mut store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            recovery,
            LogRecovery {
                entries: 3,
                torn_tail_bytes: torn.len() as u64
            }
        );
        assert_eq!(
            log_bytes(dir.path()),
            clean_bytes,
            "the torn bytes are gone from the file"
        );
        rt().block_on(store.blocking_append([entry(1, 4)])).unwrap();
        drop(store);
        let (store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovery.torn_tail_bytes, 0);
        assert_eq!(indexes(&store), (1..=4).map(|i| (1, i)).collect::<Vec<_>>());
    }

    #[test]
    fn bad_checksum_in_last_entry_cuts_it() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (mut store, _) = LogStore::open(dir.path()).unwrap();
            store
                .blocking_append((1..=3).map(|i| entry(1, i)))
                .await
                .unwrap();
        });
        let path = dir.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovery.entries, 2);
        assert!(recovery.torn_tail_bytes > 0);
        assert_eq!(indexes(&store), vec![(1, 1), (1, 2)]);
    }

    #[test]
    fn huge_length_on_disk_is_refused_before_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut bytes = Vec::new();
        encode_entry(&entry(1, 1), &mut bytes).unwrap();
        // A header claiming 4 GiB, then a few bytes.
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        std::fs::write(&path, &bytes).unwrap();
        let (store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            recovery,
            LogRecovery {
                entries: 1,
                torn_tail_bytes: 16
            }
        );
        assert_eq!(indexes(&store), vec![(1, 1)]);
    }

    #[test]
    fn truncate_replaces_conflicting_entries_durably() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (mut store, _) = LogStore::open(dir.path()).unwrap();
            store
                .blocking_append((1..=5).map(|i| entry(1, i)))
                .await
                .unwrap();
            store.truncate(log_id(1, 1, 3)).await.unwrap();
            store
                .blocking_append([entry(2, 3), entry(2, 4)])
                .await
                .unwrap();
        });
        let (store, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![(1, 1), (1, 2), (2, 3), (2, 4)]);
    }

    #[test]
    fn purge_survives_reopen_and_the_file_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (mut store, _) = LogStore::open(dir.path()).unwrap();
            store
                .blocking_append((1..=2000).map(|i| entry(1, i)))
                .await
                .unwrap();
            let full = log_bytes(dir.path());
            store.purge(log_id(1, 1, 1500)).await.unwrap();
            assert!(
                log_bytes(dir.path()) < full / 3,
                "the purged head is rewritten away"
            );
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 1500)));
        });
        let (mut store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovery.entries, 500);
        assert_eq!(indexes(&store).first(), Some(&(1, 1501)));
        // Everything purged (a snapshot was installed far ahead), then the log resumes after it.
        rt().block_on(async {
            store.purge(log_id(2, 1, 3000)).await.unwrap();
            assert_eq!(log_bytes(dir.path()), 0);
            store.blocking_append([entry(2, 3001)]).await.unwrap();
        });
        drop(store);
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![(2, 3001)]);
        let state = rt().block_on(store.get_log_state()).unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 3000)));
    }

    #[test]
    fn append_going_backwards_is_refused_and_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (mut store, _) = LogStore::open(dir.path()).unwrap();
            store.blocking_append([entry(1, 1)]).await.unwrap();
            assert!(store.blocking_append([entry(1, 1)]).await.is_err());
            assert!(
                store.blocking_append([entry(1, 2)]).await.is_err(),
                "a poisoned store refuses writes"
            );
        });
        let (store, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![(1, 1)]);
    }

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore<TestImage>, tempfile::TempDir>
        for Builder
    {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore<TestImage>), StorageError<NodeId>>
        {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = LogStore::open(dir.path()).unwrap();
            let sm = StateMachineStore::open(dir.path()).unwrap();
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite for storage implementations.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }
}

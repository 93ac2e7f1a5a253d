//! The Raft state machine: applies committed entries to the metadata image
//! and keeps its snapshots in `<data_dir>/metadata/snapshot-<index>`.
//!
//! Snapshot file: `b"WEIRSNP1"`, `[u32 LE meta length][meta JSON]`,
//! `[u64 LE data length][data: the image's own snapshot bytes]`, `[u32 LE
//! crc32c of everything before]`. Written to a temp file, fsynced, renamed,
//! directory fsynced; older snapshot files are removed only after that.
//!
//! Readers see the image through `Arc<RwLock<_>>` (a std lock, held only for
//! the few microseconds of an apply or a read, never across an await) and
//! can wait for "applied ≥ N" on a `watch` of the applied index.

use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;

use super::log_store::{sync_dir, write_atomic};
use super::{Entry, ImageState, NodeId, TypeConfig};

const MAGIC: &[u8; 8] = b"WEIRSNP1";
/// The largest snapshot file we read or accept from a leader. The metadata
/// image of a large cluster is tens of MiB; this leaves room and bounds memory.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;
const META_BYTES_MAX: u32 = 1 << 20;
const SNAPSHOT_PREFIX: &str = "snapshot-";

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// One snapshot, as built or received.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    pub meta: Meta,
    pub data: Arc<Vec<u8>>,
}

/// The state machine side of the quorum's storage.
pub struct StateMachineStore<I: ImageState> {
    dir: PathBuf,
    image: Arc<RwLock<I>>,
    applied_tx: Arc<watch::Sender<u64>>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    /// Makes snapshot ids unique within this process's life.
    snapshot_seq: u64,
}

/// Builds one snapshot from a copy of the image taken when the builder was made.
pub struct SnapshotBuilder {
    dir: PathBuf,
    meta: Meta,
    data: Arc<Vec<u8>>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

fn snapshot_file_name(meta: &Meta) -> String {
    format!(
        "{SNAPSHOT_PREFIX}{:020}",
        meta.last_log_id.map(|l| l.index).unwrap_or(0)
    )
}

fn encode_snapshot(meta: &Meta, data: &[u8]) -> io::Result<Vec<u8>> {
    let meta_json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(8 + 4 + meta_json.len() + 8 + data.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta_json);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

fn decode_snapshot(path: &Path, bytes: &[u8]) -> io::Result<(Meta, Vec<u8>)> {
    if bytes.len() < MAGIC.len() + 4 + 8 + 4 || &bytes[..8] != MAGIC {
        return Err(invalid(path, "not a Weir metadata snapshot"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(invalid(path, "checksum mismatch"));
    }
    let meta_len = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    if meta_len > META_BYTES_MAX || 12 + meta_len as usize + 8 > body.len() {
        return Err(invalid(path, "bad metadata length"));
    }
    let meta_end = 12 + meta_len as usize;
    let meta: Meta =
        serde_json::from_slice(&body[12..meta_end]).map_err(|e| invalid(path, &e.to_string()))?;
    let data_len = u64::from_le_bytes(body[meta_end..meta_end + 8].try_into().expect("8 bytes"));
    if data_len != (body.len() - meta_end - 8) as u64 {
        return Err(invalid(path, "bad data length"));
    }
    Ok((meta, body[meta_end + 8..].to_vec()))
}

/// Writes a snapshot durably, then removes the older ones (never a newer
/// one: a build can finish after a newer snapshot was installed).
fn persist_snapshot(dir: &Path, meta: &Meta, data: &[u8]) -> io::Result<()> {
    let name = snapshot_file_name(meta);
    write_atomic(dir, &name, &encode_snapshot(meta, data)?)?;
    for old in list_snapshots(dir)? {
        // Zero-padded indexes: name order is index order.
        if old
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n < name.as_str())
        {
            std::fs::remove_file(&old)?;
        }
    }
    sync_dir(dir)
}

/// Snapshot files, newest (highest index) first.
fn list_snapshots(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(SNAPSHOT_PREFIX) && !name.ends_with(".tmp") {
            found.push(entry.path());
        }
    }
    found.sort();
    found.reverse();
    Ok(found)
}

fn read_snapshot_file(path: &Path) -> io::Result<(Meta, Vec<u8>)> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > SNAPSHOT_BYTES_MAX {
        return Err(invalid(
            path,
            &format!("larger than {SNAPSHOT_BYTES_MAX} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(SNAPSHOT_BYTES_MAX).read_to_end(&mut bytes)?;
    decode_snapshot(path, &bytes)
}

fn sm_write(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

impl<I: ImageState> StateMachineStore<I> {
    /// Opens the state machine in `dir`, restoring the newest readable snapshot.
    pub fn open(dir: &Path) -> io::Result<StateMachineStore<I>> {
        std::fs::create_dir_all(dir)?;
        let mut image = I::default();
        let mut last_applied = None;
        let mut last_membership = StoredMembership::default();
        let mut current = None;
        for path in list_snapshots(dir)? {
            match read_snapshot_file(&path).and_then(|(meta, data)| {
                let restored = I::from_snapshot(&data).map_err(|e| invalid(&path, &e))?;
                Ok((meta, data, restored))
            }) {
                Ok((meta, data, restored)) => {
                    image = restored;
                    last_applied = meta.last_log_id;
                    last_membership = meta.last_membership.clone();
                    current = Some(StoredSnapshot {
                        meta,
                        data: Arc::new(data),
                    });
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "metadata snapshot unreadable, trying an older one")
                }
            }
        }
        let applied = last_applied.map(|l| l.index).unwrap_or(0);
        Ok(StateMachineStore {
            dir: dir.to_path_buf(),
            image: Arc::new(RwLock::new(image)),
            applied_tx: Arc::new(watch::channel(applied).0),
            last_applied,
            last_membership,
            current: Arc::new(Mutex::new(current)),
            snapshot_seq: 0,
        })
    }

    pub fn image(&self) -> Arc<RwLock<I>> {
        self.image.clone()
    }

    /// The applied index (0 before any entry).
    pub fn applied_index_watch(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }
}

impl<I: ImageState> RaftStateMachine<TypeConfig> for StateMachineStore<I> {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<It>(&mut self, entries: It) -> Result<Vec<()>, StorageError<NodeId>>
    where
        It: IntoIterator<Item = Entry> + Send,
        It::IntoIter: Send,
    {
        let mut results = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Normal(records) if !records.is_empty() => {
                    let mut image = self.image.write().expect("image lock poisoned");
                    for record in &records {
                        // Every node skips the same bad record, so skipping keeps them in step.
                        if let Err(e) = image.apply_metadata_record(index, record) {
                            tracing::warn!(index, ?record, error = %e, "metadata record not applied");
                        }
                    }
                }
                EntryPayload::Normal(_) | EntryPayload::Blank => {
                    self.image
                        .write()
                        .expect("image lock poisoned")
                        .note_applied(index);
                }
                EntryPayload::Membership(membership) => {
                    self.image
                        .write()
                        .expect("image lock poisoned")
                        .note_applied(index);
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            self.last_applied = Some(entry.log_id);
            results.push(());
        }
        if let Some(last) = self.last_applied {
            self.applied_tx.send_replace(last.index);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        let data = self
            .image
            .read()
            .expect("image lock poisoned")
            .to_snapshot_bytes();
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.snapshot_seq),
            None => format!("none-{}", self.snapshot_seq),
        };
        SnapshotBuilder {
            dir: self.dir.clone(),
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.last_membership.clone(),
                snapshot_id,
            },
            data: Arc::new(data),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        if data.len() as u64 > SNAPSHOT_BYTES_MAX {
            return Err(sm_write(format!(
                "received snapshot is {} bytes, above {SNAPSHOT_BYTES_MAX}",
                data.len()
            )));
        }
        let image = I::from_snapshot(&data).map_err(sm_write)?;
        let data = Arc::new(data);
        let (dir, to_disk, on_disk_meta) = (self.dir.clone(), data.clone(), meta.clone());
        tokio::task::spawn_blocking(move || persist_snapshot(&dir, &on_disk_meta, &to_disk))
            .await
            .map_err(sm_write)?
            .map_err(sm_write)?;
        *self.image.write().expect("image lock poisoned") = image;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        *self.current.lock().expect("snapshot lock poisoned") = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        self.applied_tx
            .send_replace(self.last_applied.map(|l| l.index).unwrap_or(0));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.current.lock().expect("snapshot lock poisoned").clone();
        Ok(current.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data.as_ref().clone())),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (dir, meta, data) = (self.dir.clone(), self.meta.clone(), self.data.clone());
        let signature = self.meta.signature();
        let index = |m: &Meta| m.last_log_id.map(|l| l.index);
        let superseded = self
            .current
            .lock()
            .expect("snapshot lock poisoned")
            .as_ref()
            .is_some_and(|c| index(&c.meta) > index(&self.meta));
        if superseded {
            return Ok(Snapshot {
                meta: self.meta.clone(),
                snapshot: Box::new(Cursor::new(self.data.as_ref().clone())),
            });
        }
        tokio::task::spawn_blocking(move || persist_snapshot(&dir, &meta, &data))
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(
                    Some(signature.clone()),
                    AnyError::error(e.to_string()),
                )
            })?
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), AnyError::new(&e)))?;
        *self.current.lock().expect("snapshot lock poisoned") = Some(StoredSnapshot {
            meta: self.meta.clone(),
            data: self.data.clone(),
        });
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.as_ref().clone())),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry as RaftEntry};

    use super::*;
    use crate::quorum::testing::TestImage;
    use crate::records::MetadataRecord;

    fn topic_entry(index: u64, name: &str) -> Entry {
        RaftEntry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(vec![MetadataRecord::Topic {
                name: name.into(),
                topic_id: [1; 16],
            }]),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn built_snapshot_restores_the_image_on_open() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let mut sm = StateMachineStore::<TestImage>::open(dir.path()).unwrap();
            let applied = sm.applied_index_watch();
            sm.apply([topic_entry(1, "a"), topic_entry(2, "b")])
                .await
                .unwrap();
            assert_eq!(*applied.borrow(), 2);
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            // Applied after the snapshot: not in it, replayed from the log in real use.
            sm.apply([topic_entry(3, "c")]).await.unwrap();
        });
        let mut sm = StateMachineStore::<TestImage>::open(dir.path()).unwrap();
        let image = sm.image();
        assert_eq!(
            image.read().unwrap().topics.keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(*sm.applied_index_watch().borrow(), 2);
        let (applied, _) = rt().block_on(sm.applied_state()).unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
    }

    #[test]
    fn a_corrupt_newest_snapshot_falls_back_to_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let mut sm = StateMachineStore::<TestImage>::open(dir.path()).unwrap();
            sm.apply([topic_entry(1, "a")]).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
        });
        let older = list_snapshots(dir.path()).unwrap()[0].clone();
        let kept = std::fs::read(&older).unwrap();
        rt().block_on(async {
            let mut sm = StateMachineStore::<TestImage>::open(dir.path()).unwrap();
            sm.apply([topic_entry(2, "b")]).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
        });
        // The older file was removed after the newer one was durable; put it
        // back and break the newer one, as a bad sector would.
        std::fs::write(&older, kept).unwrap();
        let newest = list_snapshots(dir.path()).unwrap()[0].clone();
        assert_ne!(newest, older);
        let mut bytes = std::fs::read(&newest).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&newest, bytes).unwrap();

        let sm = StateMachineStore::<TestImage>::open(dir.path()).unwrap();
        assert_eq!(
            sm.image().read().unwrap().topics.keys().collect::<Vec<_>>(),
            ["a"]
        );
    }

    #[test]
    fn truncated_snapshot_file_is_refused_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::default();
        let bytes = encode_snapshot(&meta, b"{}").unwrap();
        for cut in [0, 4, 11, 20, bytes.len() - 1] {
            assert!(
                decode_snapshot(Path::new("x"), &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // A meta length far past the file.
        let mut lying = bytes.clone();
        lying[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_snapshot(Path::new("x"), &lying).is_err());
        assert!(decode_snapshot(Path::new("x"), &bytes).is_ok());
        drop(dir);
    }
}

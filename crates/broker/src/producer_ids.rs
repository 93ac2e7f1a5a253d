//! Producer ids for InitProducerId. An id is never handed out twice, even across kill -9: ids
//! come in blocks, and a block is reserved durably (its end written to disk and fsynced) before
//! any of its ids is given to a client. A crash wastes the rest of the current block, as in
//! Kafka (`ProducerIdManager`, blocks of 1000 from the controller).
//!
//! Where blocks come from is behind [`ProducerIdSource`]: a file in the data directory on a
//! single node; the metadata quorum once there is a cluster.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::BrokerError;

/// Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A range of producer ids reserved for this broker: `first .. first + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub size: i64,
}

/// Hands out blocks of producer ids that no one has been given before.
pub trait ProducerIdSource: Send + Sync {
    /// Reserves the next block. When this returns, the reservation survives a crash: no later
    /// call, in this process or after a restart, returns an overlapping block.
    fn next_block(&self) -> Result<ProducerIdBlock, BrokerError>;
}

/// Blocks reserved in a file under the data directory's `meta/`.
pub struct LocalProducerIdSource {
    path: PathBuf,
    /// The first id not yet reserved (what the file says).
    next_unreserved: Mutex<i64>,
}

const FILE_NAME: &str = "producer-ids";
const FILE_HEADER: &str = "weir-producer-ids 1";

fn encode(next_unreserved: i64) -> Vec<u8> {
    let body = format!("{FILE_HEADER} {next_unreserved}");
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body} {crc:08x}\n").into_bytes()
}

fn decode(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?.trim_end();
    let (body, crc) = s.rsplit_once(' ')?;
    if u32::from_str_radix(crc, 16).ok()? != crc32c::crc32c(body.as_bytes()) {
        return None;
    }
    let next = body.strip_prefix(FILE_HEADER)?.strip_prefix(' ')?;
    next.parse().ok().filter(|n| *n >= 0)
}

impl LocalProducerIdSource {
    /// Reads the reservation file in `meta_dir` (absent: nothing reserved yet). A file that
    /// does not validate is refused rather than guessed at: guessing low could reuse ids.
    pub fn open(meta_dir: &Path) -> Result<LocalProducerIdSource, BrokerError> {
        let path = meta_dir.join(FILE_NAME);
        let next = match std::fs::read(&path) {
            Ok(b) => decode(&b).ok_or_else(|| {
                BrokerError::Corrupt(format!(
                    "{} does not validate; refusing to guess which producer ids were handed out",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(LocalProducerIdSource {
            path,
            next_unreserved: Mutex::new(next),
        })
    }
}

impl LocalProducerIdSource {
    /// The first id not yet reserved: every id below it may have been handed out.
    pub fn next_unreserved(&self) -> i64 {
        *self
            .next_unreserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl ProducerIdSource for LocalProducerIdSource {
    fn next_block(&self) -> Result<ProducerIdBlock, BrokerError> {
        let mut next = self
            .next_unreserved
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let first = *next;
        let end = first
            .checked_add(PRODUCER_ID_BLOCK_SIZE)
            .ok_or_else(|| BrokerError::Internal("producer ids exhausted".into()))?;
        weir_log::durable::write_file_atomically(&self.path, &encode(end))?;
        *next = end;
        Ok(ProducerIdBlock {
            first,
            size: PRODUCER_ID_BLOCK_SIZE,
        })
    }
}

/// Gives out ids from the current block, fetching the next block when it runs out.
pub struct ProducerIdManager {
    /// Replaced once, when the broker joins the metadata quorum.
    source: std::sync::RwLock<Box<dyn ProducerIdSource>>,
    /// Next id to give and the end (exclusive) of the current block.
    current: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    pub fn new(source: Box<dyn ProducerIdSource>) -> ProducerIdManager {
        ProducerIdManager {
            source: std::sync::RwLock::new(source),
            current: Mutex::new((0, 0)),
        }
    }

    /// Takes blocks from `source` from now on; the current block is given out first.
    pub fn set_source(&self, source: Box<dyn ProducerIdSource>) {
        *self.source.write().unwrap_or_else(|p| p.into_inner()) = source;
    }

    /// A producer id no client has had. Once every block size ids, this waits for a new block
    /// (a durable write, or the controller's answer).
    ///
    /// The wait happens outside the lock: callers are request handlers on the async runtime's
    /// workers, and one blocked on this lock holds its worker for as long as the block takes.
    /// With every worker so held, the quorum could never answer and the broker stopped
    /// serving altogether (seen with four idempotent producers starting at once on two cores).
    /// Two requests that both find the block used up both fetch one; the later block is
    /// dropped, which skips ids but never repeats one.
    pub fn generate(&self) -> Result<i64, BrokerError> {
        for _ in 0..GENERATE_ATTEMPTS_MAX {
            {
                let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
                if cur.0 < cur.1 {
                    let id = cur.0;
                    cur.0 += 1;
                    return Ok(id);
                }
            }
            let block = self
                .source
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .next_block()?;
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if cur.0 >= cur.1 {
                *cur = (block.first, block.first + block.size);
            }
        }
        // Only if other requests used up every block this one fetched, again and again.
        Err(BrokerError::CoordinatorNotAvailable(
            "producer ids are being handed out faster than blocks arrive; retry".into(),
        ))
    }
}

/// How many blocks one `generate` may fetch before it gives up (retriably).
const GENERATE_ATTEMPTS_MAX: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that, like the quorum's, needs other tasks on the runtime to run before it can
    /// answer.
    struct NeedsTheRuntime;

    impl ProducerIdSource for NeedsTheRuntime {
        fn next_block(&self) -> Result<ProducerIdBlock, BrokerError> {
            static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let _ = tx.send(());
            });
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(rx))
                .map_err(|e| BrokerError::Internal(e.to_string()))?;
            let first = NEXT.fetch_add(10, std::sync::atomic::Ordering::SeqCst);
            Ok(ProducerIdBlock { first, size: 10 })
        }
    }

    #[test]
    fn many_requests_at_once_while_a_block_is_fetched_do_not_stall_the_runtime() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let ids = runtime.block_on(async {
                let m = std::sync::Arc::new(ProducerIdManager::new(Box::new(NeedsTheRuntime)));
                let tasks: Vec<_> = (0..16)
                    .map(|_| {
                        let m = m.clone();
                        tokio::spawn(async move { m.generate() })
                    })
                    .collect();
                let mut ids = Vec::new();
                for t in tasks {
                    ids.push(t.await.expect("task").expect("id"));
                }
                ids
            });
            let _ = done_tx.send(ids);
        });
        let ids = done_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("generate stalled the runtime");
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "an id was given twice: {ids:?}");
    }

    #[test]
    fn ids_are_unique_across_reopen_and_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let m = ProducerIdManager::new(Box::new(
                LocalProducerIdSource::open(dir.path()).expect("open"),
            ));
            // Less than a block: a reopen (or a crash) must still skip what was reserved.
            for _ in 0..(PRODUCER_ID_BLOCK_SIZE + 7) {
                assert!(seen.insert(m.generate().expect("id")));
            }
        }
        assert_eq!(seen.len(), 3 * (PRODUCER_ID_BLOCK_SIZE as usize + 7));
    }

    #[test]
    fn damaged_reservation_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = ProducerIdManager::new(Box::new(
            LocalProducerIdSource::open(dir.path()).expect("open"),
        ));
        m.generate().expect("id");
        let path = dir.path().join(FILE_NAME);
        let mut b = std::fs::read(&path).expect("read");
        b[20] ^= 1;
        std::fs::write(&path, b).expect("write");
        assert!(LocalProducerIdSource::open(dir.path()).is_err());
        assert_eq!(decode(&encode(4000)), Some(4000));
    }
}

//! A filesystem that can lose power: the test rig behind Weir's power-loss
//! tests.
//!
//! Killing a process cannot test what survives a power cut, because the
//! kernel's page cache survives the process. `CrashFs` mounts a FUSE
//! filesystem whose every write and directory change is remembered as not
//! yet durable until the program fsyncs the file or the directory that holds
//! the entry. [`CrashFs::cut`] then forgets all of that at once, as a power
//! cut would, and the program can be restarted on the same mount to see what
//! it makes of the state it finds.
//!
//! Layout:
//! - [`model`] owns the rules and is sans-I/O: namespace, durable shadow,
//!   undo records, the cut itself. Its unit tests state the rules.
//! - `fuse` (private) answers the kernel from the model, keeping file bytes
//!   in a backing directory (one file per inode).
//! - [`CrashFs`] is the handle a test holds: mount, cut, totals, unmount on
//!   drop.
//!
//! Test-only: nothing here is careful about speed, and it trusts the one
//! process using the mount.

pub mod model;

mod fuse;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use model::{CutReport, Tear, Totals};

/// Why the filesystem could not be mounted or cut.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// FUSE cannot work on this machine; the reason says what is missing.
    #[error("FUSE unavailable: {0}")]
    Unavailable(String),
    #[error("mount at {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model: {0}")]
    Model(#[from] model::FsError),
    #[error(
        "{handles} file handles still open {waited_ms} ms after the cut was asked for: is the process using the mount still alive?"
    )]
    HandlesOpen { handles: u64, waited_ms: u128 },
}

/// Says why FUSE can't be used here, or `Ok` when it can: `/dev/fuse` must
/// exist and `fusermount3` (Debian's `fuse3` package) must be on the PATH.
pub fn available() -> Result<(), Error> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::Unavailable("/dev/fuse does not exist".into()));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("fusermount3").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Err(Error::Unavailable(
            "fusermount3 is not on the PATH (install the fuse3 package)".into(),
        ));
    }
    Ok(())
}

/// A mounted crash-simulating filesystem; unmounted on drop.
pub struct CrashFs {
    model: Arc<Mutex<model::Model<fuse::DirStore>>>,
    /// See [`CrashFs::set_fsync_delay`].
    fsync_delay_ms: Arc<AtomicU64>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

/// How long a cut waits for the kernel to release the files of a killed
/// process before it refuses.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

impl CrashFs {
    /// Mounts an empty filesystem at `mountpoint` (an existing empty
    /// directory), keeping file bytes under `backing` (created if needed).
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<CrashFs, Error> {
        available()?;
        let store = fuse::DirStore::new(backing).map_err(|source| Error::Mount {
            path: backing.to_path_buf(),
            source,
        })?;
        let model = Arc::new(Mutex::new(model::Model::new(store)));
        let fsync_delay_ms = Arc::new(AtomicU64::new(0));
        let session =
            fuse::mount(model.clone(), fsync_delay_ms.clone(), mountpoint).map_err(|source| {
                Error::Mount {
                    path: mountpoint.to_path_buf(),
                    source,
                }
            })?;
        Ok(CrashFs {
            model,
            fsync_delay_ms,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// A slow disk: from now on every fsync (of a file or a directory) takes at least
    /// `delay` before it returns; `Duration::ZERO` makes fsync fast again. Only fsync
    /// waits, so what is slow is exactly what a durable write waits for.
    pub fn set_fsync_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.fsync_delay_ms.store(ms, Ordering::Relaxed);
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// A power cut. Call it only once every process using the mount is dead:
    /// it waits (a bounded time) for the kernel to release their files, then
    /// forgets every unsynced change (see [`model::Model::cut`]).
    pub fn cut(&self, tear: Tear) -> Result<CutReport, Error> {
        let started = Instant::now();
        loop {
            let mut model = self.model.lock().expect("crashfs model poisoned");
            let handles = model.open_handles();
            if handles == 0 {
                return Ok(model.cut(tear)?);
            }
            drop(model);
            if started.elapsed() > RELEASE_WAIT {
                return Err(Error::HandlesOpen {
                    handles,
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Directory entries a cut would change now (see
    /// [`model::Model::unsynced_entries`]).
    pub fn unsynced_entries(&self) -> Vec<String> {
        self.model
            .lock()
            .expect("crashfs model poisoned")
            .unsynced_entries()
    }

    /// Totals since the mount: cuts, syncs, and everything cuts forgot.
    pub fn totals(&self) -> Totals {
        self.model.lock().expect("crashfs model poisoned").totals()
    }
}

impl Drop for CrashFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

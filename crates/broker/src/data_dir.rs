//! The data directory's identity and ownership: one process per directory, and
//! a directory that says which node and cluster wrote it.
//!
//! Two things protect the data here, both modelled on Kafka's log directories:
//! - An exclusive `flock` on `<data_dir>/.lock`, held for the life of the
//!   process. Two brokers on one directory would each assign the same offsets
//!   and overwrite each other's acknowledged records; the second one must not
//!   start. The holder writes its pid into the file so the refusal can name it.
//! - `<data_dir>/meta.properties` (Kafka's file name and keys: `version`,
//!   `node.id`, `cluster.id`), written once when the directory is first used
//!   and checked at every start. A directory written as node 1 started as
//!   node 7 would hand node 1's partitions to the wrong broker once there is a
//!   cluster, so a mismatch refuses to start.
//!
//! This module does file I/O only at open; nothing here runs on a request path.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use weir_log::durable;

use crate::error::BrokerError;

/// Name of the lock file inside the data directory (Kafka's is also `.lock`).
pub const LOCK_FILE: &str = ".lock";
/// Name of the identity file inside the data directory.
pub const META_PROPERTIES_FILE: &str = "meta.properties";
/// The `version` written to `meta.properties`. Kafka's KRaft directories use 1.
const META_PROPERTIES_VERSION: &str = "1";
/// The cluster id file of Weir versions before `meta.properties`; read once to
/// adopt its id, never written.
const LEGACY_CLUSTER_FILE: &str = "meta/cluster.json";
/// A `meta.properties` larger than this is not one we wrote: refuse rather
/// than read an unbounded file into memory.
const META_PROPERTIES_BYTES_MAX: u64 = 64 * 1024;

/// An opened, locked data directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    node_id: i32,
    cluster_id: String,
    /// Holds the `flock`; the lock lives exactly as long as this descriptor.
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed, takes its lock, and checks (or, on
    /// first use, writes) its identity. `configured_cluster_id` may be empty:
    /// the stored id is used, or a new one is made.
    pub fn open(
        path: &Path,
        node_id: i32,
        configured_cluster_id: &str,
    ) -> Result<DataDir, BrokerError> {
        durable::create_dir_all(path)?;
        let lock = lock_exclusive(path)?;
        let meta_path = path.join(META_PROPERTIES_FILE);
        let cluster_id = match read_meta_properties(&meta_path)? {
            Some(stored) => {
                check_identity(path, &stored, node_id, configured_cluster_id)?;
                stored.cluster_id
            }
            None => {
                let cluster_id = match legacy_cluster_id(path)? {
                    Some(id) => {
                        if !configured_cluster_id.is_empty() && configured_cluster_id != id {
                            return Err(cluster_mismatch(path, &id, configured_cluster_id));
                        }
                        id
                    }
                    None if configured_cluster_id.is_empty() => new_cluster_id(),
                    None => configured_cluster_id.to_string(),
                };
                validate_cluster_id(&cluster_id)?;
                write_meta_properties(
                    path,
                    &MetaProperties {
                        node_id,
                        cluster_id: cluster_id.clone(),
                    },
                )?;
                tracing::info!(dir = %path.display(), node_id, %cluster_id,
                    "data directory initialised ({META_PROPERTIES_FILE} written)");
                cluster_id
            }
        };
        Ok(DataDir {
            path: path.to_path_buf(),
            node_id,
            cluster_id,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Records that this directory belongs to `cluster_id` from now on: a
    /// node joining a running cluster takes the cluster's id (the metadata
    /// quorum's), instead of the one it made up at first start.
    pub fn adopt_cluster_id(&self, cluster_id: &str) -> Result<(), BrokerError> {
        validate_cluster_id(cluster_id)?;
        write_meta_properties(
            &self.path,
            &MetaProperties {
                node_id: self.node_id,
                cluster_id: cluster_id.to_string(),
            },
        )?;
        tracing::info!(dir = %self.path.display(), %cluster_id,
            "joined the cluster: {META_PROPERTIES_FILE} now names its id");
        Ok(())
    }
}

/// What `meta.properties` records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MetaProperties {
    node_id: i32,
    cluster_id: String,
}

fn lock_exclusive(dir: &Path) -> Result<File, BrokerError> {
    let lock_path = dir.join(LOCK_FILE);
    // No truncation on open: until we hold the lock, the pid inside belongs to
    // whoever does.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)?;
    if let Err(errno) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if errno != rustix::io::Errno::WOULDBLOCK {
            return Err(BrokerError::DataDir(format!(
                "cannot lock {}: {errno}",
                lock_path.display()
            )));
        }
        let mut holder = String::new();
        let _ = Read::by_ref(&mut file).take(64).read_to_string(&mut holder);
        let holder = holder.trim();
        let holder = if holder.is_empty() {
            "unknown pid".to_string()
        } else {
            format!("pid {holder}")
        };
        return Err(BrokerError::DataDir(format!(
            "data directory {} is in use by another process ({holder} holds {}); \
             stop that broker or give this one another --data-dir",
            dir.display(),
            lock_path.display()
        )));
    }
    // Ours now: record our pid for the next process that is refused.
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

fn check_identity(
    dir: &Path,
    stored: &MetaProperties,
    node_id: i32,
    configured_cluster_id: &str,
) -> Result<(), BrokerError> {
    if stored.node_id != node_id {
        return Err(BrokerError::DataDir(format!(
            "data directory {} belongs to node {} (its {META_PROPERTIES_FILE} says node.id={}), \
             but this broker is configured as node {node_id}; start it with --node-id {} \
             or use another --data-dir",
            dir.display(),
            stored.node_id,
            stored.node_id,
            stored.node_id
        )));
    }
    if !configured_cluster_id.is_empty() && configured_cluster_id != stored.cluster_id {
        return Err(cluster_mismatch(
            dir,
            &stored.cluster_id,
            configured_cluster_id,
        ));
    }
    Ok(())
}

fn cluster_mismatch(dir: &Path, stored: &str, configured: &str) -> BrokerError {
    BrokerError::DataDir(format!(
        "data directory {} belongs to cluster {stored}, but this broker is configured \
         for cluster {configured}; fix cluster_id or use another --data-dir",
        dir.display()
    ))
}

fn validate_cluster_id(id: &str) -> Result<(), BrokerError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(BrokerError::DataDir(format!(
            "cluster id '{id}' is not valid: use 1-64 characters from A-Z, a-z, 0-9, '-' and '_'"
        )))
    }
}

/// Reads `meta.properties`; `None` if the directory has none yet.
fn read_meta_properties(path: &Path) -> Result<Option<MetaProperties>, BrokerError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut text = String::new();
    file.take(META_PROPERTIES_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| corrupt_meta(path, &format!("not readable as text: {e}")))?;
    if text.len() as u64 > META_PROPERTIES_BYTES_MAX {
        return Err(corrupt_meta(path, "larger than 64 KiB"));
    }
    parse_meta_properties(&text)
        .map(Some)
        .map_err(|reason| corrupt_meta(path, &reason))
}

fn corrupt_meta(path: &Path, reason: &str) -> BrokerError {
    BrokerError::DataDir(format!(
        "{} is not valid ({reason}); restore it or move the data directory aside",
        path.display()
    ))
}

/// Java properties as Kafka writes them: `key=value` lines, `#` comments.
fn parse_meta_properties(text: &str) -> Result<MetaProperties, String> {
    let mut props = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line '{line}' is not key=value"));
        };
        props.insert(key.trim(), value.trim());
    }
    match props.get("version") {
        Some(&META_PROPERTIES_VERSION) => {}
        Some(v) => return Err(format!("version {v} is not supported (expected 1)")),
        None => return Err("no version".into()),
    }
    let node_id = props
        .get("node.id")
        .ok_or("no node.id")?
        .parse::<i32>()
        .map_err(|e| format!("node.id: {e}"))?;
    let cluster_id = props.get("cluster.id").ok_or("no cluster.id")?.to_string();
    validate_cluster_id(&cluster_id).map_err(|e| e.to_string())?;
    Ok(MetaProperties {
        node_id,
        cluster_id,
    })
}

fn render_meta_properties(meta: &MetaProperties) -> String {
    format!(
        "# Written by weir when this data directory was first used; checked at every start.\n\
         version={META_PROPERTIES_VERSION}\nnode.id={}\ncluster.id={}\n",
        meta.node_id, meta.cluster_id
    )
}

/// Writes `meta.properties` durably: temp file, fsync, rename, directory fsync.
fn write_meta_properties(dir: &Path, meta: &MetaProperties) -> Result<(), BrokerError> {
    durable::write_file_atomically(
        &dir.join(META_PROPERTIES_FILE),
        render_meta_properties(meta).as_bytes(),
    )?;
    Ok(())
}

fn legacy_cluster_id(dir: &Path) -> Result<Option<String>, BrokerError> {
    let path = dir.join(LEGACY_CLUSTER_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let stored: BTreeMap<String, String> = serde_json::from_str(&text)
        .map_err(|e| BrokerError::Corrupt(format!("{}: {e}", path.display())))?;
    Ok(stored.get("cluster_id").cloned())
}

/// A new cluster id: 16 random bytes as hex (Kafka uses base64 of a UUID;
/// clients treat the id as opaque).
fn new_cluster_id() -> String {
    crate::topics::hex(&crate::topics::random_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_a_locked_dir_names_the_dir_and_holder_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDir::open(tmp.path(), 1, "").unwrap();
        let err = DataDir::open(tmp.path(), 1, "").unwrap_err().to_string();
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        DataDir::open(tmp.path(), 1, "").expect("lock is released with the DataDir");
    }

    #[test]
    fn node_id_is_stored_and_a_different_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = DataDir::open(tmp.path(), 1, "")
            .unwrap()
            .cluster_id()
            .to_string();
        let err = DataDir::open(tmp.path(), 7, "").unwrap_err().to_string();
        assert!(err.contains("node 1") && err.contains("node 7"), "{err}");
        let again = DataDir::open(tmp.path(), 1, "").unwrap();
        assert_eq!(again.cluster_id(), cluster);
    }

    #[test]
    fn configured_cluster_id_must_match_the_stored_one() {
        let tmp = tempfile::tempdir().unwrap();
        drop(DataDir::open(tmp.path(), 1, "alpha").unwrap());
        let err = DataDir::open(tmp.path(), 1, "beta")
            .unwrap_err()
            .to_string();
        assert!(err.contains("alpha") && err.contains("beta"), "{err}");
        assert_eq!(
            DataDir::open(tmp.path(), 1, "alpha").unwrap().cluster_id(),
            "alpha"
        );
    }

    #[test]
    fn legacy_cluster_json_is_adopted() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("meta")).unwrap();
        fs::write(
            tmp.path().join(LEGACY_CLUSTER_FILE),
            r#"{"cluster_id":"0123abcd"}"#,
        )
        .unwrap();
        let dir = DataDir::open(tmp.path(), 3, "").unwrap();
        assert_eq!(dir.cluster_id(), "0123abcd");
        let text = fs::read_to_string(tmp.path().join(META_PROPERTIES_FILE)).unwrap();
        assert_eq!(
            parse_meta_properties(&text).unwrap(),
            MetaProperties {
                node_id: 3,
                cluster_id: "0123abcd".into()
            }
        );
    }

    #[test]
    fn damaged_meta_properties_is_refused_not_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join(META_PROPERTIES_FILE),
            "version=1\nnode.id=x\n",
        )
        .unwrap();
        let err = DataDir::open(tmp.path(), 1, "").unwrap_err().to_string();
        assert!(err.contains("node.id"), "{err}");
        assert_eq!(
            fs::read_to_string(tmp.path().join(META_PROPERTIES_FILE)).unwrap(),
            "version=1\nnode.id=x\n"
        );
    }
}

//! The durability model, without I/O of its own: a namespace of inodes with
//! two views of every directory (what a reader sees now, and what a power cut
//! would leave) and, per file, enough to undo every write since its last
//! fsync.
//!
//! The rules it enforces are the POSIX worst case, which is what a program
//! may rely on and no more:
//! - a file's data is durable once the file is fsynced (or fdatasynced);
//! - a directory entry (create, mkdir, rename, unlink, rmdir) is durable once
//!   the directory that holds it is fsynced. A file's own fsync does not make
//!   its name durable, nor does a directory's fsync make its parent's entry
//!   for it durable.
//!
//! File bytes live in a [`Store`] keyed by inode number, so the same model
//! runs over a backing directory under FUSE and over memory in unit tests.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::time::SystemTime;

/// Inode number of the root directory, as FUSE numbers it.
pub const ROOT_INO: u64 = 1;

/// Bytes of files, by inode number. The model decides what they should be;
/// the store only keeps them.
pub trait Store {
    /// Up to `len` bytes from `offset`; fewer at the end of the file.
    fn read(&mut self, ino: u64, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Writes `data` at `offset`, growing the file (with zeros) if needed.
    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&mut self, ino: u64, len: u64) -> io::Result<()>;
    /// Forgets the inode's bytes.
    fn remove(&mut self, ino: u64) -> io::Result<()>;
}

/// File bytes in memory, for unit tests.
#[derive(Default, Debug)]
pub struct MemStore {
    files: HashMap<u64, Vec<u8>>,
}

impl Store for MemStore {
    fn read(&mut self, ino: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.files.get(&ino).map(Vec::as_slice).unwrap_or(&[]);
        let start = (offset as usize).min(file.len());
        let end = start.saturating_add(len).min(file.len());
        Ok(file[start..end].to_vec())
    }
    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = self.files.entry(ino).or_default();
        let end = offset as usize + data.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn set_len(&mut self, ino: u64, len: u64) -> io::Result<()> {
        self.files.entry(ino).or_default().resize(len as usize, 0);
        Ok(())
    }
    fn remove(&mut self, ino: u64) -> io::Result<()> {
        self.files.remove(&ino);
        Ok(())
    }
}

/// Why an operation was refused; the FUSE shell maps each to an errno.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument")]
    Invalid,
    #[error("store: {0}")]
    Io(#[from] io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// What a cut does to the last unsynced write of each file.
#[derive(Clone, Copy, Debug)]
pub enum Tear {
    /// Every file goes back to its last fsynced content.
    Never,
    /// Every file whose last unsynced write was at its end keeps all its
    /// unsynced changes except the second half of that last write: the disk
    /// got that far when the power went. Other files go back to their last
    /// fsynced content.
    Always,
    /// Per file, [`Tear::Always`] or [`Tear::Never`] chosen by a generator
    /// seeded with this value, so a failing cut can be replayed.
    Seeded(u64),
}

/// What one cut threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Directory entries that differed between the live and the durable view
    /// (an unsynced create, unlink, or one side of a rename) in directories
    /// that survived.
    pub dir_ops_forgotten: u64,
    /// Files whose content went back (fully or torn) to an older state.
    pub files_rolled_back: u64,
    /// Files that kept a torn last write.
    pub writes_torn: u64,
    /// Bytes of unsynced data dropped from files that survived.
    pub bytes_dropped: u64,
    /// Inodes that no durable entry reached any more and so vanished.
    pub inodes_lost: u64,
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    perm: u16,
    mtime: SystemTime,
    /// Live entries (directories only).
    entries: BTreeMap<OsString, u64>,
    /// The entries a cut would leave (directories only): the live entries as
    /// of the last fsync of this directory.
    durable_entries: BTreeMap<OsString, u64>,
    /// Live entries naming this inode.
    links: u32,
    /// Durable entries naming this inode.
    durable_links: u32,
    /// Open file handles (files and directories).
    open: u32,
    /// Live size in bytes (files only).
    len: u64,
    /// Size as of the last fsync.
    durable_len: u64,
    /// Bytes of the durable content overwritten or cut off since the last
    /// fsync, oldest first: replayed newest first, they restore it.
    undo: Vec<(u64, Vec<u8>)>,
    /// The last write since the last fsync, `(offset, length)`; what a torn
    /// cut tears.
    last_write: Option<(u64, u64)>,
    /// Changed since the last fsync.
    dirty: bool,
}

impl Node {
    fn new(kind: Kind, perm: u16) -> Node {
        Node {
            kind,
            perm,
            mtime: SystemTime::now(),
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
            links: 0,
            durable_links: 0,
            open: 0,
            len: 0,
            durable_len: 0,
            undo: Vec::new(),
            last_write: None,
            dirty: false,
        }
    }
}

/// What `stat` needs.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub perm: u16,
    pub len: u64,
    pub links: u32,
    pub mtime: SystemTime,
}

/// Running totals over the model's life.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub cuts: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub forgotten: CutReport,
}

/// The namespace and its durable shadow. See the module comment.
pub struct Model<S: Store> {
    store: S,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    totals: Totals,
}

impl<S: Store> Model<S> {
    /// An empty filesystem whose root directory is durable (it is the mount
    /// point, which exists before anything runs).
    pub fn new(store: S) -> Model<S> {
        let mut root = Node::new(Kind::Dir, 0o755);
        root.links = 1;
        root.durable_links = 1;
        let mut nodes = HashMap::new();
        nodes.insert(ROOT_INO, root);
        Model {
            store,
            nodes,
            next_ino: ROOT_INO + 1,
            totals: Totals::default(),
        }
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Handles open on any inode; a cut should wait for this to reach zero
    /// (the kernel releases a killed process's files asynchronously).
    pub fn open_handles(&self) -> u64 {
        self.nodes.values().map(|n| u64::from(n.open)).sum()
    }

    fn node(&self, ino: u64) -> Result<&Node, FsError> {
        self.nodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, FsError> {
        self.nodes.get_mut(&ino).ok_or(FsError::NotFound)
    }

    fn dir(&self, ino: u64) -> Result<&Node, FsError> {
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(node)
    }

    pub fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        let n = self.node(ino)?;
        Ok(Attr {
            ino,
            kind: n.kind,
            perm: n.perm,
            len: n.len,
            links: n.links,
            mtime: n.mtime,
        })
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, FsError> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(FsError::NotFound)
    }

    /// Live entries of a directory, in name order.
    pub fn readdir(&self, dir: u64) -> Result<Vec<(OsString, u64, Kind)>, FsError> {
        let d = self.dir(dir)?;
        Ok(d.entries
            .iter()
            .map(|(name, &ino)| (name.clone(), ino, self.nodes[&ino].kind))
            .collect())
    }

    fn make(&mut self, parent: u64, name: &OsStr, kind: Kind, perm: u16) -> Result<u64, FsError> {
        if name.is_empty() || name == "." || name == ".." {
            return Err(FsError::Invalid);
        }
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut node = Node::new(kind, perm);
        node.links = 1;
        self.nodes.insert(ino, node);
        let p = self.node_mut(parent)?;
        p.entries.insert(name.to_os_string(), ino);
        p.mtime = SystemTime::now();
        Ok(ino)
    }

    /// Creates an empty file (not durable until `parent` is fsynced).
    pub fn create(&mut self, parent: u64, name: &OsStr, perm: u16) -> Result<u64, FsError> {
        self.make(parent, name, Kind::File, perm)
    }

    /// Creates an empty directory (not durable until `parent` is fsynced).
    pub fn mkdir(&mut self, parent: u64, name: &OsStr, perm: u16) -> Result<u64, FsError> {
        self.make(parent, name, Kind::Dir, perm)
    }

    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        let ino = self.lookup(parent, name)?;
        if self.node(ino)?.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        self.drop_entry(parent, name, ino)
    }

    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        let ino = self.lookup(parent, name)?;
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if !node.entries.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.drop_entry(parent, name, ino)
    }

    fn drop_entry(&mut self, parent: u64, name: &OsStr, ino: u64) -> Result<(), FsError> {
        let p = self.node_mut(parent)?;
        p.entries.remove(name);
        p.mtime = SystemTime::now();
        self.node_mut(ino)?.links -= 1;
        self.collect(ino)
    }

    /// `rename(2)`; with `no_replace`, refuses to replace an existing entry.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), FsError> {
        let ino = self.lookup(parent, name)?;
        self.dir(new_parent)?;
        if new_name.is_empty() || new_name == "." || new_name == ".." {
            return Err(FsError::Invalid);
        }
        let kind = self.node(ino)?.kind;
        if kind == Kind::Dir && (ino == new_parent || self.is_ancestor(ino, new_parent)) {
            return Err(FsError::Invalid);
        }
        let replaced = self.dir(new_parent)?.entries.get(new_name).copied();
        if let Some(old) = replaced {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(FsError::Exists);
            }
            let target = self.node(old)?;
            match (kind, target.kind) {
                (Kind::Dir, Kind::File) => return Err(FsError::NotDir),
                (Kind::File, Kind::Dir) => return Err(FsError::IsDir),
                (Kind::Dir, Kind::Dir) if !target.entries.is_empty() => {
                    return Err(FsError::NotEmpty);
                }
                _ => {}
            }
        }
        let p = self.node_mut(parent)?;
        p.entries.remove(name);
        p.mtime = SystemTime::now();
        let np = self.node_mut(new_parent)?;
        np.entries.insert(new_name.to_os_string(), ino);
        np.mtime = SystemTime::now();
        if let Some(old) = replaced {
            self.node_mut(old)?.links -= 1;
            self.collect(old)?;
        }
        Ok(())
    }

    /// Whether `dir` is `of` or lies below it in the live tree.
    fn is_ancestor(&self, of: u64, dir: u64) -> bool {
        // Depth-first from `of`; the tree is small in tests.
        let mut stack = vec![of];
        while let Some(d) = stack.pop() {
            if d == dir {
                return true;
            }
            if let Some(n) = self.nodes.get(&d) {
                stack.extend(
                    n.entries
                        .values()
                        .filter(|i| self.nodes.get(i).is_some_and(|c| c.kind == Kind::Dir)),
                );
            }
        }
        false
    }

    pub fn open(&mut self, ino: u64) -> Result<(), FsError> {
        self.node_mut(ino)?.open += 1;
        Ok(())
    }

    pub fn release(&mut self, ino: u64) -> Result<(), FsError> {
        let n = self.node_mut(ino)?;
        n.open = n.open.saturating_sub(1);
        self.collect(ino)
    }

    pub fn read(&mut self, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let n = self.node(ino)?;
        if n.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let len = len.min(n.len.saturating_sub(offset) as usize);
        Ok(self.store.read(ino, offset, len)?)
    }

    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), FsError> {
        let n = self.node(ino)?;
        if n.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        // Save the durable bytes this write covers. Durable bytes beyond the
        // live end were cut off by a truncate, which saved them already.
        let keep_end = n.durable_len.min(n.len);
        let end = offset + data.len() as u64;
        let undo = if offset < keep_end {
            let old_end = end.min(keep_end);
            Some((
                offset,
                self.store.read(ino, offset, (old_end - offset) as usize)?,
            ))
        } else {
            None
        };
        self.store.write(ino, offset, data)?;
        let n = self.node_mut(ino)?;
        n.undo.extend(undo);
        n.len = n.len.max(end);
        n.last_write = Some((offset, data.len() as u64));
        n.dirty = true;
        n.mtime = SystemTime::now();
        Ok(())
    }

    pub fn truncate(&mut self, ino: u64, len: u64) -> Result<(), FsError> {
        let n = self.node(ino)?;
        if n.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let keep_end = n.durable_len.min(n.len);
        let undo = if len < keep_end {
            Some((len, self.store.read(ino, len, (keep_end - len) as usize)?))
        } else {
            None
        };
        self.store.set_len(ino, len)?;
        let n = self.node_mut(ino)?;
        n.undo.extend(undo);
        n.len = len;
        // A torn truncate is not a thing: the size changes whole.
        n.last_write = None;
        n.dirty = true;
        n.mtime = SystemTime::now();
        Ok(())
    }

    pub fn set_perm(&mut self, ino: u64, perm: u16) -> Result<(), FsError> {
        self.node_mut(ino)?.perm = perm;
        Ok(())
    }

    /// fsync(2) or fdatasync(2) on a file: its data becomes durable (not its
    /// name). On a directory: its entries become durable.
    pub fn fsync(&mut self, ino: u64) -> Result<(), FsError> {
        match self.node(ino)?.kind {
            Kind::File => {
                self.totals.file_syncs += 1;
                let n = self.node_mut(ino)?;
                n.durable_len = n.len;
                n.undo.clear();
                n.last_write = None;
                n.dirty = false;
                Ok(())
            }
            Kind::Dir => self.fsync_dir(ino),
        }
    }

    fn fsync_dir(&mut self, dir: u64) -> Result<(), FsError> {
        self.totals.dir_syncs += 1;
        let d = self.node_mut(dir)?;
        let old = std::mem::replace(&mut d.durable_entries, d.entries.clone());
        let new: Vec<u64> = d.entries.values().copied().collect();
        for ino in new {
            self.node_mut(ino)?.durable_links += 1;
        }
        for ino in old.into_values() {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.durable_links -= 1;
            }
            self.collect(ino)?;
        }
        Ok(())
    }

    /// Drops an inode that nothing can reach any more, now or after a cut.
    fn collect(&mut self, ino: u64) -> Result<(), FsError> {
        let Some(n) = self.nodes.get(&ino) else {
            return Ok(());
        };
        if ino == ROOT_INO || n.links > 0 || n.durable_links > 0 || n.open > 0 {
            return Ok(());
        }
        let n = self.nodes.remove(&ino).expect("checked above");
        // Its durable entries still hold links to their inodes.
        for child in n.durable_entries.into_values() {
            if let Some(c) = self.nodes.get_mut(&child) {
                c.durable_links -= 1;
            }
            self.collect(child)?;
        }
        if n.kind == Kind::File {
            self.store.remove(ino)?;
        }
        Ok(())
    }

    /// A power cut: every directory goes back to its durable entries and
    /// every file to its durable content (or a torn version of its unsynced
    /// content, see [`Tear`]). Open handles are dropped: the process that held
    /// them is gone.
    pub fn cut(&mut self, tear: Tear) -> Result<CutReport, FsError> {
        let mut report = CutReport::default();
        let mut rng = match tear {
            Tear::Seeded(seed) => seed | 1,
            _ => 1,
        };
        // Walk the durable tree from the root; whatever it does not reach is
        // gone. A directory reached twice (a rename durable in its new parent
        // but not yet in its old one) keeps only its first name.
        let mut reached: HashMap<u64, ()> = HashMap::new();
        reached.insert(ROOT_INO, ());
        let mut stack = vec![ROOT_INO];
        let mut durable_links: HashMap<u64, u32> = HashMap::new();
        durable_links.insert(ROOT_INO, 1);
        while let Some(dir) = stack.pop() {
            let d = &self.nodes[&dir];
            report.dir_ops_forgotten += entry_differences(&d.entries, &d.durable_entries);
            let mut kept = BTreeMap::new();
            for (name, &child) in &d.durable_entries {
                let child_kind = self.nodes[&child].kind;
                if child_kind == Kind::Dir && reached.contains_key(&child) {
                    continue;
                }
                kept.insert(name.clone(), child);
                *durable_links.entry(child).or_default() += 1;
                if reached.insert(child, ()).is_none() && child_kind == Kind::Dir {
                    stack.push(child);
                }
            }
            let d = self.nodes.get_mut(&dir).expect("reached");
            d.durable_entries = kept.clone();
            d.entries = kept;
        }
        let gone: Vec<u64> = self
            .nodes
            .keys()
            .copied()
            .filter(|ino| !reached.contains_key(ino))
            .collect();
        for ino in gone {
            let n = self.nodes.remove(&ino).expect("listed");
            report.inodes_lost += 1;
            if n.kind == Kind::File {
                self.store.remove(ino)?;
            }
        }
        // In inode order, so that a seed replays the same tears.
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let links = durable_links.get(&ino).copied().unwrap_or(0);
            let n = self.nodes.get_mut(&ino).expect("listed");
            n.links = links;
            n.durable_links = links;
            n.open = 0;
            if n.kind != Kind::File || !n.dirty {
                continue;
            }
            report.files_rolled_back += 1;
            let torn_at = match (tear, n.last_write) {
                (Tear::Never, _) | (_, None) => None,
                (_, Some((offset, len))) if offset + len != n.len || len < 2 => None,
                (Tear::Always, Some((offset, len))) => Some(offset + len / 2),
                (Tear::Seeded(_), Some((offset, len))) => {
                    rng = xorshift(rng);
                    (rng % 2 == 0).then_some(offset + len / 2)
                }
            };
            if let Some(torn_len) = torn_at {
                report.writes_torn += 1;
                report.bytes_dropped += n.len - torn_len;
                self.store.set_len(ino, torn_len)?;
                n.len = torn_len;
            } else {
                report.bytes_dropped += n.len.saturating_sub(n.durable_len);
                for (offset, old) in n.undo.iter().rev() {
                    report.bytes_dropped += old.len() as u64;
                    self.store.write(ino, *offset, old)?;
                }
                self.store.set_len(ino, n.durable_len)?;
                n.len = n.durable_len;
            }
            // What survived is on the disk now: durable from here on.
            n.durable_len = n.len;
            n.undo.clear();
            n.last_write = None;
            n.dirty = false;
        }
        self.totals.cuts += 1;
        let t = &mut self.totals.forgotten;
        t.dir_ops_forgotten += report.dir_ops_forgotten;
        t.files_rolled_back += report.files_rolled_back;
        t.writes_torn += report.writes_torn;
        t.bytes_dropped += report.bytes_dropped;
        t.inodes_lost += report.inodes_lost;
        Ok(report)
    }

    /// Every directory entry a cut would change now, as `path: what`
    /// (`created`, `removed`, `replaced`), paths from the root of the live
    /// tree; for reports of what a cut forgot.
    pub fn unsynced_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![(ROOT_INO, String::new())];
        while let Some((dir, path)) = stack.pop() {
            let d = &self.nodes[&dir];
            for (name, ino) in &d.entries {
                let child_path = format!("{path}/{}", name.to_string_lossy());
                match d.durable_entries.get(name) {
                    None => out.push(format!("{child_path}: created")),
                    Some(old) if old != ino => out.push(format!("{child_path}: replaced")),
                    Some(_) => {}
                }
                if self.nodes[ino].kind == Kind::Dir {
                    stack.push((*ino, child_path));
                }
            }
            for name in d.durable_entries.keys() {
                if !d.entries.contains_key(name) {
                    out.push(format!("{path}/{}: removed", name.to_string_lossy()));
                }
            }
        }
        out.sort();
        out
    }

    /// Direct access to the store, for tests.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }
}

/// Names whose entry differs between two views of a directory.
fn entry_differences(live: &BTreeMap<OsString, u64>, durable: &BTreeMap<OsString, u64>) -> u64 {
    let changed_or_new = live
        .iter()
        .filter(|(name, ino)| durable.get(*name) != Some(ino))
        .count();
    let removed = durable
        .keys()
        .filter(|name| !live.contains_key(*name))
        .count();
    (changed_or_new + removed) as u64
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> Model<MemStore> {
        Model::new(MemStore::default())
    }

    fn n(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn names(m: &Model<MemStore>, dir: u64) -> Vec<String> {
        m.readdir(dir)
            .unwrap()
            .into_iter()
            .map(|(name, _, _)| name.into_string().unwrap())
            .collect()
    }

    fn content(m: &mut Model<MemStore>, ino: u64) -> Vec<u8> {
        m.read(ino, 0, usize::MAX).unwrap()
    }

    #[test]
    fn create_not_durable_until_dir_fsync() {
        let mut m = fs();
        let f = m.create(ROOT_INO, n("a"), 0o644).unwrap();
        m.write(f, 0, b"hello").unwrap();
        m.fsync(f).unwrap();
        let report = m.cut(Tear::Never).unwrap();
        assert!(
            names(&m, ROOT_INO).is_empty(),
            "file fsync must not save its name"
        );
        assert_eq!(report.dir_ops_forgotten, 1);
        assert_eq!(report.inodes_lost, 1);

        let f = m.create(ROOT_INO, n("a"), 0o644).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.cut(Tear::Never).unwrap();
        assert_eq!(m.lookup(ROOT_INO, n("a")).unwrap(), f);
    }

    #[test]
    fn file_data_not_durable_until_fsync() {
        let mut m = fs();
        let f = m.create(ROOT_INO, n("seg"), 0o644).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.write(f, 0, b"synced").unwrap();
        m.fsync(f).unwrap();
        m.write(f, 6, b"-lost").unwrap();
        m.write(f, 0, b"S").unwrap();
        let report = m.cut(Tear::Never).unwrap();
        assert_eq!(content(&mut m, f), b"synced");
        assert_eq!(report.files_rolled_back, 1);
        assert_eq!(report.dir_ops_forgotten, 0);
    }

    #[test]
    fn durable_name_without_synced_data_comes_back_empty() {
        let mut m = fs();
        let f = m.create(ROOT_INO, n("f"), 0o644).unwrap();
        m.write(f, 0, b"never synced").unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.cut(Tear::Never).unwrap();
        assert_eq!(m.attr(f).unwrap().len, 0);
    }

    #[test]
    fn rename_not_durable_until_dir_fsync() {
        let mut m = fs();
        let f = m.create(ROOT_INO, n("x.tmp"), 0o644).unwrap();
        m.write(f, 0, b"new").unwrap();
        m.fsync(f).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.rename(ROOT_INO, n("x.tmp"), ROOT_INO, n("x"), false)
            .unwrap();
        assert_eq!(names(&m, ROOT_INO), ["x"]);
        let report = m.cut(Tear::Never).unwrap();
        assert_eq!(names(&m, ROOT_INO), ["x.tmp"]);
        assert_eq!(report.dir_ops_forgotten, 2, "both sides of the rename");
        assert!(m.unsynced_entries().is_empty());

        m.rename(ROOT_INO, n("x.tmp"), ROOT_INO, n("x"), false)
            .unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.cut(Tear::Never).unwrap();
        assert_eq!(names(&m, ROOT_INO), ["x"]);
        assert_eq!(content(&mut m, f), b"new");
    }

    #[test]
    fn rename_over_an_old_file_keeps_the_old_one_until_dir_fsync() {
        let mut m = fs();
        let old = m.create(ROOT_INO, n("meta"), 0o644).unwrap();
        m.write(old, 0, b"old").unwrap();
        m.fsync(old).unwrap();
        m.fsync(ROOT_INO).unwrap();
        let new = m.create(ROOT_INO, n("meta.tmp"), 0o644).unwrap();
        m.write(new, 0, b"new").unwrap();
        m.fsync(new).unwrap();
        m.rename(ROOT_INO, n("meta.tmp"), ROOT_INO, n("meta"), false)
            .unwrap();
        m.cut(Tear::Never).unwrap();
        let back = m.lookup(ROOT_INO, n("meta")).unwrap();
        assert_eq!(back, old);
        assert_eq!(content(&mut m, back), b"old");
    }

    #[test]
    fn unlink_undone_by_a_cut_unless_dir_fsynced() {
        let mut m = fs();
        let f = m.create(ROOT_INO, n("f"), 0o644).unwrap();
        m.write(f, 0, b"data").unwrap();
        m.fsync(f).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.unlink(ROOT_INO, n("f")).unwrap();
        m.cut(Tear::Never).unwrap();
        assert_eq!(m.lookup(ROOT_INO, n("f")).unwrap(), f);
        assert_eq!(content(&mut m, f), b"data");

        m.unlink(ROOT_INO, n("f")).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.cut(Tear::Never).unwrap();
        assert!(m.lookup(ROOT_INO, n("f")).is_err());
        assert!(
            m.store_mut().files.is_empty(),
            "bytes of a durably unlinked file are freed"
        );
    }

    #[test]
    fn new_directory_needs_its_parent_synced_and_its_own_entries_synced() {
        let mut m = fs();
        let d = m.mkdir(ROOT_INO, n("topic-0"), 0o755).unwrap();
        let f = m.create(d, n("0.log"), 0o644).unwrap();
        m.fsync(d).unwrap();
        m.write(f, 0, b"acked").unwrap();
        m.fsync(f).unwrap();
        // The partition directory's own entries are durable, but its entry
        // in the data directory is not: everything goes.
        m.cut(Tear::Never).unwrap();
        assert!(names(&m, ROOT_INO).is_empty());

        let d = m.mkdir(ROOT_INO, n("topic-0"), 0o755).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.create(d, n("0.log"), 0o644).unwrap();
        m.cut(Tear::Never).unwrap();
        assert_eq!(names(&m, ROOT_INO), ["topic-0"]);
        assert!(names(&m, d).is_empty(), "the file's entry was never synced");
    }

    #[test]
    fn removed_tree_comes_back_unless_its_parent_is_synced() {
        let mut m = fs();
        let d = m.mkdir(ROOT_INO, n("t-0"), 0o755).unwrap();
        let f = m.create(d, n("0.log"), 0o644).unwrap();
        m.write(f, 0, b"x").unwrap();
        m.fsync(f).unwrap();
        m.fsync(d).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.unlink(d, n("0.log")).unwrap();
        m.fsync(d).unwrap();
        m.rmdir(ROOT_INO, n("t-0")).unwrap();
        m.cut(Tear::Never).unwrap();
        assert_eq!(names(&m, ROOT_INO), ["t-0"], "rmdir not durable");
        assert!(names(&m, d).is_empty(), "the unlink inside was");
    }

    #[test]
    fn truncate_of_durable_data_is_undone() {
        let mut m = fs();
        let f = m.create(ROOT_INO, n("f"), 0o644).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.write(f, 0, b"0123456789").unwrap();
        m.fsync(f).unwrap();
        m.truncate(f, 4).unwrap();
        m.write(f, 4, b"abcdefghijkl").unwrap();
        m.cut(Tear::Never).unwrap();
        assert_eq!(content(&mut m, f), b"0123456789");
    }

    #[test]
    fn torn_cut_keeps_half_of_the_last_append() {
        let mut m = fs();
        let f = m.create(ROOT_INO, n("f"), 0o644).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.write(f, 0, b"synced|").unwrap();
        m.fsync(f).unwrap();
        m.write(f, 7, b"first|").unwrap();
        m.write(f, 13, b"ABCDEFGH").unwrap();
        let report = m.cut(Tear::Always).unwrap();
        assert_eq!(content(&mut m, f), b"synced|first|ABCD");
        assert_eq!(report.writes_torn, 1);
        assert_eq!(report.bytes_dropped, 4);
    }

    #[test]
    fn seeded_tears_replay() {
        let run = |seed| {
            let mut m = fs();
            let mut files = Vec::new();
            for i in 0..16 {
                let f = m
                    .create(ROOT_INO, OsStr::new(&format!("f{i}")), 0o644)
                    .unwrap();
                m.write(f, 0, b"0123456789").unwrap();
                files.push(f);
            }
            m.fsync(ROOT_INO).unwrap();
            m.cut(Tear::Seeded(seed)).unwrap();
            files
                .iter()
                .map(|&f| m.attr(f).unwrap().len)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let lens = run(7);
        assert!(lens.contains(&0) && lens.contains(&5), "{lens:?}");
    }

    #[test]
    fn synced_state_survives_any_number_of_cuts() {
        let mut m = fs();
        let d = m.mkdir(ROOT_INO, n("d"), 0o755).unwrap();
        m.fsync(ROOT_INO).unwrap();
        let f = m.create(d, n("f"), 0o644).unwrap();
        m.fsync(d).unwrap();
        m.write(f, 0, b"keep").unwrap();
        m.fsync(f).unwrap();
        for _ in 0..3 {
            let report = m.cut(Tear::Always).unwrap();
            assert_eq!(report, CutReport::default());
            assert_eq!(content(&mut m, f), b"keep");
        }
        assert_eq!(m.totals().cuts, 3);
    }

    #[test]
    fn directory_renamed_across_parents_keeps_one_name() {
        let mut m = fs();
        let a = m.mkdir(ROOT_INO, n("a"), 0o755).unwrap();
        let b = m.mkdir(ROOT_INO, n("b"), 0o755).unwrap();
        let c = m.mkdir(a, n("c"), 0o755).unwrap();
        m.fsync(a).unwrap();
        m.fsync(ROOT_INO).unwrap();
        m.rename(a, n("c"), b, n("c"), false).unwrap();
        m.fsync(b).unwrap();
        // Durable in both a (old) and b (new): one name survives.
        m.cut(Tear::Never).unwrap();
        let in_a = m.lookup(a, n("c")).ok();
        let in_b = m.lookup(b, n("c")).ok();
        assert_eq!(in_a.is_some() as u8 + in_b.is_some() as u8, 1);
        assert_eq!(in_a.or(in_b), Some(c));
    }
}

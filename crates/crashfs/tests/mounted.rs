//! The model's rules through a real mount: fsync(2) and fsync of a directory
//! must reach the filesystem, and a cut must show through the kernel's caches.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use weir_crashfs::{CrashFs, Tear};

fn mounted() -> Option<(tempfile::TempDir, CrashFs)> {
    if let Err(e) = weir_crashfs::available() {
        // Loud, not silent; and CI installs fuse3, so there it is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "crashfs cannot mount in CI: {e}"
        );
        eprintln!("SKIPPED: {e}");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let crashfs = CrashFs::mount(&tmp.path().join("backing"), &mnt).unwrap();
    Some((tmp, crashfs))
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[test]
fn cut_through_the_kernel_forgets_what_was_not_synced() {
    let Some((_tmp, crashfs)) = mounted() else {
        return;
    };
    let root = crashfs.mountpoint().to_path_buf();
    let dir = root.join("topic-0");
    fs::create_dir(&dir).unwrap();
    sync_dir(&root);
    let mut synced = File::create(dir.join("synced.log")).unwrap();
    synced.write_all(b"durable").unwrap();
    synced.sync_data().unwrap();
    sync_dir(&dir);
    synced.write_all(b" and not").unwrap();
    drop(synced);
    fs::write(dir.join("unsynced-name"), b"x").unwrap();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(root.join("unsynced-dir-entry"))
        .unwrap();
    f.write_all(b"data synced, name not").unwrap();
    f.sync_all().unwrap();
    drop(f);
    // Read through the page cache before the cut, so a stale cache would show.
    assert_eq!(
        fs::read(dir.join("synced.log")).unwrap(),
        b"durable and not"
    );

    let report = crashfs.cut(Tear::Never).unwrap();
    assert_eq!(fs::read(dir.join("synced.log")).unwrap(), b"durable");
    assert!(!dir.join("unsynced-name").exists());
    assert!(!root.join("unsynced-dir-entry").exists());
    assert_eq!(report.dir_ops_forgotten, 2);
    assert_eq!(report.files_rolled_back, 1);
    let totals = crashfs.totals();
    assert!(totals.file_syncs >= 2, "fsync(2) must reach the filesystem");
    assert!(
        totals.dir_syncs >= 2,
        "fsync of a directory must reach the filesystem"
    );
}

#[test]
fn rename_and_unlink_come_back_without_a_dir_sync() {
    let Some((_tmp, crashfs)) = mounted() else {
        return;
    };
    let root = crashfs.mountpoint().to_path_buf();
    fs::write(root.join("old"), b"old").unwrap();
    File::open(root.join("old")).unwrap().sync_all().unwrap();
    fs::write(root.join("gone"), b"gone").unwrap();
    File::open(root.join("gone")).unwrap().sync_all().unwrap();
    sync_dir(&root);
    fs::write(root.join("new.tmp"), b"new").unwrap();
    File::open(root.join("new.tmp"))
        .unwrap()
        .sync_all()
        .unwrap();
    fs::rename(root.join("new.tmp"), root.join("old")).unwrap();
    fs::remove_file(root.join("gone")).unwrap();
    crashfs.cut(Tear::Never).unwrap();
    assert_eq!(fs::read(root.join("old")).unwrap(), b"old");
    assert_eq!(fs::read(root.join("gone")).unwrap(), b"gone");
    let mut names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["gone", "old"]);
}

#[test]
fn a_slow_disk_delays_every_fsync_until_it_is_fast_again() {
    let Some((_tmp, crashfs)) = mounted() else {
        return;
    };
    let path = crashfs.mountpoint().join("slow.log");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"record").unwrap();
    crashfs.set_fsync_delay(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    file.sync_all().unwrap();
    sync_dir(crashfs.mountpoint());
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(600),
        "two fsyncs at 300 ms each took {:?}",
        started.elapsed()
    );
    crashfs.set_fsync_delay(std::time::Duration::ZERO);
    let started = std::time::Instant::now();
    file.sync_all().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(300),
        "fast again: {:?}",
        started.elapsed()
    );
}

//! The cluster under test: N `weir serve` processes, each in its own network namespace (see
//! [`crate::net`]), one of them with its data directory on a small tmpfs (disk full) and one on
//! weir-crashfs (power loss).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weir_crashfs::{CrashFs, Tear};

use crate::Error;
use crate::net::{self, Net};

/// The Kafka port every broker listens on, at its own namespace's address.
const KAFKA_PORT: u16 = 9092;
/// The metadata quorum's port.
const CONTROLLER_PORT: u16 = 9093;
/// How long a broker may take from spawn to accepting connections (a restart replays its
/// quorum log and recovers its partitions).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);
/// The controller fences a silent broker after this long: short, so a killed or cut-off
/// leader is replaced in seconds rather than Kafka's 9 s.
pub const SESSION_TIMEOUT_MS: u64 = 3_000;
const HEARTBEAT_INTERVAL_MS: u64 = 300;
/// A follower that has not caught up for this long leaves the ISR: short, so acks=all
/// resumes a few seconds after a follower dies instead of Kafka's 30 s.
pub const REPLICA_LAG_TIME_MAX_MS: u64 = 5_000;
/// How many times a heal starts the brokers that are down and waits for all to listen.
const HEAL_ROUNDS: usize = 3;
/// The largest filler file written to fill the small disk.
const FILL_BYTES_MAX: u64 = 4 << 30;

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub brokers: usize,
    pub weir_bin: PathBuf,
    /// Holds every data directory, log and mount point; removed by the caller.
    pub work_dir: PathBuf,
    /// Extra environment for every broker (test-only switches).
    pub env: Vec<(String, String)>,
    /// The broker (1-based) whose data directory is on a tmpfs of `small_disk_mib`.
    pub small_disk_broker: Option<usize>,
    pub small_disk_mib: u64,
    /// The broker (1-based) whose data directory is on weir-crashfs.
    pub crashfs_broker: Option<usize>,
}

/// One broker process.
pub struct Node {
    pub id: usize,
    pub addr: SocketAddrV4,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// Stopped by SIGSTOP and not yet continued.
    paused: bool,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process died on its own (a crash the harness did not cause).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    config: ClusterConfig,
    voters: String,
    config_file: PathBuf,
    crashfs: Option<CrashFs>,
    small_disk: Option<PathBuf>,
    pub net: Net,
}

impl Cluster {
    /// Builds the network, the mounts, and starts every broker; returns once all listen.
    pub fn start(config: ClusterConfig) -> Result<Cluster, Error> {
        let net = Net::create(config.brokers)?;
        std::fs::create_dir_all(&config.work_dir)?;
        let config_file = config.work_dir.join("weir.toml");
        std::fs::write(
            &config_file,
            format!(
                "broker_session_timeout_ms = {SESSION_TIMEOUT_MS}\n\
                 broker_heartbeat_interval_ms = {HEARTBEAT_INTERVAL_MS}\n\
                 replica_lag_time_max_ms = {REPLICA_LAG_TIME_MAX_MS}\n"
            ),
        )?;
        let voters = (1..=config.brokers)
            .map(|i| format!("{i}@{}:{CONTROLLER_PORT}", net.broker_addr(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            voters,
            config_file,
            crashfs: None,
            small_disk: None,
            net,
            config,
        };
        for i in 1..=cluster.config.brokers {
            let node_dir = cluster.config.work_dir.join(format!("node-{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut data_dir = node_dir.join("data");
            if cluster.config.small_disk_broker == Some(i) {
                let mnt = node_dir.join("small-disk");
                std::fs::create_dir_all(&mnt)?;
                let size = format!("size={}m", cluster.config.small_disk_mib);
                net::run(
                    "mount",
                    &["-t", "tmpfs", "-o", &size, "tmpfs", path_str(&mnt)?],
                )?;
                cluster.small_disk = Some(mnt.clone());
                data_dir = mnt.join("data");
            }
            if cluster.config.crashfs_broker == Some(i) {
                let mnt = node_dir.join("crashfs");
                std::fs::create_dir_all(&mnt)?;
                let fs = CrashFs::mount(&node_dir.join("crashfs-backing"), &mnt)
                    .map_err(|e| Error::Setup(format!("crashfs: {e}")))?;
                cluster.crashfs = Some(fs);
                data_dir = mnt.join("data");
            }
            cluster.nodes.push(Node {
                id: i,
                addr: SocketAddrV4::new(cluster.net.broker_addr(i), KAFKA_PORT),
                data_dir,
                log_path: node_dir.join("broker.log"),
                child: None,
                paused: false,
            });
        }
        for i in 1..=cluster.config.brokers {
            cluster.spawn(i)?;
        }
        for i in 1..=cluster.config.brokers {
            cluster.wait_listening(i)?;
        }
        Ok(cluster)
    }

    pub fn node(&self, id: usize) -> &Node {
        &self.nodes[id - 1]
    }

    /// The clients' bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn small_disk_broker(&self) -> Option<usize> {
        self.config.small_disk_broker
    }

    pub fn crashfs_broker(&self) -> Option<usize> {
        self.config.crashfs_broker
    }

    fn spawn(&mut self, id: usize) -> Result<(), Error> {
        let prefix = self.net.exec_prefix(id);
        let node = &mut self.nodes[id - 1];
        assert!(node.child.is_none(), "broker {id} already runs");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        // `ip netns exec` execs the program in place (no fork), so the child's pid is the
        // broker's: kill -9 and SIGSTOP reach the broker itself.
        let child = Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(&self.config.weir_bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen")
            .arg(node.addr.to_string())
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--controller-voters")
            .arg(&self.voters)
            .arg("--config")
            .arg(&self.config_file)
            .env("WEIR_LOG", "info")
            .env("WEIR_HTTP_LISTEN", "127.0.0.1:0")
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Waits until broker `id` accepts connections (from the root namespace).
    pub fn wait_listening(&mut self, id: usize) -> Result<(), Error> {
        let started = Instant::now();
        let addr = SocketAddr::V4(self.nodes[id - 1].addr);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.nodes[id - 1].exited() {
                self.nodes[id - 1].child = None;
                return Err(Error::BrokerDied {
                    id,
                    detail: format!("exited with {status} while starting"),
                    log_tail: self.log_tail(id),
                });
            }
            if started.elapsed() > LISTEN_TIMEOUT {
                return Err(Error::BrokerDied {
                    id,
                    detail: format!("not listening after {LISTEN_TIMEOUT:?}"),
                    log_tail: self.log_tail(id),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of broker `id`'s log.
    pub fn log_tail(&self, id: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[id - 1].log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn signal(&self, id: usize, signal: libc::c_int) -> Result<(), Error> {
        let pid = self.nodes[id - 1]
            .pid()
            .ok_or_else(|| Error::Setup(format!("broker {id} is not running")))?;
        // SAFETY: kill(2) with a pid of our own child and a valid signal number.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        if rc != 0 {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// kill -9, without restarting.
    pub fn kill9(&mut self, id: usize) -> Result<(), Error> {
        let node = &mut self.nodes[id - 1];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            child.wait()?;
        }
        node.paused = false;
        Ok(())
    }

    /// Starts a killed broker again and waits until it listens.
    pub fn restart(&mut self, id: usize) -> Result<(), Error> {
        self.spawn(id)?;
        self.wait_listening(id)
    }

    /// Starts a killed broker again without waiting: a broker listens only once it has
    /// joined the metadata quorum, which may need a broker that is itself still down (the
    /// heal starts them all, then waits).
    pub fn start_again(&mut self, id: usize) -> Result<(), Error> {
        self.spawn(id)
    }

    pub fn pause(&mut self, id: usize) -> Result<(), Error> {
        self.signal(id, libc::SIGSTOP)?;
        self.nodes[id - 1].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, id: usize) -> Result<(), Error> {
        self.signal(id, libc::SIGCONT)?;
        self.nodes[id - 1].paused = false;
        Ok(())
    }

    /// Fills the small disk to the last byte with a filler file.
    pub fn fill_disk(&self) -> Result<u64, Error> {
        let mnt = self
            .small_disk
            .as_ref()
            .ok_or_else(|| Error::Setup("no small disk".into()))?;
        let mut file = std::fs::File::create(mnt.join("filler"))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        while written < FILL_BYTES_MAX {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(written)
    }

    /// Frees the space [`Cluster::fill_disk`] took.
    pub fn free_disk(&self) -> Result<(), Error> {
        if let Some(mnt) = &self.small_disk {
            match std::fs::remove_file(mnt.join("filler")) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Power loss on the crashfs broker: kill -9, forget everything it had not fsynced, and
    /// start it again.
    pub fn power_cut(&mut self, seed: u64) -> Result<(), Error> {
        let id = self
            .config
            .crashfs_broker
            .ok_or_else(|| Error::Setup("no crashfs broker".into()))?;
        self.kill9(id)?;
        let fs = self
            .crashfs
            .as_ref()
            .expect("crashfs mounted with its broker");
        fs.cut(Tear::Seeded(seed))
            .map_err(|e| Error::Setup(format!("power cut: {e}")))?;
        self.start_again(id)
    }

    /// Makes every fsync on the crashfs broker's disk wait `delay` (zero: fast again).
    pub fn set_fsync_delay(&self, delay: Duration) -> Result<(), Error> {
        let fs = self
            .crashfs
            .as_ref()
            .ok_or_else(|| Error::Setup("no crashfs broker".into()))?;
        fs.set_fsync_delay(delay);
        Ok(())
    }

    /// Brokers that died on their own since the last look (and are marked stopped).
    pub fn reap_crashed(&mut self) -> Vec<(usize, String)> {
        let mut crashed = Vec::new();
        for i in 1..=self.nodes.len() {
            if let Some(status) = self.nodes[i - 1].exited() {
                self.nodes[i - 1].child = None;
                crashed.push((i, format!("{status}")));
            }
        }
        crashed
    }

    /// Ends every fault that leaves a process stopped, a rule in place or the disk full,
    /// starts every broker that is down (killed, or halted on its own), and waits until all
    /// listen. A broker listens only once a quorum of voters runs, so all are started before
    /// any is waited for; one that exits while the others start is started again, up to
    /// `HEAL_ROUNDS` times. Returns the brokers that exited on their own meanwhile.
    pub fn heal_all(&mut self) -> Result<Vec<(usize, String)>, Error> {
        self.net.heal()?;
        self.free_disk()?;
        if let Some(fs) = &self.crashfs {
            fs.set_fsync_delay(Duration::ZERO);
        }
        let mut exited = Vec::new();
        let mut last_error = None;
        for _ in 0..HEAL_ROUNDS {
            exited.extend(self.reap_crashed());
            for i in 1..=self.nodes.len() {
                if self.nodes[i - 1].paused {
                    self.resume(i)?;
                }
                if !self.nodes[i - 1].is_running() {
                    self.spawn(i)?;
                }
            }
            last_error = None;
            for i in 1..=self.nodes.len() {
                if let Err(e) = self.wait_listening(i) {
                    if !self.nodes[i - 1].is_running() {
                        exited.push((i, "exited while the heal waited for it".into()));
                    }
                    last_error = Some(e);
                    break;
                }
            }
            if last_error.is_none() {
                return Ok(exited);
            }
        }
        Err(last_error.expect("a failed round leaves its error"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                if node.paused
                    && let Ok(pid) = libc::pid_t::try_from(child.id())
                {
                    // SAFETY: kill(2) on our own child.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Unmount before the namespace and the files go (crashfs unmounts on its own drop).
        self.crashfs = None;
        if let Some(mnt) = &self.small_disk
            && let Some(p) = mnt.to_str()
        {
            let _ = net::run("umount", &[p]);
        }
    }
}

fn path_str(path: &Path) -> Result<&str, Error> {
    path.to_str()
        .ok_or_else(|| Error::Setup(format!("path is not UTF-8: {}", path.display())))
}

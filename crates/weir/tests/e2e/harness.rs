//! Starts and stops real broker processes for tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

/// How long a broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `weir serve` child process with its own data directory and port.
pub struct Broker {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    /// Extra environment for the process (test-only switches).
    env: Vec<(String, String)>,
    child: Option<Child>,
    log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// A port nobody listens on right now (it may be taken again before use,
/// which on a test machine is rare enough).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl Broker {
    /// Starts a broker on a fresh data dir and a free port.
    pub fn start(extra_args: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let log_path = tmp.path().join("broker.log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut broker = Broker {
            addr,
            data_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            child: None,
            log_path,
            _tmp: Some(tmp),
        };
        broker.spawn();
        broker
    }

    /// Starts a broker on a given data dir (e.g. on a crash-simulating mount)
    /// and a free port, with extra environment; its log goes to `log_path`,
    /// which should lie outside that data dir. Used by tests/powerloss.rs,
    /// which includes this file.
    #[allow(dead_code)]
    pub fn start_in(
        data_dir: PathBuf,
        log_path: PathBuf,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Broker {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut broker = Broker {
            addr,
            data_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log_path,
            _tmp: None,
        };
        broker.spawn();
        broker
    }

    /// Like [`Broker::start_in`] but returns at once, before the broker
    /// listens: a cluster's nodes only listen once a quorum of them runs.
    /// Call [`Broker::wait_until_listening`] before using it.
    #[allow(dead_code)]
    pub fn launch_in(
        data_dir: PathBuf,
        log_path: PathBuf,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Broker {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut broker = Broker {
            addr,
            data_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log_path,
            _tmp: None,
        };
        broker.spawn_process();
        broker
    }

    fn spawn(&mut self) {
        self.spawn_process();
        self.wait_until_listening();
    }

    /// Starts the process without waiting for it to listen.
    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("broker log file");
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(&self.extra_args)
            .env("WEIR_LOG", "info")
            // Tests run brokers side by side: each gets an ephemeral HTTP port unless the
            // test passes --http-listen (a flag wins over the variable).
            .env("WEIR_HTTP_LISTEN", "127.0.0.1:0")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn weir serve");
        self.child = Some(child);
    }

    pub fn wait_until_listening(&mut self) {
        let started = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("broker exited at start with {status}; log:\n{}", self.log());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "broker did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Whether the process was started and not yet stopped or killed.
    #[allow(dead_code)]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits up to `timeout` for the process to exit on its own; its status, or `None`
    /// if it still runs (or was never started).
    #[allow(dead_code)]
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            let status = self.child.as_mut()?.try_wait().ok().flatten();
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or checkpoint.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY-free: plain kill(2) through the command line tool keeps us off libc.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same broker again and returns at once, before it listens;
    /// for tests that watch the start itself.
    pub fn restart_without_waiting(&mut self) {
        assert!(
            self.child.is_none(),
            "stop or kill the broker before restarting it"
        );
        self.spawn_process();
    }

    /// Starts the same broker again (same port, same data).
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop or kill the broker before restarting it"
        );
        self.spawn();
    }

    /// Resident set size of the broker process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A librdkafka config pointed at this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("broker.address.family", "v4")
            .set("log_level", "3");
        config
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() && !self.stop() {
            eprintln!("broker did not stop cleanly; log:\n{}", self.log());
        }
        if std::thread::panicking() {
            eprintln!("--- broker log ---\n{}", self.log());
        }
    }
}

/// Creates a topic through librdkafka's admin API and waits for the result.
pub fn create_topic(broker: &Broker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        broker.client_config().create().expect("admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = runtime
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create_topics request");
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Asks FindCoordinator (v1) for `key` until the broker names a coordinator,
/// as every client does before its first group or transaction request: the
/// internal topic behind it is created on that first lookup. Panics after
/// 20 s. `key_type`: 0 group, 1 transaction.
#[allow(dead_code)]
pub fn wait_for_coordinator(broker: &Broker, key: &str, key_type: i8) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut frame = Vec::new();
        frame.extend_from_slice(&0i32.to_be_bytes());
        frame.extend_from_slice(&10i16.to_be_bytes()); // FindCoordinator
        frame.extend_from_slice(&1i16.to_be_bytes());
        frame.extend_from_slice(&1i32.to_be_bytes()); // correlation id
        frame.extend_from_slice(&2i16.to_be_bytes());
        frame.extend_from_slice(b"e2");
        frame.extend_from_slice(&i16::try_from(key.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(key.as_bytes());
        frame.push(key_type as u8);
        let size = i32::try_from(frame.len() - 4).unwrap();
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        let mut stream = TcpStream::connect(broker.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&frame).expect("send FindCoordinator");
        let mut len = [0u8; 4];
        stream
            .read_exact(&mut len)
            .expect("FindCoordinator answered");
        let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(len)).unwrap()];
        stream.read_exact(&mut body).expect("FindCoordinator body");
        // correlation id (4), throttle_time_ms (4), error_code (2)
        let error_code = i16::from_be_bytes([body[8], body[9]]);
        if error_code == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {key} (last error {error_code})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! Network faults: one network namespace per broker.
//!
//! Why namespaces and iptables rather than a TCP proxy per link: a broker in its own namespace
//! has its own address and its own firewall, so a partition is a DROP rule where the packets
//! arrive and nothing in the path between two brokers or between a client and a broker
//! changes otherwise (no proxy to restart, no second hop that buffers, reorders or hides a
//! half-open connection). Dropped packets (not rejected ones) are what a real partition
//! looks like: connections hang until their timeouts rather than failing fast. The cost is
//! that it needs root, which the tests have here and in CI.
//!
//! Layout, for run number `n` (chosen so parallel runs on one machine do not collide):
//! - a bridge `wcbr<n>` in the root namespace with address 10.213.<n>.1/24: the clients (the
//!   harness's load) run in the root namespace and reach the brokers through it;
//! - per broker `i`, a namespace `wc<n>-b<i>` holding one end of a veth pair (the other end is
//!   on the bridge) with address 10.213.<n>.<10+i>/24. The broker binds its Kafka and
//!   controller listeners there and advertises that address, so clients and peers all reach
//!   it over the bridge.
//!
//! Faults are iptables rules in a broker's namespace (INPUT and OUTPUT, by peer address);
//! healing flushes them. Everything is removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::Error;

/// Runs a command; its failure is an error naming it and its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Whether this process can build namespaces: root, with `ip` and `iptables` on the PATH.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("network namespaces need root".into());
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "`{tool}` is missing (Debian packages iproute2, iptables)"
            ));
        }
    }
    Ok(())
}

/// The bridge, and one namespace per broker.
pub struct Net {
    run_id: u8,
    brokers: usize,
    /// Whether the bridge was created (so drop removes it).
    created: bool,
}

impl Net {
    /// Builds the bridge and `brokers` namespaces. Picks a run number not in use.
    pub fn create(brokers: usize) -> Result<Net, Error> {
        assert!((1..=200).contains(&brokers), "1 to 200 brokers");
        let start = (std::process::id() % 200) as u8;
        let run_id = (0..200u8)
            .map(|k| (start as u16 + k as u16) as u8 % 200 + 1)
            .find(|n| !std::path::Path::new(&format!("/sys/class/net/wcbr{n}")).exists())
            .ok_or_else(|| Error::Setup("no free run number for a bridge".into()))?;
        let mut net = Net {
            run_id,
            brokers,
            created: false,
        };
        let bridge = net.bridge();
        // A leftover namespace of a crashed run with this number would make `ip netns add`
        // fail; remove them first.
        for i in 1..=brokers {
            let _ = run("ip", &["netns", "delete", &net.namespace(i)]);
        }
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        net.created = true;
        let client_cidr = format!("{}/24", net.client_addr());
        run("ip", &["addr", "add", &client_cidr, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 1..=brokers {
            let ns = net.namespace(i);
            let host_end = format!("wc{run_id}b{i}");
            let ns_end = format!("wc{run_id}b{i}n");
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
                ],
            )?;
            run("ip", &["link", "set", &ns_end, "netns", &ns])?;
            run("ip", &["link", "set", &host_end, "master", &bridge])?;
            run("ip", &["link", "set", &host_end, "up"])?;
            let cidr = format!("{}/24", net.broker_addr(i));
            net.exec(i, &["ip", "addr", "add", &cidr, "dev", &ns_end])?;
            net.exec(i, &["ip", "link", "set", &ns_end, "up"])?;
            net.exec(i, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("wcbr{}", self.run_id)
    }

    /// The namespace of broker `i` (1-based).
    pub fn namespace(&self, i: usize) -> String {
        format!("wc{}-b{i}", self.run_id)
    }

    /// The clients' address (the bridge's, in the root namespace).
    pub fn client_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.run_id, 1)
    }

    /// Broker `i`'s address (1-based).
    pub fn broker_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.run_id, 10 + i as u8)
    }

    /// Runs a command inside broker `i`'s namespace.
    fn exec(&self, i: usize, command: &[&str]) -> Result<(), Error> {
        let ns = self.namespace(i);
        let mut args = vec!["netns", "exec", ns.as_str()];
        args.extend_from_slice(command);
        run("ip", &args)
    }

    /// Drops every packet between broker `i` and `peer` (both directions, both ends: a rule
    /// on one side only would still let the other side's SYNs and ACKs through halfway).
    fn drop_between(&self, i: usize, peer: Ipv4Addr) -> Result<(), Error> {
        let peer = peer.to_string();
        self.exec(i, &["iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
        self.exec(i, &["iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"])
    }

    /// Cuts the links between brokers `a` and `b` (1-based).
    pub fn cut_brokers(&self, a: usize, b: usize) -> Result<(), Error> {
        self.drop_between(a, self.broker_addr(b))?;
        self.drop_between(b, self.broker_addr(a))
    }

    /// Cuts broker `i` off from the clients (the other brokers still reach it).
    pub fn cut_clients(&self, i: usize) -> Result<(), Error> {
        self.drop_between(i, self.client_addr())
    }

    /// Removes every rule: the network is whole again.
    pub fn heal(&self) -> Result<(), Error> {
        for i in 1..=self.brokers {
            self.exec(i, &["iptables", "-F"])?;
        }
        Ok(())
    }

    /// The command prefix that runs a program in broker `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespace(i),
        ]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.brokers {
            let _ = run("ip", &["netns", "delete", &self.namespace(i)]);
        }
        if self.created {
            let _ = run("ip", &["link", "delete", &self.bridge()]);
        }
    }
}

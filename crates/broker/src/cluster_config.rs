//! Addresses and the controller quorum's voter set, as the operator writes
//! them: `--listen`, `--advertised-listen`, `--controller-listen` take
//! `HOST:PORT` (a hostname, an IPv4 address, or `[IPv6]`), and
//! `--controller-voters` takes KRaft's `controller.quorum.voters` shape,
//! `ID@HOST:PORT,ID@HOST:PORT,...`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A host (name or address) and a port. Hostnames are resolved only when
/// something binds or dials, so a name that resolves differently later is
/// followed, and an advertised name reaches clients as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// A hostname, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn new(host: impl Into<String>, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    /// Whether the host is a wildcard bind address (0.0.0.0 or ::), which
    /// no client can dial.
    pub fn is_wildcard(&self) -> bool {
        self.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
    }

    /// Resolves the host; the first address found.
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{self} resolves to no address"),
                )
            })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> HostPort {
        HostPort::new(addr.ip().to_string(), addr.port())
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<HostPort, String> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{s}': an IPv6 address needs a closing ']'"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| format!("'{s}': expected [IPv6]:PORT"))?;
            (host, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| format!("'{s}': expected HOST:PORT"))?;
            if host.contains(':') {
                return Err(format!(
                    "'{s}': write an IPv6 address in brackets, [ADDR]:PORT"
                ));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(format!("'{s}': the host is empty (expected HOST:PORT)"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c == '@' || c == ',' || c == '/')
        {
            return Err(format!("'{s}': '{host}' is not a host name or address"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("'{s}': the port must be a number from 0 to 65535"))?;
        Ok(HostPort::new(host, port))
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HostPort, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The controller quorum's voters: node id -> controller listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Voters(pub BTreeMap<i32, HostPort>);

impl Voters {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Voters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (id, addr)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}@{addr}")?;
        }
        Ok(())
    }
}

impl FromStr for Voters {
    type Err = String;

    fn from_str(s: &str) -> Result<Voters, String> {
        let mut voters = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, addr) = entry
                .split_once('@')
                .ok_or_else(|| format!("voter '{entry}': expected ID@HOST:PORT"))?;
            let id: i32 = id
                .trim()
                .parse()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| format!("voter '{entry}': the id must be a node id >= 0"))?;
            let addr: HostPort = addr.parse().map_err(|e| format!("voter '{entry}': {e}"))?;
            if voters.insert(id, addr).is_some() {
                return Err(format!("node id {id} is listed twice in the voters"));
            }
        }
        if voters.is_empty() {
            return Err("the voter list is empty (expected ID@HOST:PORT,...)".into());
        }
        Ok(Voters(voters))
    }
}

impl Serialize for Voters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Voters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Voters, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_take_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(
            "localhost:9092".parse::<HostPort>().unwrap(),
            HostPort::new("localhost", 9092)
        );
        assert_eq!(
            "10.0.0.1:1".parse::<HostPort>().unwrap(),
            HostPort::new("10.0.0.1", 1)
        );
        let v6: HostPort = "[::1]:9093".parse().unwrap();
        assert_eq!(v6, HostPort::new("::1", 9093));
        assert_eq!(v6.to_string(), "[::1]:9093");
        assert!("0.0.0.0:1".parse::<HostPort>().unwrap().is_wildcard());
        assert!(!"localhost:1".parse::<HostPort>().unwrap().is_wildcard());
    }

    #[test]
    fn bad_host_ports_say_what_to_write() {
        for (bad, hint) in [
            ("9092", "HOST:PORT"),
            (":9092", "empty"),
            ("host:99999", "0 to 65535"),
            ("::1:9092", "brackets"),
            ("[::1]9092", "[IPv6]:PORT"),
            ("a b:1", "not a host"),
        ] {
            let e = bad.parse::<HostPort>().expect_err(bad);
            assert!(e.contains(hint), "{bad}: {e}");
        }
    }

    #[test]
    fn voters_parse_in_krafts_shape_and_round_trip() {
        let v: Voters = "1@localhost:9093, 2@127.0.0.1:9094,3@[::1]:9095"
            .parse()
            .unwrap();
        assert_eq!(v.0.len(), 3);
        assert_eq!(v.0[&2], HostPort::new("127.0.0.1", 9094));
        assert_eq!(
            v.to_string(),
            "1@localhost:9093,2@127.0.0.1:9094,3@[::1]:9095"
        );
        assert_eq!(v.to_string().parse::<Voters>().unwrap(), v);
    }

    #[test]
    fn bad_voter_lists_name_the_entry() {
        for (bad, hint) in [
            ("", "empty"),
            ("1@a:1,1@b:2", "listed twice"),
            ("x@a:1", "node id"),
            ("-1@a:1", "node id"),
            ("1:a:1", "ID@HOST:PORT"),
            ("1@a", "voter '1@a'"),
        ] {
            let e = bad.parse::<Voters>().expect_err(bad);
            assert!(e.contains(hint), "{bad}: {e}");
        }
    }
}

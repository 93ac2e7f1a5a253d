//! Changing the metadata quorum's voters online (issue 15, KIP-853), with
//! real `weir serve` processes, the `weir` CLI and raw AddRaftVoter /
//! RemoveRaftVoter for the exact error codes:
//!
//! - `the_quorum_grows_from_one_voter_to_three_and_a_voter_is_replaced_without_losing_metadata`:
//!   one voter and two learners; both learners are made voters while topics
//!   are created; the original voter is killed with kill -9 and another is
//!   elected (so three voters really vote); a voter is replaced (removed, a
//!   4th node added); everything restarts; every topic is on every broker.
//!   Bad input on the way gets KRaft's codes and changes nothing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use weir_protocol::api::ApiKey;
use weir_protocol::messages::add_raft_voter::{AddRaftVoterRequest, AddRaftVoterResponse};
use weir_protocol::messages::remove_raft_voter::{RemoveRaftVoterRequest, RemoveRaftVoterResponse};

use super::cluster_harness::{Cluster, call, metadata};
use super::replication::wait_until;

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

const REQUEST_TIMED_OUT: i16 = 7;
const DUPLICATE_VOTER: i16 = 126;
const VOTER_NOT_FOUND: i16 = 127;

fn weir(bootstrap: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["--bootstrap", bootstrap])
        .env_remove("WEIR_BOOTSTRAP")
        .output()
        .expect("run weir")
}

fn weir_ok(bootstrap: &str, args: &[&str]) -> String {
    let out = weir(bootstrap, args);
    assert!(
        out.status.success(),
        "weir {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (leader, voters, observers) as `weir cluster info --format json` reports them.
fn quorum(bootstrap: &str) -> Result<(i32, BTreeSet<i32>, BTreeSet<i32>), String> {
    let out = weir(bootstrap, &["cluster", "info", "--format", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let q = info
        .get("quorum")
        .filter(|q| !q.is_null())
        .ok_or(format!("no quorum: {info}"))?;
    let ids = |key: &str| -> BTreeSet<i32> {
        q[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["id"].as_i64())
                    .map(|i| i as i32)
                    .collect()
            })
            .unwrap_or_default()
    };
    let leader = q["leader"].as_i64().unwrap_or(-1) as i32;
    Ok((leader, ids("voters"), ids("observers")))
}

fn wait_quorum(bootstrap: &str, voters: &[i32], observers: &[i32]) -> i32 {
    let voters: BTreeSet<i32> = voters.iter().copied().collect();
    let observers: BTreeSet<i32> = observers.iter().copied().collect();
    wait_until("the quorum's members", CONVERGE_TIMEOUT, || {
        let (leader, v, o) = quorum(bootstrap)?;
        (v == voters && o == observers && v.contains(&leader))
            .then_some(leader)
            .ok_or(format!("leader {leader}, voters {v:?}, observers {o:?}"))
    })
}

fn add_voter_raw(addr: SocketAddr, voter_id: i32) -> AddRaftVoterResponse {
    let request = AddRaftVoterRequest {
        cluster_id: None,
        timeout_ms: 30_000,
        voter_id,
        voter_directory_id: [0; 16],
        listeners: Vec::new(),
        ack_when_committed: true,
    };
    call(addr, ApiKey::AddRaftVoter, 1, &request).expect("AddRaftVoter")
}

fn remove_voter_raw(addr: SocketAddr, voter_id: i32) -> RemoveRaftVoterResponse {
    let request = RemoveRaftVoterRequest {
        cluster_id: None,
        voter_id,
        voter_directory_id: [0; 16],
    };
    call(addr, ApiKey::RemoveRaftVoter, 0, &request).expect("RemoveRaftVoter")
}

fn create_topic(bootstrap: &str, name: &str) {
    weir_ok(
        bootstrap,
        &[
            "topic",
            "create",
            name,
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
    );
}

/// Every broker in `ids` lists every topic in `names`.
fn wait_topics_everywhere(cluster: &Cluster, ids: &[i32], names: &[String]) {
    for &id in ids {
        wait_until("every topic on every broker", CONVERGE_TIMEOUT, || {
            let m = metadata(cluster.node(id).addr, None).map_err(|e| e.to_string())?;
            let have: BTreeSet<String> = m.topics.iter().filter_map(|t| t.name.clone()).collect();
            let missing: Vec<&String> = names.iter().filter(|n| !have.contains(*n)).collect();
            missing
                .is_empty()
                .then_some(())
                .ok_or(format!("node {id} lacks {missing:?}"))
        });
    }
}

#[test]
fn the_quorum_grows_from_one_voter_to_three_and_a_voter_is_replaced_without_losing_metadata() {
    let mut cluster = Cluster::start_with_voters(1, &[]);
    let mut topics: Vec<String> = Vec::new();
    let new_topic = |bootstrap: &str, topics: &mut Vec<String>| {
        let name = format!("meta-{}", topics.len());
        create_topic(bootstrap, &name);
        topics.push(name);
    };
    let b1 = cluster.node(1).bootstrap();
    wait_quorum(&b1, &[1], &[2, 3]);
    new_topic(&b1, &mut topics);

    // Bad input changes nothing and gets KRaft's codes.
    let unknown = add_voter_raw(cluster.node(1).addr, 9);
    assert_eq!(
        unknown.error_code, REQUEST_TIMED_OUT,
        "{:?}",
        unknown.error_message
    );
    assert!(
        unknown
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("not a learner")),
        "{:?}",
        unknown.error_message
    );
    let last = remove_voter_raw(cluster.node(2).addr, 1);
    assert_eq!(last.error_code, VOTER_NOT_FOUND, "{:?}", last.error_message);
    let not_voter = remove_voter_raw(cluster.node(1).addr, 3);
    assert_eq!(
        not_voter.error_code, VOTER_NOT_FOUND,
        "{:?}",
        not_voter.error_message
    );
    wait_quorum(&b1, &[1], &[2, 3]);

    // Grow 1 -> 3 voters, through a learner's broker and the CLI.
    let b2 = cluster.node(2).bootstrap();
    let said = weir_ok(&b2, &["cluster", "add-voter", "--node-id", "2"]);
    assert!(said.contains("added voter node 2"), "{said}");
    new_topic(&b2, &mut topics);
    let again = add_voter_raw(cluster.node(3).addr, 2);
    assert_eq!(
        again.error_code, DUPLICATE_VOTER,
        "{:?}",
        again.error_message
    );
    weir_ok(&b1, &["cluster", "add-voter", "--node-id", "3"]);
    wait_quorum(&b1, &[1, 2, 3], &[]);
    new_topic(&b1, &mut topics);

    // Three voters: without the original one, the other two elect a leader
    // and keep committing.
    cluster.node_mut(1).kill9();
    let b3 = cluster.node(3).bootstrap();
    let leader = wait_until("a new controller", CONVERGE_TIMEOUT, || {
        let (leader, voters, _) = quorum(&b3)?;
        (leader == 2 || leader == 3)
            .then_some(leader)
            .ok_or(format!("leader {leader} of {voters:?}"))
    });
    eprintln!("node {leader} leads after node 1 was killed");
    new_topic(&b3, &mut topics);
    cluster.node_mut(1).restart();
    wait_topics_everywhere(&cluster, &[1, 2, 3], &topics);

    // Replace voter 3 with a new node 4 (a learner first).
    weir_ok(&b1, &["cluster", "remove-voter", "--node-id", "3"]);
    wait_quorum(&b1, &[1, 2], &[3]);
    new_topic(&b1, &mut topics);
    let id = cluster.add_node(&[]);
    assert_eq!(id, 4);
    let b4 = cluster.node(4).bootstrap();
    wait_quorum(&b4, &[1, 2], &[3, 4]);
    weir_ok(&b4, &["cluster", "add-voter", "--node-id", "4"]);
    wait_quorum(&b1, &[1, 2, 4], &[3]);
    new_topic(&b4, &mut topics);
    let text = weir_ok(&b1, &["cluster", "info"]);
    assert!(text.contains("observer\t3"), "{text}");

    // Everything restarts (kill -9, nothing flushed on the way out); the
    // configured voter lists still say "1", the committed membership wins.
    for id in 1..=4 {
        cluster.node_mut(id).kill9();
    }
    for id in 1..=4 {
        cluster.node_mut(id).restart_without_waiting();
    }
    for id in 1..=4 {
        cluster.node_mut(id).wait_until_listening();
    }
    wait_quorum(&b1, &[1, 2, 4], &[3]);
    wait_topics_everywhere(&cluster, &[1, 2, 3, 4], &topics);
    new_topic(&b3, &mut topics);
    wait_topics_everywhere(&cluster, &[1, 2, 3, 4], &topics);
    assert_eq!(topics.len(), 7);
}

//! The short soak CI runs: a 3-broker cluster under load through every fault kind (at least
//! 30 faults), ending with the checker's verdict, which must be VALID.
//!
//! Needs root (network namespaces, iptables, tmpfs and FUSE mounts). Elsewhere it prints
//! SKIPPED and returns, except under CI=true, where it fails. `WEIR_CHAOS_SHORT_FAULTS` and
//! `WEIR_CHAOS_SEED` change the number of faults (not below 30) and the seed.

use std::time::Duration;

use weir_chaos::soak::{self, SoakConfig};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_short_soak_through_every_fault_kind_loses_nothing() {
    if let Err(why) = weir_chaos::net::available()
        .and_then(|()| weir_crashfs::available().map_err(|e| e.to_string()))
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "the short soak cannot run in CI: {why}"
        );
        eprintln!("SKIPPED short soak: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let history = std::env::temp_dir().join(format!(
        "weir-chaos-short-soak-{}.jsonl",
        std::process::id()
    ));
    let mut config = SoakConfig::new(weir_chaos::weir_bin(), tmp.path().join("work"));
    config.faults = env_u64("WEIR_CHAOS_SHORT_FAULTS", 30).max(30) as usize;
    config.seed = env_u64("WEIR_CHAOS_SEED", 16);
    config.hold_ms = (300, 2_000);
    config.settle_ms = 300;
    config.history_path = Some(history.clone());
    config.verbose = true;
    let outcome = soak::run(&config).expect("the soak ran");
    let summary = outcome.summary();
    eprintln!("{summary}");
    assert!(
        outcome.faults_injected >= 30,
        "only {} faults",
        outcome.faults_injected
    );
    // Every kind came up, so the short soak exercises each mechanism.
    for kind in soak::FaultKind::ALL {
        assert!(
            outcome.report.faults_by_kind.contains_key(kind.name()),
            "seed {} never injected {}: the first round must cover every kind\n{summary}",
            config.seed,
            kind.name()
        );
    }
    assert!(outcome.report.acked > 1_000, "too little load\n{summary}");
    assert!(
        outcome.is_valid(),
        "the checker found violations; history kept at {}\n{summary}",
        history.display()
    );
    let _ = std::fs::remove_file(&history);
    // Keep the runtime in view: CI's whole run has 90 minutes.
    assert!(
        outcome.duration < Duration::from_secs(600),
        "the short soak took {:?}",
        outcome.duration
    );
}

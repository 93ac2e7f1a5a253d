//! The checker can fail: with the planted bug `WEIR_TEST_PLANT_HW_WITHOUT_ISR=1` a leader
//! raises the high watermark to its own durable end, so acks=all answers before any follower
//! has the records. Cutting that leader off from the other brokers (clients still reach it)
//! for longer than the session timeout lets it ack records the new leader never gets; when the
//! partition heals it truncates them away. The checker must report lost acked records.
//!
//! Root only, like the short soak (SKIPPED elsewhere, a failure under CI=true).

use weir_chaos::soak::{self, FaultKind, SoakConfig};

#[test]
fn the_checker_reports_lost_acks_when_the_high_watermark_ignores_the_isr() {
    if let Err(why) = weir_chaos::net::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the planted-bug test cannot run in CI: {why}"
        );
        eprintln!("SKIPPED planted-bug test: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = SoakConfig::new(weir_chaos::weir_bin(), tmp.path().join("work"));
    config.faults = 3;
    config.seed = 5;
    config.kinds = vec![FaultKind::PartitionLeader];
    // Longer than the session timeout (3 s): the controller elects a new leader while the
    // isolated one still acks.
    config.hold_ms = (7_000, 8_000);
    config.settle_ms = 2_000;
    config.transactions = false;
    config.consumers = 0;
    config.broker_env = vec![("WEIR_TEST_PLANT_HW_WITHOUT_ISR".into(), "1".into())];
    config.verbose = true;
    let outcome = soak::run(&config).expect("the soak ran");
    let summary = outcome.summary();
    eprintln!("{summary}");
    assert!(
        outcome.report.count("lost-ack") > 0,
        "the planted bug went unnoticed\n{summary}"
    );
}

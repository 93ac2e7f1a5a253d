//! The simulation as CI runs it: a fixed set of seeds must hold every invariant, a seed must
//! replay exactly, each planted bug must be caught, and each bug the simulation found keeps
//! its seed here.
//!
//! A seed names a run of this version of the simulation: changing the simulation (its
//! options, the order it draws random numbers in) changes what each seed does, so the
//! regression seeds below only keep their meaning together with the unit tests that pin each
//! fix in the code it touched.

use weir_sim::{Options, Planted, Stats};

/// Seeds CI runs; together several thousand injected faults (see the test's output).
const CI_SEEDS: u64 = 1000;

fn run_seeds(seeds: std::ops::Range<u64>, planted: Option<Planted>) -> Result<Stats, String> {
    let mut total = Stats::default();
    for seed in seeds {
        let mut opts = Options::new(seed);
        opts.planted = planted;
        match weir_sim::run(opts) {
            Ok(s) => {
                total.steps += s.steps;
                total.crashes += s.crashes;
                total.isolations += s.isolations;
                total.cut_links += s.cut_links;
                total.failovers += s.failovers;
                total.dropped += s.dropped;
                total.duplicated += s.duplicated;
                total.acked += s.acked;
                total.leader_elections += s.leader_elections;
                total.truncations += s.truncations;
            }
            Err(v) => return Err(v.to_string()),
        }
    }
    Ok(total)
}

#[test]
fn ci_seeds_hold_every_invariant() {
    let started = std::time::Instant::now();
    let total = match run_seeds(0..CI_SEEDS, None) {
        Ok(t) => t,
        Err(v) => panic!("{v}"),
    };
    eprintln!(
        "{CI_SEEDS} seeds in {:.1} s: {} faults injected ({} crashes, {} isolations, {} cut \
         links, {} controller failovers, {} messages dropped, {} duplicated), {} writes acked, \
         {} leader elections, {} truncations",
        started.elapsed().as_secs_f64(),
        total.faults(),
        total.crashes,
        total.isolations,
        total.cut_links,
        total.failovers,
        total.dropped,
        total.duplicated,
        total.acked,
        total.leader_elections,
        total.truncations,
    );
    assert!(
        total.faults() >= 5_000,
        "too few faults: {}",
        total.faults()
    );
    assert!(total.acked > 0 && total.leader_elections > 0 && total.truncations > 0);
}

#[test]
fn a_seed_replays_exactly() {
    let outcome = |r: Result<Stats, weir_sim::Violation>| r.map_err(|v| (v.now_ms, v.what));
    for seed in [3, 11, 77] {
        let a = outcome(weir_sim::run(Options::new(seed)));
        let b = outcome(weir_sim::run(Options::new(seed)));
        assert_eq!(a, b, "seed {seed} ran two different ways");
        let (traced, trace) = weir_sim::run_traced(Options::new(seed));
        assert_eq!(outcome(traced), a, "tracing changed the run");
        assert!(!trace.is_empty());
    }
}

/// The first failing seed with `planted`, or `None`.
fn first_failure(planted: Planted, seeds: u64) -> Option<String> {
    (0..seeds).find_map(|seed| {
        let mut opts = Options::new(seed);
        opts.planted = Some(planted);
        weir_sim::run(opts).err().map(|v| v.to_string())
    })
}

#[test]
fn a_high_watermark_advanced_without_the_isr_is_caught() {
    let failure = first_failure(Planted::HwWithoutIsr, 200)
        .expect("the simulation must catch a watermark that ignores the ISR");
    eprintln!("{failure}");
    assert!(failure.contains("seed "), "the failure names its seed");
}

#[test]
fn a_follower_truncating_to_its_high_watermark_is_caught() {
    let failure = first_failure(Planted::TruncateToHighWatermark, 500)
        .expect("the simulation must catch truncation to the high watermark");
    eprintln!("{failure}");
    assert!(failure.contains("seed "), "the failure names its seed");
}

/// Found by the simulation: any metadata applied while a leader's ISR expansion was out
/// (another broker registering, say) re-applied the partition's unchanged state to the
/// leader, which dropped the pending expansion; the high watermark then passed the joining
/// follower, the expansion committed anyway, the leader crashed and the follower, now the
/// ISR, was elected without the acknowledged records.
#[test]
fn seed_11_a_pending_isr_expansion_survives_unrelated_metadata() {
    if let Err(v) = weir_sim::run(Options::new(11)) {
        panic!("{v}");
    }
}

/// Found by the simulation: a leader's ISR expansion committed, but the leader heard a
/// refusal first (here the duplicate of its request, refused as stale once the first had
/// committed; a lost answer and a timeout do the same). It dropped the pending expansion, the
/// high watermark passed the joining follower, which the image already held in the ISR, and
/// that follower was elected without the acknowledged records once the leader crashed.
#[test]
fn seed_8404_a_refused_or_unanswered_isr_proposal_stays_pending_until_metadata() {
    if let Err(v) = weir_sim::run(Options::new(8404)) {
        panic!("{v}");
    }
}

/// Found by the simulation: a replica whose epoch cache started at epoch 1 (its records of
/// epoch 1 were written by a leader that never committed them) asked a new leader where
/// epoch 1 ended; the leader knew epochs 0 and 2 and answered (0, 2). The replica, knowing
/// nothing of epoch 0, took "unknown" for its own end of epoch 0 and kept its records below
/// 2, which differed from the committed ones; later elected, it would have served them. Kafka
/// answers an epoch older than every cached one with the first cached epoch's start offset.
#[test]
fn seed_15730_an_epoch_older_than_the_cache_ends_where_the_cache_begins() {
    if let Err(v) = weir_sim::run(Options::new(15730)) {
        panic!("{v}");
    }
}

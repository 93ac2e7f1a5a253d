//! `weir-sim`: runs seeds of the deterministic simulation.
//!
//! ```text
//! weir-sim --seed 42 [--trace]             one seed (with --trace, every event)
//! weir-sim --seeds 10000 [--start 0]       a range of seeds, across --threads threads
//! weir-sim ... --planted hw-without-isr    with a bug planted (hw-without-isr,
//!                                          truncate-to-hw); a failure is expected
//! ```
//! Exits 1 on the first failing seed, printing it and how to replay it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use weir_sim::{Options, Planted, Stats};

struct Args {
    seed: Option<u64>,
    seeds: u64,
    start: u64,
    threads: u64,
    trace: bool,
    planted: Option<Planted>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seed: None,
        seeds: 100,
        start: 0,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        trace: false,
        planted: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match a.as_str() {
            "--seed" => args.seed = Some(number(value()?)?),
            "--seeds" => args.seeds = number(value()?)?,
            "--start" => args.start = number(value()?)?,
            "--threads" => args.threads = number(value()?)?.max(1),
            "--trace" => args.trace = true,
            "--planted" => {
                args.planted = Some(match value()?.as_str() {
                    "hw-without-isr" => Planted::HwWithoutIsr,
                    "truncate-to-hw" => Planted::TruncateToHighWatermark,
                    other => return Err(format!("unknown planted bug {other}")),
                })
            }
            "-h" | "--help" => {
                return Err(
                    "usage: weir-sim [--seed S [--trace]] [--seeds N] [--start S0] \
                            [--threads T] [--planted hw-without-isr|truncate-to-hw]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn options(args: &Args, seed: u64) -> Options {
    let mut opts = Options::new(seed);
    opts.planted = args.planted;
    opts
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(seed) = args.seed {
        let (result, trace) = if args.trace {
            weir_sim::run_traced(options(&args, seed))
        } else {
            (weir_sim::run(options(&args, seed)), Vec::new())
        };
        for line in &trace {
            println!("{line}");
        }
        match result {
            Ok(stats) => println!("seed {seed} ok: {stats:?} faults={}", stats.faults()),
            Err(v) => {
                println!("{v}");
                std::process::exit(1);
            }
        }
        return;
    }
    let started = Instant::now();
    let next = AtomicU64::new(args.start);
    let end = args.start + args.seeds;
    let failed = AtomicBool::new(false);
    let totals = std::sync::Mutex::new((0u64, Stats::default()));
    std::thread::scope(|s| {
        for _ in 0..args.threads {
            s.spawn(|| {
                loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    match weir_sim::run(options(&args, seed)) {
                        Ok(stats) => {
                            let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                            t.0 += 1;
                            add(&mut t.1, &stats);
                        }
                        Err(v) => {
                            failed.store(true, Ordering::Relaxed);
                            println!("{v}");
                        }
                    }
                }
            });
        }
    });
    let (runs, t) = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{runs} seeds ok in {secs:.1} s ({:.1} seeds/s, {} threads): faults {} (crashes {}, \
         isolations {}, cut links {}, controller failovers {}, messages dropped {}, \
         duplicated {}), acked {}, leader elections {}, truncations {}, metadata entries {}",
        runs as f64 / secs,
        args.threads,
        t.faults(),
        t.crashes,
        t.isolations,
        t.cut_links,
        t.failovers,
        t.dropped,
        t.duplicated,
        t.acked,
        t.leader_elections,
        t.truncations,
        t.metadata_entries,
    );
    if failed.load(Ordering::Relaxed) {
        std::process::exit(1);
    }
}

fn add(t: &mut Stats, s: &Stats) {
    t.steps += s.steps;
    t.crashes += s.crashes;
    t.isolations += s.isolations;
    t.cut_links += s.cut_links;
    t.failovers += s.failovers;
    t.dropped += s.dropped;
    t.duplicated += s.duplicated;
    t.produced += s.produced;
    t.acked += s.acked;
    t.leader_elections += s.leader_elections;
    t.truncations += s.truncations;
    t.metadata_entries += s.metadata_entries;
}

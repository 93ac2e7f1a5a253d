//! `weir bench e2e --plot FILE`: one SVG with the end-to-end latency over the run (p50, p99
//! and max of each 100 ms of send time, log scale) above a histogram of all samples
//! (log-spaced bins, log counts). A tail that a p99 figure hides shows here as when it
//! happened and how often.
//!
//! Built with plotters' SVG backend only (no fonts, no bitmap), and only with the
//! `rdkafka-driver` feature, so the broker's build does not grow.

use std::path::Path;

use plotters::prelude::*;

use super::Sample;

/// Width of one time bucket of the upper panel.
const BUCKET_US: u64 = 100_000;
/// Histogram bins per decade of latency.
const BINS_PER_DECADE: f64 = 20.0;
const WIDTH_PX: u32 = 1200;
const HEIGHT_PX: u32 = 800;

/// p50, p99 and max of one time bucket, in ms, and its start in s.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BucketStats {
    start_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Splits samples (in send order or not) into buckets of `BUCKET_US` send time.
fn buckets(samples: &[Sample]) -> Vec<BucketStats> {
    let mut by_bucket: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for s in samples {
        by_bucket
            .entry(s.sent_us / BUCKET_US)
            .or_default()
            .push(s.latency_us);
    }
    by_bucket
        .into_iter()
        .map(|(bucket, mut lat)| {
            lat.sort_unstable();
            let at = |q: f64| {
                let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
                lat[i] as f64 / 1000.0
            };
            BucketStats {
                start_s: (bucket * BUCKET_US) as f64 / 1e6,
                p50_ms: at(0.50),
                p99_ms: at(0.99),
                max_ms: at(1.0),
            }
        })
        .collect()
}

/// Log-spaced histogram: (bin lower ms, bin upper ms, count), empty bins left out.
fn histogram(samples: &[Sample]) -> Vec<(f64, f64, u64)> {
    let mut counts: std::collections::BTreeMap<i64, u64> = Default::default();
    for s in samples {
        let ms = (s.latency_us.max(1)) as f64 / 1000.0;
        let bin = (ms.log10() * BINS_PER_DECADE).floor() as i64;
        *counts.entry(bin).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(bin, n)| {
            let lo = 10f64.powf(bin as f64 / BINS_PER_DECADE);
            let hi = 10f64.powf((bin + 1) as f64 / BINS_PER_DECADE);
            (lo, hi, n)
        })
        .collect()
}

/// The upper panel's figures as CSV: `unix_ms,p50_ms,p99_ms,max_ms,records` per 100 ms of
/// send time, `started_unix_ms` being the wall clock at send time zero.
pub fn series_csv(started_unix_ms: u64, samples: &[Sample]) -> String {
    let mut counts: std::collections::BTreeMap<u64, u64> = Default::default();
    for s in samples {
        *counts.entry(s.sent_us / BUCKET_US).or_default() += 1;
    }
    let mut csv = String::from("unix_ms,p50_ms,p99_ms,max_ms,records\n");
    for (b, n) in buckets(samples).iter().zip(counts.values()) {
        csv.push_str(&format!(
            "{},{:.3},{:.3},{:.3},{n}\n",
            started_unix_ms + (b.start_s * 1000.0).round() as u64,
            b.p50_ms,
            b.p99_ms,
            b.max_ms
        ));
    }
    csv
}

type PlotResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub fn write_svg(path: &Path, title: &str, samples: &[Sample]) -> anyhow::Result<()> {
    draw(path, title, samples).map_err(|e| anyhow::anyhow!("{e}"))
}

fn draw(path: &Path, title: &str, samples: &[Sample]) -> PlotResult {
    let series = buckets(samples);
    let bins = histogram(samples);
    let max_ms = series.iter().map(|b| b.max_ms).fold(0.01, f64::max);
    let end_s = series
        .last()
        .map_or(1.0, |b| b.start_s + BUCKET_US as f64 / 1e6);
    let start_s = series.first().map_or(0.0, |b| b.start_s);
    let y_lo = series
        .iter()
        .map(|b| b.p50_ms)
        .fold(max_ms, f64::min)
        .max(0.01)
        / 2.0;
    let y_hi = max_ms * 2.0;

    let root = SVGBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(i32::try_from(HEIGHT_PX / 2 + 40).unwrap_or(440));

    let mut over_time = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(start_s..end_s, (y_lo..y_hi).log_scale())?;
    over_time
        .configure_mesh()
        .x_desc("send time (s)")
        .y_desc("end-to-end latency (ms)")
        .draw()?;
    let lines: [(&str, RGBColor, fn(&BucketStats) -> f64); 3] = [
        ("max", RED, |b| b.max_ms),
        ("p99", BLUE, |b| b.p99_ms),
        ("p50", GREEN, |b| b.p50_ms),
    ];
    for (name, color, value) in lines {
        over_time
            .draw_series(LineSeries::new(
                series.iter().map(|b| (b.start_s, value(b).max(y_lo))),
                color,
            ))?
            .label(format!("{name} per 100 ms"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    over_time
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let count_max = bins.iter().map(|b| b.2).max().unwrap_or(1) as f64;
    let x_lo = bins.first().map_or(0.01, |b| b.0);
    let x_hi = bins.last().map_or(1.0, |b| b.1);
    let mut hist = ChartBuilder::on(&lower)
        .caption(
            format!("histogram of {} samples", samples.len()),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (0.5..count_max * 2.0).log_scale())?;
    hist.configure_mesh()
        .x_desc("end-to-end latency (ms)")
        .y_desc("records")
        .draw()?;
    hist.draw_series(
        bins.iter().map(|&(lo, hi, n)| {
            Rectangle::new([(lo, 0.5), (hi, n as f64)], BLUE.mix(0.6).filled())
        }),
    )?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent_ms: u64, latency_us: u64) -> Sample {
        Sample {
            sent_us: sent_ms * 1000,
            latency_us,
        }
    }

    #[test]
    fn buckets_report_percentiles_per_100_ms_of_send_time() {
        let mut samples: Vec<Sample> = (0..100).map(|i| sample(i, 1000)).collect();
        samples.push(sample(50, 40_000)); // one tail record in the first bucket
        samples.extend((0..100).map(|i| sample(200 + i / 2, 500)));
        let b = buckets(&samples);
        assert_eq!(b.len(), 2, "{b:?}"); // 0-100 ms, 200-300 ms (100-200 ms is empty)
        assert_eq!(b[0].max_ms, 40.0);
        assert_eq!(b[0].p50_ms, 1.0);
        assert_eq!(b[1].start_s, 0.2);
        assert_eq!(b[1].max_ms, 0.5);
    }

    #[test]
    fn histogram_bins_are_log_spaced_and_count_every_sample() {
        let samples: Vec<Sample> = [100, 1000, 1010, 100_000]
            .into_iter()
            .map(|us| sample(0, us))
            .collect();
        let h = histogram(&samples);
        assert_eq!(h.iter().map(|b| b.2).sum::<u64>(), 4);
        assert_eq!(h.len(), 3, "1.00 and 1.01 ms share a bin: {h:?}");
        for (lo, hi, _) in &h {
            assert!((hi / lo - 10f64.powf(1.0 / BINS_PER_DECADE)).abs() < 1e-9);
        }
    }

    #[test]
    fn a_plot_is_written_as_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e2e.svg");
        let samples: Vec<Sample> = (0..5000).map(|i| sample(i, 500 + (i % 97) * 10)).collect();
        write_svg(&path, "test", &samples).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.contains("histogram of 5000 samples"));
    }
}

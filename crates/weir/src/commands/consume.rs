//! `weir consume TOPIC`: prints records, one line each.
//!
//! Without `--follow` the end is fixed when the command starts (each
//! partition's high watermark then), so the output is a snapshot and the
//! command exits; with `--follow` it keeps long-polling.

use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

use anyhow::Context as _;
use weir_client::{Client, ClientError, ErrorCode, FetchPosition, FetchedRecord, OffsetSpec};

use super::{ConnectArgs, per_second};

/// Bytes asked for per partition per fetch.
const FETCH_BYTES_MAX: i32 = 4 * 1024 * 1024;
/// How long the broker may hold a fetch waiting for data.
const FETCH_WAIT_MS: i32 = 500;

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// beginning, end, offset:N or timestamp:MS.
    #[arg(long, default_value = "beginning", value_parser = parse_start)]
    pub from: Start,
    /// Only this partition (default: all).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Keep waiting for new records instead of exiting at the end.
    #[arg(long)]
    pub follow: bool,
    /// Prefix each line with PARTITION:OFFSET and a tab.
    #[arg(long)]
    pub print_offsets: bool,
    /// Prefix each value with its key and a tab.
    #[arg(long)]
    pub print_key: bool,
    /// Prefix each value with its headers (k=v,k=v) and a tab.
    #[arg(long)]
    pub print_headers: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    Offset(i64),
    Timestamp(i64),
}

fn parse_start(s: &str) -> Result<Start, String> {
    let bad = || format!("--from must be beginning, end, offset:N or timestamp:MS, got '{s}'");
    match s {
        "beginning" | "earliest" => Ok(Start::Beginning),
        "end" | "latest" => Ok(Start::End),
        _ => match s.split_once(':') {
            Some(("offset", n)) => n
                .parse()
                .ok()
                .filter(|n: &i64| *n >= 0)
                .map(Start::Offset)
                .ok_or_else(bad),
            Some(("timestamp", ms)) => ms.parse().map(Start::Timestamp).map_err(|_| bad()),
            _ => Err(bad()),
        },
    }
}

/// One output line (without the newline).
fn format_record(args: &ConsumeArgs, partition: i32, record: &FetchedRecord) -> Vec<u8> {
    let mut line = Vec::new();
    if args.print_offsets {
        line.extend_from_slice(format!("{partition}:{}\t", record.offset).as_bytes());
    }
    if args.print_key {
        line.extend_from_slice(record.key.as_deref().unwrap_or_default());
        line.push(b'\t');
    }
    if args.print_headers {
        for (i, h) in record.headers.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(h.key.as_bytes());
            line.push(b'=');
            line.extend_from_slice(h.value.as_deref().unwrap_or_default());
        }
        line.push(b'\t');
    }
    line.extend_from_slice(record.value.as_deref().unwrap_or_default());
    line
}

async fn start_offset(
    client: &mut Client,
    topic: &str,
    partition: i32,
    start: Start,
) -> anyhow::Result<i64> {
    let spec = match start {
        Start::Offset(n) => return Ok(n),
        Start::Beginning => OffsetSpec::Earliest,
        Start::End => OffsetSpec::Latest,
        Start::Timestamp(ms) => OffsetSpec::Timestamp(ms),
    };
    let listed = client.list_offsets(topic, partition, spec).await?;
    if listed.offset >= 0 {
        return Ok(listed.offset);
    }
    // No record at or after the timestamp: start at the end.
    Ok(client
        .list_offsets(topic, partition, OffsetSpec::Latest)
        .await?
        .offset)
}

struct PartitionState {
    position: FetchPosition,
    /// Exclusive end when not following.
    end_offset: Option<i64>,
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let info = client.topic(&args.topic, false).await?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) => {
            if !info.partitions.iter().any(|i| i.partition == p) {
                return Err(ClientError::UnknownPartition {
                    topic: args.topic.clone(),
                    partition: p,
                    partition_count: info.partitions.len(),
                }
                .into());
            }
            vec![p]
        }
        None => info.partitions.iter().map(|p| p.partition).collect(),
    };
    let mut states = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let offset = start_offset(&mut client, &args.topic, partition, args.from)
            .await
            .with_context(|| {
                format!(
                    "could not find the start offset of {}-{partition}",
                    args.topic
                )
            })?;
        let end_offset = if args.follow {
            None
        } else {
            Some(
                client
                    .list_offsets(&args.topic, partition, OffsetSpec::Latest)
                    .await?
                    .offset,
            )
        };
        states.push(PartitionState {
            position: FetchPosition {
                topic: args.topic.clone(),
                partition,
                offset,
            },
            end_offset,
        });
    }

    let started = Instant::now();
    let show_progress = std::io::stderr().is_terminal() && !std::io::stdout().is_terminal();
    let mut printed: u64 = 0;
    let stdout = std::io::stdout();
    let limit = args.count.unwrap_or(u64::MAX);
    'outer: loop {
        states.retain(|s| s.end_offset.is_none_or(|end| s.position.offset < end));
        if states.is_empty() || printed >= limit {
            break;
        }
        let positions: Vec<FetchPosition> = states.iter().map(|s| s.position.clone()).collect();
        let results = client
            .fetch_many(&positions, FETCH_BYTES_MAX, FETCH_WAIT_MS)
            .await?;
        let mut out = stdout.lock();
        for (state, result) in states.iter_mut().zip(results) {
            let fetched = match result {
                Ok(f) => f,
                Err(e) if e.error_code() == Some(ErrorCode::OffsetOutOfRange) => {
                    // Retention removed what we were about to read (skip
                    // ahead), or the offset is past the end (wait at the end).
                    let partition = state.position.partition;
                    let earliest = client
                        .list_offsets(&args.topic, partition, OffsetSpec::Earliest)
                        .await?
                        .offset;
                    let latest = client
                        .list_offsets(&args.topic, partition, OffsetSpec::Latest)
                        .await?
                        .offset;
                    let resume = if state.position.offset < earliest {
                        earliest
                    } else {
                        latest
                    };
                    eprintln!(
                        "warning: offset {} of {}-{partition} is out of range ({earliest}..{latest}); continuing at {resume}",
                        state.position.offset, args.topic
                    );
                    state.position.offset = resume;
                    continue;
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(error = %e, "retriable fetch error; retrying");
                    Client::backoff(100).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for record in &fetched.records {
                if state.end_offset.is_some_and(|end| record.offset >= end) {
                    break;
                }
                let mut line = format_record(&args, fetched.partition, record);
                line.push(b'\n');
                if let Err(e) = out.write_all(&line) {
                    // A closed pipe (`| head`) is a normal way to stop.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e).context("could not write to stdout");
                }
                printed += 1;
                if printed >= limit {
                    break 'outer;
                }
            }
            state.position.offset = fetched.next_offset;
            // A partition emptied below our end (e.g. records deleted) is done.
            if let Some(end) = state.end_offset
                && fetched.records.is_empty()
                && fetched.high_watermark <= state.position.offset
                && fetched.high_watermark < end
            {
                state.end_offset = Some(state.position.offset);
            }
        }
        match out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("could not write to stdout")?,
        }
        if show_progress {
            eprint!(
                "\r{printed} records, {:.0} records/s   ",
                per_second(printed, started.elapsed())
            );
        }
    }
    let _ = stdout.lock().flush();
    if show_progress {
        eprintln!();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use clap::Parser as _;
    use weir_client::RecordHeader;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ConsumeArgs,
    }

    #[test]
    fn from_accepts_every_documented_form() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("end"), Ok(Start::End));
        assert_eq!(parse_start("offset:42"), Ok(Start::Offset(42)));
        assert_eq!(
            parse_start("timestamp:1700000000000"),
            Ok(Start::Timestamp(1_700_000_000_000))
        );
        assert!(parse_start("offset:-1").is_err());
        assert!(parse_start("offset:x").is_err());
        assert!(parse_start("middle").is_err());
    }

    #[test]
    fn line_has_offsets_key_headers_then_value() {
        let w = Wrapper::parse_from([
            "x",
            "t",
            "--print-offsets",
            "--print-key",
            "--print-headers",
        ]);
        let record = FetchedRecord {
            offset: 7,
            timestamp_ms: 0,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                RecordHeader {
                    key: "a".into(),
                    value: Some(Bytes::from_static(b"1")),
                },
                RecordHeader {
                    key: "b".into(),
                    value: None,
                },
            ],
        };
        assert_eq!(
            format_record(&w.args, 2, &record),
            b"2:7\tk\ta=1,b=\tv".to_vec()
        );
        let plain = Wrapper::parse_from(["x", "t"]);
        assert_eq!(format_record(&plain.args, 2, &record), b"v".to_vec());
    }
}

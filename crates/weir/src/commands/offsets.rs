//! `weir offsets TOPIC...`: per partition log start, high watermark and last
//! stable offset, and with `--at MS` the first offset at or after a
//! timestamp (kcat -Q, Kafka's GetOffsetShell).

use serde::Serialize;
use weir_client::OffsetSpec;

use super::{ConnectArgs, OutputFormat, print_json};

#[derive(clap::Args, Debug)]
pub struct OffsetsArgs {
    /// Topic(s).
    #[arg(required = true, num_args = 1..)]
    pub topics: Vec<String>,
    /// Only these partitions (repeatable; default: all).
    #[arg(short = 'p', long = "partition")]
    pub partitions: Vec<i32>,
    /// Also look up the first offset whose timestamp is at or after MS
    /// (ms since the epoch; a leading @ is allowed).
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    pub at: Option<i64>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn parse_ms(s: &str) -> Result<i64, String> {
    s.strip_prefix('@')
        .unwrap_or(s)
        .parse()
        .ok()
        .filter(|ms: &i64| *ms >= 0)
        .ok_or_else(|| format!("--at must be a timestamp in ms since the epoch, got '{s}'"))
}

/// One row of `weir offsets --format json`. Fields are only ever added.
#[derive(Serialize)]
struct OffsetsJson {
    topic: String,
    partition: i32,
    log_start: i64,
    high_watermark: i64,
    last_stable: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<AtJson>,
}

#[derive(Serialize)]
struct AtJson {
    /// The timestamp asked about.
    timestamp_asked: i64,
    /// First offset with a timestamp at or after it; -1 if none (the end).
    offset: i64,
    /// That record's timestamp; -1 if none.
    timestamp: i64,
}

pub async fn run(args: OffsetsArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let mut rows = Vec::new();
    for topic in &args.topics {
        let info = client.topic(topic, false).await?;
        let partitions: Vec<i32> = info
            .partitions
            .iter()
            .map(|p| p.partition)
            .filter(|p| args.partitions.is_empty() || args.partitions.contains(p))
            .collect();
        if let Some(missing) = args
            .partitions
            .iter()
            .find(|p| !info.partitions.iter().any(|i| i.partition == **p))
        {
            anyhow::bail!(
                "topic '{topic}' has no partition {missing} (it has {})",
                info.partitions.len()
            );
        }
        for partition in partitions {
            let (log_start, high_watermark, last_stable) =
                super::topic::partition_offsets(&mut client, topic, partition).await?;
            let at = match args.at {
                Some(ms) => {
                    let found = client
                        .list_offsets(topic, partition, OffsetSpec::Timestamp(ms))
                        .await?;
                    Some(AtJson {
                        timestamp_asked: ms,
                        offset: found.offset,
                        timestamp: found.timestamp_ms,
                    })
                }
                None => None,
            };
            rows.push(OffsetsJson {
                topic: topic.clone(),
                partition,
                log_start,
                high_watermark,
                last_stable,
                at,
            });
        }
    }
    if args.format == OutputFormat::Json {
        return print_json(&rows);
    }
    if args.at.is_some() {
        println!("TOPIC\tPARTITION\tLOG-START\tHIGH-WATERMARK\tLAST-STABLE\tOFFSET-AT\tTIMESTAMP");
    } else {
        println!("TOPIC\tPARTITION\tLOG-START\tHIGH-WATERMARK\tLAST-STABLE");
    }
    for r in rows {
        let at =
            r.at.map(|a| format!("\t{}\t{}", a.offset, a.timestamp))
                .unwrap_or_default();
        println!(
            "{}\t{}\t{}\t{}\t{}{at}",
            r.topic, r.partition, r.log_start, r.high_watermark, r.last_stable
        );
    }
    Ok(())
}

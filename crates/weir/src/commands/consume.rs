//! `weir consume TOPIC...`: prints records, one line each (or as a format
//! string or JSON says).
//!
//! Without `--follow` the end is fixed when the command starts (each
//! partition's high watermark then, or the end of `-o START:END`), so the
//! output is a snapshot and the command exits; with `--follow` it keeps
//! long-polling, and rides out a broker restart by reconnecting with backoff.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use weir_client::{
    Client, ClientError, ErrorCode, FetchPosition, FetchedRecord, Membership, MembershipTimeouts,
    OffsetSpec, needs_rejoin,
};

use super::{ConnectArgs, per_second};

/// Bytes asked for per partition per fetch.
const FETCH_BYTES_MAX: i32 = 4 * 1024 * 1024;
/// How long the broker may hold a fetch waiting for data.
const FETCH_WAIT_MS: i32 = 500;
/// Longest pause between reconnect attempts while following.
const RECONNECT_BACKOFF_MS_MAX: u64 = 5_000;
/// How often a group member heartbeats: a third of its session timeout, as
/// Kafka's consumer does.
const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(3_000);

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// Topic(s) to read; with --regex, patterns matched against whole topic names.
    #[arg(required = true, num_args = 1..)]
    pub topics: Vec<String>,
    /// Treat the topic arguments as regular expressions (rpk -r).
    #[arg(short = 'r', long)]
    pub regex: bool,
    /// Where to start and, optionally, stop (rpk's -o): start|oldest, end|newest,
    /// N (an offset), +N (N after the start), -N (N before the end);
    /// START:END stops before END (an offset, +N, or `end`); timestamps in
    /// ms: @T, @T1:T2, @:T.
    #[arg(short = 'o', long, value_name = "START[:END]", allow_hyphen_values = true,
          value_parser = parse_offset_range, conflicts_with = "from")]
    pub offset: Option<OffsetRange>,
    /// Older spelling of -o: beginning, end, offset:N or timestamp:MS.
    #[arg(long, value_parser = parse_start)]
    pub from: Option<Start>,
    /// Only these partitions (repeatable; default: all).
    #[arg(short = 'p', long = "partition", conflicts_with = "group")]
    pub partitions: Vec<i32>,
    /// Stop after this many records.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Keep waiting for new records instead of exiting at the end.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Join this consumer group (classic protocol, range assignor): read the
    /// partitions it assigns, from its committed offsets, and commit what
    /// was printed. Other members (any Kafka client) share the partitions.
    #[arg(short = 'g', long, value_name = "GROUP")]
    pub group: Option<String>,
    /// `json` (one object per line), or a kcat-style format string:
    /// %t topic, %p partition, %o offset, %k key, %v value, %T timestamp (ms),
    /// %h headers (k=v,...), %K key length, %S value length (-1 for null),
    /// %% a percent sign; escapes \n \t \r \0 \xNN \\. Default: %v\n.
    #[arg(long, value_name = "json|FORMAT")]
    pub format: Option<String>,
    /// Prefix each line with PARTITION:OFFSET and a tab (without --format).
    #[arg(long)]
    pub print_offsets: bool,
    /// Prefix each value with its key and a tab (without --format).
    #[arg(long)]
    pub print_key: bool,
    /// Prefix each value with its headers (k=v,k=v) and a tab (without --format).
    #[arg(long)]
    pub print_headers: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where to start reading (the `--from` spelling).
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

/// One end of `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The log start.
    Oldest,
    /// The high watermark (for an end bound: as it is when the command starts).
    Newest,
    Exact(i64),
    AfterStart(i64),
    BeforeEnd(i64),
    Timestamp(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    pub start: Position,
    /// Exclusive; None: the snapshot end (or never, with --follow).
    pub end: Option<Position>,
}

fn parse_position(s: &str, whole: &str) -> Result<Position, String> {
    let bad = || {
        format!(
            "-o must be START[:END] with START start|oldest|end|newest|N|+N|-N|@MS, got '{whole}'"
        )
    };
    let number = |n: &str| n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad);
    match s {
        "start" | "oldest" | "beginning" | "earliest" => Ok(Position::Oldest),
        "end" | "newest" | "latest" => Ok(Position::Newest),
        _ => {
            if let Some(n) = s.strip_prefix('+') {
                Ok(Position::AfterStart(number(n)?))
            } else if let Some(n) = s.strip_prefix('-') {
                Ok(Position::BeforeEnd(number(n)?))
            } else if let Some(ms) = s.strip_prefix('@') {
                Ok(Position::Timestamp(number(ms)?))
            } else {
                Ok(Position::Exact(number(s)?))
            }
        }
    }
}

fn parse_offset_range(s: &str) -> Result<OffsetRange, String> {
    // rpk's timestamp ranges: @T, @T:, @:T, @T1:T2 (T2 may be `end`).
    if let Some(rest) = s.strip_prefix('@') {
        let bad = || format!("-o @T1:T2 needs timestamps in ms, got '{s}'");
        let ms = |t: &str| {
            t.strip_prefix('@')
                .unwrap_or(t)
                .parse::<i64>()
                .ok()
                .filter(|ms| *ms >= 0)
                .ok_or_else(bad)
        };
        let (t1, t2) = rest.split_once(':').unwrap_or((rest, ""));
        let start = if t1.is_empty() {
            Position::Oldest
        } else {
            Position::Timestamp(ms(t1)?)
        };
        let end = match t2 {
            "" => None,
            "end" => Some(Position::Newest),
            t => Some(Position::Timestamp(ms(t)?)),
        };
        if t1.is_empty() && end.is_none() {
            return Err(bad());
        }
        return Ok(OffsetRange { start, end });
    }
    let (start, end) = match s.split_once(':') {
        Some((start, end)) => (start, Some(end)),
        None => (s, None),
    };
    let start = if start.is_empty() {
        Position::Oldest
    } else {
        parse_position(start, s)?
    };
    let end = match end {
        None | Some("") => None,
        Some(e) => match parse_position(e, s)? {
            p @ (Position::Newest | Position::Exact(_) | Position::Timestamp(_)) => Some(p),
            Position::AfterStart(n) => Some(Position::AfterStart(n)),
            _ => {
                return Err(format!(
                    "the END of -o must be N, +N, @MS or end, got '{s}'"
                ));
            }
        },
    };
    Ok(OffsetRange { start, end })
}

/// One piece of a compiled `--format` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
    KeyLength,
    ValueLength,
}

/// Compiles a kcat-style format string; unknown directives and escapes are
/// errors that point at the position, so a typo never prints garbage.
pub fn parse_format(s: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut chars = s.char_indices().peekable();
    let flush = |literal: &mut Vec<u8>, pieces: &mut Vec<Piece>| {
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(literal)));
        }
    };
    while let Some((at, c)) = chars.next() {
        match c {
            '%' => {
                let piece = match chars.next().map(|(_, c)| c) {
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('k') => Piece::Key,
                    Some('v') | Some('s') => Piece::Value,
                    Some('T') => Piece::Timestamp,
                    Some('h') => Piece::Headers,
                    Some('K') => Piece::KeyLength,
                    Some('S') => Piece::ValueLength,
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    Some(other) => {
                        return Err(format!(
                            "unknown directive %{other} at position {at} of the format string; \
                             known: %t %p %o %k %v %T %h %K %S %%"
                        ));
                    }
                    None => {
                        return Err(format!(
                            "the format string ends with a lone % (position {at}); write %% for a percent sign"
                        ));
                    }
                };
                flush(&mut literal, &mut pieces);
                pieces.push(piece);
            }
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => literal.push(b'\n'),
                Some('t') => literal.push(b'\t'),
                Some('r') => literal.push(b'\r'),
                Some('0') => literal.push(0),
                Some('\\') => literal.push(b'\\'),
                Some('x') => {
                    let hex: String = (0..2)
                        .filter_map(|_| chars.next().map(|(_, c)| c))
                        .collect();
                    match u8::from_str_radix(&hex, 16) {
                        Ok(byte) if hex.len() == 2 => literal.push(byte),
                        _ => {
                            return Err(format!(
                                "\\x at position {at} of the format string needs two hex digits"
                            ));
                        }
                    }
                }
                Some(other) => {
                    return Err(format!(
                        "unknown escape \\{other} at position {at} of the format string; known: \\n \\t \\r \\0 \\xNN \\\\"
                    ));
                }
                None => {
                    return Err(format!(
                        "the format string ends with a lone \\ (position {at}); write \\\\ for a backslash"
                    ));
                }
            },
            c => {
                let mut buf = [0u8; 4];
                literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    flush(&mut literal, &mut pieces);
    Ok(pieces)
}

/// How records are printed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    Json,
    Pieces(Vec<Piece>),
}

fn output_for(args: &ConsumeArgs) -> anyhow::Result<Output> {
    if let Some(f) = &args.format {
        if args.print_offsets || args.print_key || args.print_headers {
            bail!("--print-offsets/--print-key/--print-headers cannot be combined with --format");
        }
        if f == "json" {
            return Ok(Output::Json);
        }
        return parse_format(f)
            .map(Output::Pieces)
            .map_err(|e| anyhow::anyhow!("--format: {e}"));
    }
    let mut pieces = Vec::new();
    if args.print_offsets {
        pieces.extend([
            Piece::Partition,
            Piece::Literal(b":".to_vec()),
            Piece::Offset,
            Piece::Literal(b"\t".to_vec()),
        ]);
    }
    if args.print_key {
        pieces.extend([Piece::Key, Piece::Literal(b"\t".to_vec())]);
    }
    if args.print_headers {
        pieces.extend([Piece::Headers, Piece::Literal(b"\t".to_vec())]);
    }
    pieces.extend([Piece::Value, Piece::Literal(b"\n".to_vec())]);
    Ok(Output::Pieces(pieces))
}

fn render(pieces: &[Piece], topic: &str, partition: i32, record: &FetchedRecord) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |b: &Option<bytes::Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
    for piece in pieces {
        match piece {
            Piece::Literal(bytes) => out.extend_from_slice(bytes),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
            Piece::Key => out.extend_from_slice(record.key.as_deref().unwrap_or_default()),
            Piece::Value => out.extend_from_slice(record.value.as_deref().unwrap_or_default()),
            Piece::Timestamp => out.extend_from_slice(record.timestamp_ms.to_string().as_bytes()),
            Piece::KeyLength => out.extend_from_slice(len(&record.key).to_string().as_bytes()),
            Piece::ValueLength => out.extend_from_slice(len(&record.value).to_string().as_bytes()),
            Piece::Headers => {
                for (i, h) in record.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(h.key.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(h.value.as_deref().unwrap_or_default());
                }
            }
        }
    }
    out
}

/// Bytes for JSON: text when they are UTF-8, else base64 (the `*_encoding`
/// field says which), null for null.
fn json_bytes(bytes: &Option<bytes::Bytes>) -> (serde_json::Value, &'static str) {
    match bytes {
        None => (serde_json::Value::Null, "null"),
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => (serde_json::Value::String(text.to_owned()), "text"),
            Err(_) => (
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
                "base64",
            ),
        },
    }
}

/// One record of `consume --format json`. Fields are only ever added.
#[derive(serde::Serialize)]
struct RecordJson<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: serde_json::Value,
    /// "text" (UTF-8), "base64" (other bytes) or "null".
    key_encoding: &'static str,
    value: serde_json::Value,
    value_encoding: &'static str,
    headers: Vec<HeaderJson<'a>>,
}

#[derive(serde::Serialize)]
struct HeaderJson<'a> {
    key: &'a str,
    value: serde_json::Value,
    value_encoding: &'static str,
}

fn render_json(topic: &str, partition: i32, record: &FetchedRecord) -> Vec<u8> {
    let (key, key_encoding) = json_bytes(&record.key);
    let (value, value_encoding) = json_bytes(&record.value);
    let object = RecordJson {
        topic,
        partition,
        offset: record.offset,
        timestamp: record.timestamp_ms,
        key,
        key_encoding,
        value,
        value_encoding,
        headers: record
            .headers
            .iter()
            .map(|h| {
                let (value, value_encoding) = json_bytes(&h.value);
                HeaderJson {
                    key: &h.key,
                    value,
                    value_encoding,
                }
            })
            .collect(),
    };
    let mut line = serde_json::to_vec(&object).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Resolves one end of `-o` for a partition whose log is [log_start, end).
async fn resolve(
    client: &mut Client,
    topic: &str,
    partition: i32,
    position: Position,
    log_start: i64,
    end: i64,
) -> anyhow::Result<i64> {
    Ok(match position {
        Position::Oldest => log_start,
        Position::Newest => end,
        Position::Exact(n) => n,
        Position::AfterStart(n) => log_start.saturating_add(n).min(end),
        Position::BeforeEnd(n) => end.saturating_sub(n).max(log_start),
        Position::Timestamp(ms) => {
            let found = client
                .list_offsets(topic, partition, OffsetSpec::Timestamp(ms))
                .await?
                .offset;
            // No record at or after the timestamp: the end.
            if found >= 0 { found } else { end }
        }
    })
}

struct PartitionState {
    position: FetchPosition,
    /// Exclusive end; None while following without an end bound.
    end_offset: Option<i64>,
    /// The last offset printed + 1, for commits and the summary.
    printed_up_to: Option<i64>,
}

/// Topic names the arguments stand for.
async fn topics_for(client: &mut Client, args: &ConsumeArgs) -> anyhow::Result<Vec<String>> {
    if !args.regex {
        return Ok(args.topics.clone());
    }
    let patterns: Vec<regex_lite::Regex> = args
        .topics
        .iter()
        .map(|p| {
            regex_lite::Regex::new(&format!("^(?:{p})$"))
                .with_context(|| format!("'{p}' is not a valid regular expression"))
        })
        .collect::<anyhow::Result<_>>()?;
    let metadata = client.metadata(None, false).await?;
    let mut names: Vec<String> = metadata
        .topics
        .into_iter()
        .filter(|t| t.error.is_none() && !t.is_internal)
        .map(|t| t.name)
        .filter(|name| patterns.iter().any(|re| re.is_match(name)))
        .collect();
    names.sort_unstable();
    if names.is_empty() {
        bail!("no topic matches {}", args.topics.join(", "));
    }
    Ok(names)
}

async fn initial_states(
    client: &mut Client,
    args: &ConsumeArgs,
    topics: &[String],
    membership: Option<&Membership>,
) -> anyhow::Result<Vec<PartitionState>> {
    let range = match (args.offset, args.from) {
        (Some(range), _) => range,
        (None, Some(start)) => OffsetRange {
            start: match start {
                Start::Beginning => Position::Oldest,
                Start::End => Position::Newest,
                Start::Offset(n) => Position::Exact(n),
                Start::Timestamp(ms) => Position::Timestamp(ms),
            },
            end: None,
        },
        (None, None) => OffsetRange {
            start: Position::Oldest,
            end: None,
        },
    };
    let committed: BTreeMap<(String, i32), i64> = match membership {
        Some(m) => client
            .committed_offsets(&m.group)
            .await
            .with_context(|| format!("reading the committed offsets of group '{}'", m.group))?
            .into_iter()
            .map(|c| ((c.topic, c.partition), c.offset))
            .collect(),
        None => BTreeMap::new(),
    };
    let mut states = Vec::new();
    let wanted: Vec<(String, Option<Vec<i32>>)> = match membership {
        // A member reads what the group assigned it, nothing else.
        Some(m) => m
            .assignment
            .iter()
            .map(|(t, ps)| (t.clone(), Some(ps.clone())))
            .collect(),
        None => topics.iter().map(|t| (t.clone(), None)).collect(),
    };
    for (topic, assigned) in wanted {
        let info = client.topic(&topic, false).await?;
        let partitions: Vec<i32> = if let Some(assigned) = assigned {
            assigned
        } else if args.partitions.is_empty() {
            info.partitions.iter().map(|p| p.partition).collect()
        } else {
            for &p in &args.partitions {
                if !info.partitions.iter().any(|i| i.partition == p) {
                    return Err(ClientError::UnknownPartition {
                        topic: topic.clone(),
                        partition: p,
                        partition_count: info.partitions.len(),
                    }
                    .into());
                }
            }
            args.partitions.clone()
        };
        for partition in partitions {
            let (log_start, high_watermark, _) =
                super::topic::partition_offsets(client, &topic, partition)
                    .await
                    .with_context(|| format!("could not find where {topic}-{partition} starts"))?;
            let end = high_watermark;
            let start = match committed.get(&(topic.clone(), partition)) {
                // A group's position wins unless -o says otherwise.
                Some(&c) if args.offset.is_none() && args.from.is_none() => c,
                _ => resolve(client, &topic, partition, range.start, log_start, end).await?,
            };
            let end_offset = match range.end {
                Some(Position::AfterStart(n)) => Some(start.saturating_add(n)),
                Some(p) => Some(resolve(client, &topic, partition, p, log_start, end).await?),
                None if args.follow => None,
                None => Some(end),
            };
            states.push(PartitionState {
                position: FetchPosition {
                    topic: topic.clone(),
                    partition,
                    offset: start,
                },
                end_offset,
                printed_up_to: None,
            });
        }
    }
    Ok(states)
}

/// What the consumer did, for the summary and the group commit.
struct Progress {
    printed: u64,
    started: Instant,
}

fn summary(progress: &Progress, states: &[PartitionState]) -> String {
    let mut text = format!(
        "consumed {} records in {:.2} s",
        progress.printed,
        progress.started.elapsed().as_secs_f64()
    );
    let positions: Vec<String> = states
        .iter()
        .map(|s| {
            format!(
                "{}-{}@{}",
                s.position.topic, s.position.partition, s.position.offset
            )
        })
        .collect();
    if !positions.is_empty() {
        text.push_str("; next offsets: ");
        text.push_str(&positions.join(" "));
    }
    text
}

async fn commit(
    client: &mut Client,
    m: &Membership,
    states: &[PartitionState],
) -> anyhow::Result<()> {
    let offsets: Vec<(String, i32, i64)> = states
        .iter()
        .filter_map(|s| {
            s.printed_up_to
                .map(|o| (s.position.topic.clone(), s.position.partition, o))
        })
        .collect();
    if offsets.is_empty() {
        return Ok(());
    }
    client
        .commit_offsets_as(&m.group, m.generation_id, &m.member_id, &offsets)
        .await
        .with_context(|| format!("committing offsets for group '{}'", m.group))
}

/// Joins the group and says on stderr what this member got.
async fn join(
    client: &mut Client,
    group: &str,
    topics: &[String],
    previous: Option<&Membership>,
) -> anyhow::Result<Membership> {
    let m = client
        .join_group(group, topics, previous, MembershipTimeouts::default())
        .await
        .with_context(|| format!("joining group '{group}'"))?;
    let assigned: Vec<String> = m
        .assignment
        .iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
            format!("{t}:{}", ps.join(","))
        })
        .collect();
    eprintln!(
        "joined group {group} (generation {}): assigned {}",
        m.generation_id,
        if assigned.is_empty() {
            "nothing".to_owned()
        } else {
            assigned.join(" ")
        }
    );
    Ok(m)
}

/// Commits what was printed and leaves the group, so the others take over at once.
async fn finish_membership(
    client: &mut Client,
    m: &Membership,
    states: &[PartitionState],
) -> anyhow::Result<()> {
    commit(client, m, states).await?;
    if let Err(e) = client.leave_group(m).await {
        eprintln!("warning: could not leave group {}: {e}", m.group);
    }
    Ok(())
}

/// Whether an error means the broker itself is unreachable (not one partition's problem).
fn broker_unreachable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. }
            | ClientError::Io { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoAnswer { .. }
    )
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let output = output_for(&args)?;
    let mut client = args.connect.connect().await?;
    let topics = topics_for(&mut client, &args).await?;
    let mut membership = match &args.group {
        Some(group) => Some(join(&mut client, group, &topics, None).await?),
        None => None,
    };
    let mut states = initial_states(&mut client, &args, &topics, membership.as_ref()).await?;
    let mut last_heartbeat = Instant::now();
    let mut all_states_done: Vec<PartitionState> = Vec::new();
    let mut progress = Progress {
        printed: 0,
        started: Instant::now(),
    };
    let show_progress = std::io::stderr().is_terminal() && !std::io::stdout().is_terminal();
    let stdout = std::io::stdout();
    let limit = args.count.unwrap_or(u64::MAX);
    let policy = super::retry_policy();
    let mut backoff = policy.backoff();
    // While following, reconnecting never gives up; it only slows down.
    let mut reconnect_delay_ms = policy.initial_backoff_ms;
    let mut disconnected_since: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'outer: loop {
        let (done, live): (Vec<_>, Vec<_>) = states
            .into_iter()
            .partition(|s| s.end_offset.is_some_and(|end| s.position.offset >= end));
        all_states_done.extend(done);
        states = live;
        if let Some(m) = membership.as_mut()
            && last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL
        {
            last_heartbeat = Instant::now();
            match client.heartbeat(m).await {
                Ok(()) => {}
                Err(e) if needs_rejoin(&e) => {
                    // Commit what was printed while this generation still
                    // counts, then take whatever the new one assigns.
                    let mut printed = std::mem::take(&mut states);
                    printed.append(&mut all_states_done);
                    if let Err(e) = commit(&mut client, m, &printed).await {
                        eprintln!("warning: {e:#}");
                    }
                    eprintln!("group {} is rebalancing ({e}); rejoining", m.group);
                    *m = join(&mut client, &m.group.clone(), &topics, Some(&*m)).await?;
                    states = initial_states(&mut client, &args, &topics, Some(&*m)).await?;
                    continue;
                }
                // A dead broker is noticed, and waited out, by the fetch below.
                Err(e) if broker_unreachable(&e) => {}
                Err(e) => return Err(e).context("heartbeat"),
            }
        }
        if progress.printed >= limit {
            break;
        }
        if states.is_empty() {
            // An idle member (more members than partitions) keeps its place.
            if args.follow && membership.is_some() {
                tokio::select! {
                    () = tokio::time::sleep(HEARTBEAT_INTERVAL) => continue,
                    _ = &mut ctrl_c => {
                        if let Some(m) = &membership {
                            finish_membership(&mut client, m, &all_states_done).await?;
                        }
                        eprintln!("interrupted: {}", summary(&progress, &all_states_done));
                        return Ok(());
                    }
                }
            }
            break;
        }
        let positions: Vec<FetchPosition> = states.iter().map(|s| s.position.clone()).collect();
        let fetched = tokio::select! {
            r = client.fetch_many(&positions, FETCH_BYTES_MAX, FETCH_WAIT_MS) => r,
            _ = &mut ctrl_c => {
                let _ = stdout.lock().flush();
                states.extend(all_states_done);
                if let Some(m) = &membership {
                    finish_membership(&mut client, m, &states).await?;
                }
                eprintln!("interrupted: {}", summary(&progress, &states));
                return Ok(());
            }
        };
        let results = match fetched {
            Ok(results) => results,
            Err(e) => vec![Err(e); positions.len()],
        };
        // A broker that is down fails every partition the same way.
        if let Some(Err(e)) = results.first()
            && broker_unreachable(e)
            && results
                .iter()
                .all(|r| r.as_ref().is_err_and(broker_unreachable))
        {
            if !args.follow {
                if backoff.wait().await {
                    continue;
                }
                return Err(e.clone()).context(format!(
                    "gave up after {} retries waiting for the broker",
                    backoff.retries()
                ));
            }
            let since = *disconnected_since.get_or_insert_with(Instant::now);
            eprintln!(
                "warning: lost the broker ({e}); reconnecting in {reconnect_delay_ms} ms (down for {:.1} s)",
                since.elapsed().as_secs_f64()
            );
            let jitter_ms = u64::from(std::process::id() % 97) * reconnect_delay_ms / 400;
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(reconnect_delay_ms + jitter_ms)) => {}
                _ = &mut ctrl_c => {
                    states.extend(all_states_done);
                    eprintln!("interrupted: {}", summary(&progress, &states));
                    return Ok(());
                }
            }
            reconnect_delay_ms = (reconnect_delay_ms * 2).min(RECONNECT_BACKOFF_MS_MAX);
            continue;
        }
        if let Some(since) = disconnected_since.take() {
            eprintln!(
                "reconnected to the broker after {:.1} s",
                since.elapsed().as_secs_f64()
            );
            reconnect_delay_ms = policy.initial_backoff_ms;
        }
        let mut out = stdout.lock();
        let mut retriable_errors = 0usize;
        for (state, result) in states.iter_mut().zip(results) {
            let topic = state.position.topic.clone();
            let fetched = match result {
                Ok(f) => f,
                Err(e) if e.error_code() == Some(ErrorCode::OffsetOutOfRange) => {
                    // Retention removed what we were about to read (skip
                    // ahead), or the offset is past the end (wait at the end).
                    let partition = state.position.partition;
                    let (earliest, latest, _) =
                        super::topic::partition_offsets(&mut client, &topic, partition).await?;
                    let resume = if state.position.offset < earliest {
                        earliest
                    } else {
                        latest
                    };
                    eprintln!(
                        "warning: offset {} of {topic}-{partition} is out of range ({earliest}..{latest}); continuing at {resume}",
                        state.position.offset
                    );
                    state.position.offset = resume;
                    continue;
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(error = %e, "retriable fetch error; retrying");
                    retriable_errors += 1;
                    if !args.follow && backoff.retries() >= policy.retries_max {
                        return Err(e).context("giving up after retries");
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for record in &fetched.records {
                if state.end_offset.is_some_and(|end| record.offset >= end) {
                    break;
                }
                let line = match &output {
                    Output::Json => render_json(&topic, fetched.partition, record),
                    Output::Pieces(pieces) => render(pieces, &topic, fetched.partition, record),
                };
                if let Err(e) = out.write_all(&line) {
                    // A closed pipe (`| head`) is a normal way to stop.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e).context("could not write to stdout");
                }
                state.printed_up_to = Some(record.offset + 1);
                progress.printed += 1;
                if progress.printed >= limit {
                    state.position.offset = record.offset + 1;
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
        drop(out);
        if retriable_errors > 0 {
            if !backoff.wait().await && !args.follow {
                bail!(
                    "gave up after {} retries of partition errors",
                    backoff.retries()
                );
            }
        } else {
            backoff = policy.backoff();
        }
        if let Some(m) = &membership {
            commit(&mut client, m, &states).await?;
        }
        if show_progress {
            eprint!(
                "\r{} records, {:.0} records/s   ",
                progress.printed,
                per_second(progress.printed, progress.started.elapsed())
            );
        }
    }
    let _ = stdout.lock().flush();
    states.extend(all_states_done);
    if let Some(m) = &membership {
        finish_membership(&mut client, m, &states).await?;
    }
    if show_progress {
        eprintln!();
        eprintln!("{}", summary(&progress, &states));
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

    fn record() -> FetchedRecord {
        FetchedRecord {
            offset: 7,
            timestamp_ms: 1_700_000_000_123,
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
        }
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
    fn offset_ranges_follow_rpk() {
        let r = |s| parse_offset_range(s).unwrap();
        assert_eq!(r("start").start, Position::Oldest);
        assert_eq!(r("newest").start, Position::Newest);
        assert_eq!(r("+3").start, Position::AfterStart(3));
        assert_eq!(r("-3").start, Position::BeforeEnd(3));
        assert_eq!(r("@1000").start, Position::Timestamp(1000));
        assert_eq!(
            r("5:10"),
            OffsetRange {
                start: Position::Exact(5),
                end: Some(Position::Exact(10))
            }
        );
        assert_eq!(r(":end").end, Some(Position::Newest));
        assert_eq!(r("@1:@2").end, Some(Position::Timestamp(2)));
        assert_eq!(r("5:").end, None);
        assert_eq!(
            r("@1000:2000"),
            OffsetRange {
                start: Position::Timestamp(1000),
                end: Some(Position::Timestamp(2000))
            }
        );
        assert_eq!(
            r("@:2000"),
            OffsetRange {
                start: Position::Oldest,
                end: Some(Position::Timestamp(2000))
            }
        );
        assert_eq!(r("@1000:end").end, Some(Position::Newest));
        assert!(parse_offset_range("@x").is_err());
        assert!(parse_offset_range("x").is_err());
        assert!(parse_offset_range("1:-2").is_err());
        assert!(parse_offset_range("+-1").is_err());
    }

    #[test]
    fn format_strings_compile_like_kcat() {
        let pieces = parse_format("%t/%p@%o %k=%v %T [%h] %K %S 100%%\\n").unwrap();
        assert_eq!(
            render(&pieces, "top", 2, &record()),
            b"top/2@7 k=v 1700000000123 [a=1,b=] 1 1 100%\n".to_vec()
        );
        assert_eq!(
            render(&parse_format("%v\\t\\\\").unwrap(), "t", 0, &record()),
            b"v\t\\".to_vec()
        );
        let null = FetchedRecord {
            key: None,
            value: None,
            ..record()
        };
        assert_eq!(
            render(&parse_format("%K %S").unwrap(), "t", 0, &null),
            b"-1 -1".to_vec()
        );
    }

    #[test]
    fn malformed_format_strings_say_where() {
        assert!(parse_format("%q").unwrap_err().contains("%q"));
        assert!(parse_format("abc%").unwrap_err().contains("lone %"));
        assert!(parse_format("\\q").unwrap_err().contains("\\q"));
        assert!(parse_format("\\x4").unwrap_err().contains("two hex digits"));
        assert_eq!(
            parse_format("\\x1e").unwrap(),
            vec![Piece::Literal(vec![0x1e])]
        );
        assert!(parse_format("a\\").unwrap_err().contains("lone \\"));
    }

    #[test]
    fn legacy_print_flags_still_make_the_same_lines() {
        let w = Wrapper::parse_from([
            "x",
            "t",
            "--print-offsets",
            "--print-key",
            "--print-headers",
        ]);
        let Output::Pieces(pieces) = output_for(&w.args).unwrap() else {
            panic!("text output expected");
        };
        assert_eq!(
            render(&pieces, "t", 2, &record()),
            b"2:7\tk\ta=1,b=\tv\n".to_vec()
        );
    }

    #[test]
    fn json_records_keep_binary_as_base64() {
        let binary = FetchedRecord {
            value: Some(Bytes::from_static(&[0xff, 0x00, 0x0a])),
            key: None,
            ..record()
        };
        let line = render_json("t", 1, &binary);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["value"], "/wAK");
        assert_eq!(v["value_encoding"], "base64");
        assert_eq!(v["key"], serde_json::Value::Null);
        assert_eq!(v["headers"][0]["key"], "a");
        assert_eq!(v["offset"], 7);
    }
}

//! `weir produce TOPIC`: records from stdin, binary-safe.
//!
//! Input framing is explicit: by default one record per line; `--delimiter`
//! splits on any byte string instead (e.g. `\0`), `--key-delimiter` splits a
//! key off each record, and `--format` reads kcat/rpk-style input such as
//! `%k\t%h\t%v\n` (key, headers, value). Records are bytes: nothing is
//! decoded as UTF-8 and every record is bounded by `--max-record-bytes`.
//!
//! The command stops at the first record that could not be delivered (after
//! the producer's bounded retries) and reports how many records the broker
//! acknowledged, how many failed and how many were abandoned unsent.

use std::collections::VecDeque;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _};
use weir_client::{
    Acks, ClientError, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
    RecordHeader,
};

use super::consume::{Piece, parse_format};
use super::{ConnectArgs, parse_key_value, per_second};

/// Deliveries awaited before more input is read, bounding memory.
const PENDING_DELIVERIES_MAX: usize = 50_000;

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Record delimiter (escapes \n \t \r \0 \\ \xHH); default \n.
    #[arg(short = 'D', long, value_name = "SEP", conflicts_with = "format")]
    pub delimiter: Option<String>,
    /// Split each record at the first SEP: the part before is the key
    /// (escapes as --delimiter). Records without SEP have no key.
    #[arg(
        short = 'K',
        long,
        visible_alias = "key-separator",
        value_name = "SEP",
        conflicts_with = "format"
    )]
    pub key_delimiter: Option<String>,
    /// Input format: %k key, %v value, %h headers (k=v,k=v), %T timestamp
    /// (ms), %p partition, literals and escapes between them, e.g. '%k\t%v\n'.
    /// Every field but the last must be followed by a literal.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Send empty keys and values as null (kcat -Z): an empty value is a tombstone.
    #[arg(short = 'Z', long)]
    pub null_empty: bool,
    /// Header added to every record (repeatable).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Timestamp of every record, in ms since the epoch (default: now, or %T).
    #[arg(long, value_name = "MS")]
    pub timestamp: Option<i64>,
    /// Send every record to this partition.
    #[arg(short = 'p', long, conflicts_with = "partitioner")]
    pub partition: Option<i32>,
    /// How records without a partition pick one.
    #[arg(long, value_enum, default_value = "murmur2-sticky")]
    pub partitioner: Partitioner,
    /// 0, 1 or all (-1).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// How long a batch waits for more records.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Largest batch per partition, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_bytes: usize,
    /// Largest record accepted from the input.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_record_bytes: usize,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Partitioners, named as librdkafka's `partitioner` setting where one matches.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// Kafka's default: murmur2 of the key; keyless records stick to one
    /// partition per batch.
    Murmur2Sticky,
    /// Every record to the next partition in turn, key or not.
    RoundRobin,
    /// Every record to a random partition, key or not.
    Random,
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    Acks::parse(s).ok_or_else(|| format!("acks must be 0, 1, -1 or all, got '{s}'"))
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::ALL
        .into_iter()
        .find(|c| c.name() == s)
        .ok_or_else(|| format!("compression must be none, gzip, snappy, lz4 or zstd, got '{s}'"))
}

/// Decodes the escapes of a delimiter argument.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        i += 2;
        match next {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = bytes
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("\\x needs two hex digits in '{s}'"))?;
                out.push(hex);
                i += 2;
            }
            Some(other) => {
                return Err(format!(
                    "unknown escape \\{} in '{s}'; known: \\n \\t \\r \\0 \\\\ \\xHH",
                    char::from(other)
                ));
            }
            None => return Err(format!("'{s}' ends with a lone \\")),
        }
    }
    if out.is_empty() {
        return Err("a delimiter cannot be empty".to_owned());
    }
    Ok(out)
}

/// Reads up to and including `delim`; returns the bytes before it. `None`
/// at a clean end of input. A last piece without the delimiter is returned
/// as is (like a last line without a newline).
async fn read_until_delimiter(
    input: &mut (impl AsyncBufRead + Unpin),
    delim: &[u8],
    max_bytes: usize,
) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(&last) = delim.last() else {
        bail!("empty delimiter");
    };
    let mut buf = Vec::new();
    loop {
        let room = (max_bytes + delim.len()).saturating_sub(buf.len()) as u64;
        let n = (&mut *input)
            .take(room)
            .read_until(last, &mut buf)
            .await
            .context("could not read stdin")?;
        if buf.ends_with(delim) {
            buf.truncate(buf.len() - delim.len());
            return Ok(Some(buf));
        }
        if n == 0 {
            if buf.len() >= max_bytes + delim.len() {
                bail!(
                    "a record is longer than --max-record-bytes ({max_bytes}); is the delimiter right?"
                );
            }
            return Ok((!buf.is_empty()).then_some(buf));
        }
    }
}

/// One record parsed from the input.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<RecordHeader>,
    timestamp_ms: Option<i64>,
    partition: Option<i32>,
}

/// How the input is framed.
enum Framing {
    Delimited {
        delimiter: Vec<u8>,
        key_delimiter: Option<Vec<u8>>,
    },
    /// A compiled format; each field piece is followed by its literal.
    Format(Vec<Piece>),
}

fn framing(args: &ProduceArgs) -> anyhow::Result<Framing> {
    if let Some(f) = &args.format {
        let pieces = parse_format(f).map_err(|e| anyhow::anyhow!("--format: {e}"))?;
        check_input_format(&pieces).map_err(|e| anyhow::anyhow!("--format: {e}"))?;
        return Ok(Framing::Format(pieces));
    }
    let delimiter = match &args.delimiter {
        Some(d) => unescape(d).map_err(|e| anyhow::anyhow!("--delimiter: {e}"))?,
        None => b"\n".to_vec(),
    };
    let key_delimiter = args
        .key_delimiter
        .as_deref()
        .map(unescape)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--key-delimiter: {e}"))?;
    Ok(Framing::Delimited {
        delimiter,
        key_delimiter,
    })
}

/// An input format must say where each field ends and must name a value.
fn check_input_format(pieces: &[Piece]) -> Result<(), String> {
    let mut saw_value = false;
    for (i, piece) in pieces.iter().enumerate() {
        let is_field = !matches!(piece, Piece::Literal(_));
        match piece {
            Piece::Value => saw_value = true,
            Piece::Topic | Piece::Offset | Piece::KeyLength | Piece::ValueLength => {
                return Err(format!(
                    "{piece:?} cannot be read from input; use %k %v %h %T %p"
                ));
            }
            _ => {}
        }
        let next_is_field = pieces
            .get(i + 1)
            .is_some_and(|p| !matches!(p, Piece::Literal(_)));
        if is_field && next_is_field {
            return Err("two fields need a literal between them to tell where one ends".into());
        }
        if is_field && i + 1 == pieces.len() {
            return Err("the format must end with a literal delimiter, e.g. \\n".into());
        }
    }
    if !saw_value {
        return Err("the format has no %v".into());
    }
    Ok(())
}

fn split_key(record: Vec<u8>, key_delimiter: Option<&[u8]>) -> (Option<Vec<u8>>, Vec<u8>) {
    let Some(sep) = key_delimiter else {
        return (None, record);
    };
    match record.windows(sep.len()).position(|w| w == sep) {
        Some(at) => {
            let value = record[at + sep.len()..].to_vec();
            let mut key = record;
            key.truncate(at);
            (Some(key), value)
        }
        None => (None, record),
    }
}

fn parse_headers(field: &[u8]) -> anyhow::Result<Vec<RecordHeader>> {
    let text = std::str::from_utf8(field).context("header keys must be UTF-8")?;
    text.split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            let (k, v) = parse_key_value(h).map_err(|e| anyhow::anyhow!("header: {e}"))?;
            Ok(RecordHeader {
                key: k,
                value: Some(Bytes::from(v)),
            })
        })
        .collect()
}

/// Reads the next record; `None` at the end of the input.
async fn next_record(
    input: &mut (impl AsyncBufRead + Unpin),
    framing: &Framing,
    max_bytes: usize,
) -> anyhow::Result<Option<Parsed>> {
    match framing {
        Framing::Delimited {
            delimiter,
            key_delimiter,
        } => {
            let Some(record) = read_until_delimiter(input, delimiter, max_bytes).await? else {
                return Ok(None);
            };
            let (key, value) = split_key(record, key_delimiter.as_deref());
            Ok(Some(Parsed {
                key,
                value: Some(value),
                ..Parsed::default()
            }))
        }
        Framing::Format(pieces) => {
            let mut parsed = Parsed::default();
            let mut i = 0;
            let mut started = false;
            while let Some(piece) = pieces.get(i) {
                if let Piece::Literal(lit) = piece {
                    let mut got = vec![0u8; lit.len()];
                    let n = read_fully(input, &mut got).await?;
                    if n == 0 && !started {
                        return Ok(None);
                    }
                    if n < lit.len() && i + 1 == pieces.len() {
                        // The last delimiter may be missing at the end of input.
                        break;
                    }
                    if got[..n] != lit[..] {
                        bail!(
                            "input does not match --format: expected {:?}, got {:?}",
                            String::from_utf8_lossy(lit),
                            String::from_utf8_lossy(&got[..n])
                        );
                    }
                    started = true;
                    i += 1;
                    continue;
                }
                let Some(Piece::Literal(until)) = pieces.get(i + 1) else {
                    bail!("--format: a field is not followed by a literal");
                };
                let field = match read_until_delimiter(input, until, max_bytes).await? {
                    Some(f) => f,
                    None if !started => return Ok(None),
                    None => Vec::new(),
                };
                started = true;
                match piece {
                    Piece::Key => parsed.key = Some(field),
                    Piece::Value => parsed.value = Some(field),
                    Piece::Headers => parsed.headers = parse_headers(&field)?,
                    Piece::Timestamp => {
                        parsed.timestamp_ms = Some(
                            std::str::from_utf8(&field)
                                .ok()
                                .and_then(|t| t.trim().parse().ok())
                                .with_context(|| {
                                    format!(
                                        "%T must be a number of ms, got {:?}",
                                        String::from_utf8_lossy(&field)
                                    )
                                })?,
                        );
                    }
                    Piece::Partition => {
                        parsed.partition = Some(
                            std::str::from_utf8(&field)
                                .ok()
                                .and_then(|t| t.trim().parse().ok())
                                .with_context(|| {
                                    format!(
                                        "%p must be a partition number, got {:?}",
                                        String::from_utf8_lossy(&field)
                                    )
                                })?,
                        );
                    }
                    _ => bail!("--format: {piece:?} cannot be read from input"),
                }
                // The literal after the field was consumed with it.
                i += 2;
            }
            Ok(Some(parsed))
        }
    }
}

/// Reads as many bytes as are available up to `buf.len()`; fewer only at EOF.
async fn read_fully(
    input: &mut (impl AsyncBufRead + Unpin),
    buf: &mut [u8],
) -> anyhow::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = input
            .read(&mut buf[filled..])
            .await
            .context("could not read stdin")?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[derive(Default)]
struct Tally {
    delivered: u64,
    failed: u64,
    first_error: Option<ClientError>,
}

impl Tally {
    fn settle(&mut self, result: Result<weir_client::RecordMetadata, ClientError>) {
        match result {
            Ok(_) => self.delivered += 1,
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Settles every delivery at the front of the queue that already has an outcome.
    fn settle_ready(&mut self, pending: &mut VecDeque<DeliveryFuture>) {
        while let Some(front) = pending.front_mut() {
            match front.try_take() {
                Some(result) => {
                    pending.pop_front();
                    self.settle(result);
                }
                None => break,
            }
        }
    }
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let framing = framing(&args)?;
    let mut client = args.connect.connect().await?;
    // Fail before reading input if the topic is missing or the partition is wrong.
    let partition_count = client.topic(&args.topic, false).await?.partitions.len();
    let partition_count = i32::try_from(partition_count).unwrap_or(i32::MAX).max(1);
    if let Some(p) = args.partition
        && !(0..partition_count).contains(&p)
    {
        return Err(ClientError::UnknownPartition {
            topic: args.topic.clone(),
            partition: p,
            partition_count: partition_count as usize,
        }
        .into());
    }
    let config = ProducerConfig {
        acks: args.acks,
        compression: args.compression,
        linger_ms: args.linger_ms,
        batch_bytes_max: args.batch_bytes.max(1),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let headers: Vec<RecordHeader> = args
        .headers
        .iter()
        .map(|(k, v)| RecordHeader {
            key: k.clone(),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
        })
        .collect();
    let show_progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_progress = started;
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut tally = Tally::default();
    let mut queued: u64 = 0;
    let mut bytes: u64 = 0;
    let mut round_robin: i32 = fastrand::i32(0..partition_count);
    let mut input = tokio::io::BufReader::with_capacity(256 * 1024, tokio::io::stdin());
    let null_if_empty = |b: Option<Vec<u8>>| -> Option<Bytes> {
        match b {
            Some(b) if b.is_empty() && args.null_empty => None,
            other => other.map(Bytes::from),
        }
    };
    while tally.first_error.is_none() {
        let Some(parsed) = next_record(&mut input, &framing, args.max_record_bytes).await? else {
            break;
        };
        let partition = parsed
            .partition
            .or(args.partition)
            .or(match args.partitioner {
                Partitioner::Murmur2Sticky => None,
                Partitioner::RoundRobin => {
                    round_robin = (round_robin + 1) % partition_count;
                    Some(round_robin)
                }
                Partitioner::Random => Some(fastrand::i32(0..partition_count)),
            });
        let mut record_headers = headers.clone();
        record_headers.extend(parsed.headers);
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition,
            key: null_if_empty(parsed.key),
            value: null_if_empty(parsed.value),
            headers: record_headers,
            timestamp_ms: parsed.timestamp_ms.or(args.timestamp),
        };
        bytes += record.value.as_ref().map_or(0, |v| v.len() as u64)
            + record.key.as_ref().map_or(0, |k| k.len() as u64);
        pending.push_back(producer.send(record).await?);
        queued += 1;
        tally.settle_ready(&mut pending);
        while pending.len() > PENDING_DELIVERIES_MAX {
            if let Some(delivery) = pending.pop_front() {
                tally.settle(delivery.await);
            }
        }
        if show_progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprint!(
                "\r{queued} records sent, {:.0} records/s   ",
                per_second(queued, started.elapsed())
            );
        }
    }
    if show_progress && queued > 0 {
        eprintln!();
    }
    if let Some(e) = tally.first_error.take() {
        // Stop at the first failure: records still queued are abandoned, not
        // retried one by one against a broker that is gone.
        let abandoned = queued - tally.delivered - tally.failed;
        eprintln!(
            "stopped at the first failed record: {} acknowledged, {} failed, {} abandoned unsent or unacknowledged",
            tally.delivered, tally.failed, abandoned
        );
        return Err(e).context(format!(
            "producing to {} failed after {} acknowledged record(s)",
            args.topic, tally.delivered
        ));
    }
    producer.flush().await?;
    for delivery in pending {
        tally.settle(delivery.await);
    }
    producer.close().await?;
    let elapsed = started.elapsed();
    eprintln!(
        "produced {} records ({} bytes) to {} in {:.2} s: {:.0} records/s, {:.2} MB/s",
        tally.delivered,
        bytes,
        args.topic,
        elapsed.as_secs_f64(),
        per_second(tally.delivered, elapsed),
        per_second(bytes, elapsed) / 1e6,
    );
    if let Some(e) = tally.first_error {
        bail!(
            "{} of {} records failed ({} acknowledged); first error: {e}",
            tally.failed,
            queued,
            tally.delivered
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn records(input: &[u8], framing: &Framing) -> anyhow::Result<Vec<Parsed>> {
        let mut reader = tokio::io::BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        while let Some(r) = next_record(&mut reader, framing, 64).await? {
            out.push(r);
        }
        Ok(out)
    }

    fn values(parsed: &[Parsed]) -> Vec<Vec<u8>> {
        parsed
            .iter()
            .map(|p| p.value.clone().unwrap_or_default())
            .collect()
    }

    #[tokio::test]
    async fn multi_byte_delimiters_split_binary_input() {
        let framing = Framing::Delimited {
            delimiter: b"|#".to_vec(),
            key_delimiter: Some(vec![0]),
        };
        let parsed = records(b"k\0a\n\xff|#b|||#\0|#c", &framing).await.unwrap();
        assert_eq!(
            values(&parsed),
            vec![
                b"a\n\xff".to_vec(),
                b"b||".to_vec(),
                b"".to_vec(),
                b"c".to_vec()
            ]
        );
        assert_eq!(parsed[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(parsed[1].key, None);
        assert_eq!(parsed[2].key.as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn a_record_over_the_cap_is_an_error_not_a_huge_allocation() {
        let framing = Framing::Delimited {
            delimiter: b"\n".to_vec(),
            key_delimiter: None,
        };
        let err = records(&[b'x'; 200], &framing).await.unwrap_err();
        assert!(err.to_string().contains("max-record-bytes"), "{err}");
    }

    #[tokio::test]
    async fn formats_read_keys_headers_timestamps_and_partitions() {
        let pieces = parse_format("%k\\t%h\\t%T\\t%p\\t%v\\n").unwrap();
        check_input_format(&pieces).unwrap();
        let parsed = records(
            b"k1\ta=1,b=2\t1000\t0\tv1\nk2\t\t2000\t1\tv2",
            &Framing::Format(pieces),
        )
        .await
        .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(parsed[0].headers.len(), 2);
        assert_eq!(parsed[0].timestamp_ms, Some(1000));
        assert_eq!(parsed[1].partition, Some(1));
        assert_eq!(parsed[1].value.as_deref(), Some(&b"v2"[..]));
        assert!(parsed[1].headers.is_empty());
    }

    #[test]
    fn input_formats_must_delimit_every_field() {
        let check = |f: &str| check_input_format(&parse_format(f).unwrap());
        assert!(check("%k%v\\n").is_err());
        assert!(check("%k\\t%v").is_err());
        assert!(check("%k\\n").is_err());
        assert!(check("%o %v\\n").is_err());
        assert!(check("%v\\n").is_ok());
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(unescape("\\0").unwrap(), vec![0]);
        assert_eq!(unescape("\\x1e;").unwrap(), vec![0x1e, b';']);
        assert_eq!(unescape("\\r\\n").unwrap(), b"\r\n".to_vec());
        assert!(unescape("\\q").is_err());
        assert!(unescape("").is_err());
        assert!(unescape("\\x4").is_err());
    }
}

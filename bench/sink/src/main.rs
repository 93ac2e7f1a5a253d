//! weir-sink: a Kafka-protocol endpoint that acknowledges every produce
//! request and keeps nothing, and serves fetches from memory.
//!
//! bench/run points the same librdkafka load at it and at Weir, in the same
//! run: what the load reaches here is the ceiling that the client and the
//! loopback path leave on this machine, with no storage behind the broker.
//! Weir's figure beside it tells what the broker's own work costs.
//!
//!   weir-sink --listen 127.0.0.1:19093
//!
//! It answers ApiVersions, Metadata, CreateTopics, Produce, ListOffsets and
//! Fetch. A topic named in a Metadata request that was not created exists
//! with one partition (as with auto.create.topics.enable), up to `TOPICS_MAX`
//! topics. Offsets are counted per partition from the batch headers, so
//! delivery reports carry real, dense offsets.
//!
//! For consume, each partition keeps only the first batch produced to it (the
//! template, at most `TEMPLATE_BYTES_MAX`) and its fetchable end is its
//! record count rounded down to whole templates. A Fetch gets copies of the
//! template with their base offsets rewritten (the base offset lies outside
//! the batch CRC), as many as the request's byte limits allow: a consumer
//! reads at what its own fetching allows, whatever the disk. Any other
//! request, or a frame it can't read, closes that connection.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use weir_protocol::api::{ApiKey, RequestBody, ResponseBody};
use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::{RequestHeader, encode_response_frame};
use weir_protocol::messages::api_versions::{ApiVersion, ApiVersionsResponse};
use weir_protocol::messages::create_topics::{
    CreatableTopicResult, CreateTopicsRequest, CreateTopicsResponse,
};
use weir_protocol::messages::fetch::{
    FetchRequest, FetchResponse, FetchableTopicResponse, PartitionData,
};
use weir_protocol::messages::list_offsets::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use weir_protocol::messages::metadata::{
    MetadataRequest, MetadataResponse, MetadataResponseBroker, MetadataResponsePartition,
    MetadataResponseTopic,
};
use weir_protocol::messages::produce::{
    PartitionProduceResponse, ProduceRequest, ProduceResponse, TopicProduceResponse,
};
use weir_protocol::record::{BatchHeader, split_batches};

/// Largest request frame read: as Weir's default (socket.request.max.bytes).
const REQUEST_FRAME_BYTES_MAX: usize = 100 * 1024 * 1024;
/// Partitions a topic gets at CreateTopics without a count, or when it is
/// first named in Metadata.
const PARTITIONS_DEFAULT: i32 = 1;
/// Partitions one topic may have here (a CreateTopics asking for more fails).
const PARTITIONS_MAX: i32 = 100_000;
/// Topics kept at once: names come off the wire (Metadata creates what it
/// names), so the table is capped. Beyond it, Metadata answers
/// UNKNOWN_TOPIC_OR_PARTITION and CreateTopics POLICY_VIOLATION.
const TOPICS_MAX: usize = 10_000;
const NODE_ID: i32 = 0;
/// ListOffsets' timestamp for "the latest offset".
const LATEST_TIMESTAMP: i64 = -1;
const HANDLED: [ApiKey; 6] = [
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::CreateTopics,
    ApiKey::Produce,
    ApiKey::ListOffsets,
    ApiKey::Fetch,
];
/// Largest batch kept as a partition's fetch template.
const TEMPLATE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most record bytes one Fetch response carries, whatever the client asks
/// (librdkafka's default `fetch.max.bytes` is 50 MiB). One template batch may
/// still go past it when it is a response's first, as a broker's would.
const FETCH_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest a Fetch with nothing to return waits before its empty answer
/// (the request's max_wait_ms, capped: a thread per connection sleeps it).
const FETCH_WAIT_MS_MAX: u64 = 500;
const USAGE: &str = "usage: weir-sink --listen HOST:PORT";
/// Connections served at once (a thread each); more are closed at accept.
const CONNECTIONS_MAX: usize = 256;

/// One partition here: records counted, and the batch Fetch serves.
#[derive(Debug, Clone, Default)]
struct PartitionState {
    /// Records produced so far: the next offset.
    next_offset: i64,
    /// The first batch produced here and its record count.
    template: Option<(Bytes, i64)>,
}

impl PartitionState {
    /// The end a consumer may read to: whole templates only, so every
    /// fetched batch lies below it.
    fn fetchable_end(&self) -> i64 {
        match &self.template {
            Some((_, count)) if *count > 0 => self.next_offset / count * count,
            _ => 0,
        }
    }
}

/// Topic name -> its partitions.
type Topics = Arc<Mutex<HashMap<String, Vec<PartitionState>>>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match args.as_slice() {
        [flag, addr] if flag == "--listen" => addr.clone(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("weir-sink: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("weir-sink: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("weir-sink: listening on {local}");
    let topics: Topics = Arc::default();
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if open.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
            open.fetch_sub(1, Ordering::AcqRel);
            eprintln!("weir-sink: {CONNECTIONS_MAX} connections open; closing a new one");
            continue;
        }
        let topics = Arc::clone(&topics);
        let host = local.ip().to_string();
        let port = i32::from(local.port());
        let done = Arc::clone(&open);
        let spawned = std::thread::Builder::new()
            .name("weir-sink-conn".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &topics, &host, port) {
                    eprintln!("weir-sink: connection closed: {e}");
                }
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            open.fetch_sub(1, Ordering::AcqRel);
            eprintln!("weir-sink: cannot start a connection thread: {e}");
        }
    }
    ExitCode::SUCCESS
}

/// Answers one connection's requests in order until it closes.
fn serve(stream: TcpStream, topics: &Topics, host: &str, port: i32) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    loop {
        // Answers to pipelined requests go out together, but never wait
        // behind a read that has to block.
        if !whole_frame_buffered(reader.buffer()) {
            writer.flush()?;
        }
        let mut len = [0_u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = usize::try_from(i32::from_be_bytes(len)).unwrap_or(0);
        if len == 0 || len > REQUEST_FRAME_BYTES_MAX {
            return Err(std::io::Error::other(format!("frame of {len} bytes")));
        }
        let mut frame = Vec::with_capacity(len);
        (&mut reader).take(len as u64).read_to_end(&mut frame)?;
        if frame.len() != len {
            return Ok(()); // closed mid-frame
        }
        let mut body = Bytes::from(frame);
        let header = RequestHeader::decode(&mut body).map_err(std::io::Error::other)?;
        let request = header
            .decode_body(&mut body)
            .map_err(std::io::Error::other)?;
        if let Some(response) = answer(&header, request, topics, host, port)? {
            writer.write_all(&response)?;
        }
    }
}

fn whole_frame_buffered(buffered: &[u8]) -> bool {
    let Some(len) = buffered.get(..4) else {
        return false;
    };
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    usize::try_from(len).is_ok_and(|len| buffered.len() >= 4 + len)
}

/// The framed response to one request (`None` for acks=0 produce).
fn answer(
    header: &RequestHeader,
    request: RequestBody,
    topics: &Topics,
    host: &str,
    port: i32,
) -> std::io::Result<Option<Bytes>> {
    let handled = ApiKey::from_i16(header.api_key).is_some_and(|k| HANDLED.contains(&k));
    if !handled {
        return Err(std::io::Error::other(format!(
            "api key {} is not served here",
            header.api_key
        )));
    }
    let response = match request {
        RequestBody::ApiVersions(_) => ResponseBody::ApiVersions(api_versions()),
        RequestBody::Metadata(r) => ResponseBody::Metadata(metadata(r, topics, host, port)),
        RequestBody::CreateTopics(r) => ResponseBody::CreateTopics(create_topics(r, topics)),
        RequestBody::Produce(r) => {
            let acks = r.acks;
            let response = produce(r, topics);
            if acks == 0 {
                return Ok(None);
            }
            ResponseBody::Produce(response)
        }
        RequestBody::ListOffsets(r) => ResponseBody::ListOffsets(list_offsets(r, topics)),
        RequestBody::Fetch(r) => ResponseBody::Fetch(fetch(r, topics)),
        _ => return Err(std::io::Error::other("unexpected request body")),
    };
    let mut buf = BytesMut::new();
    encode_response_frame(
        &mut buf,
        header.api_version,
        header.correlation_id,
        &response,
    )
    .map_err(std::io::Error::other)?;
    Ok(Some(buf.freeze()))
}

fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: ErrorCode::None.code(),
        api_keys: HANDLED
            .iter()
            .map(|k| {
                let (min, max) = k.versions();
                // Produce and Fetch v13+ name topics by id, and the sink knows only names.
                let max = if matches!(*k, ApiKey::Produce | ApiKey::Fetch) {
                    max.min(12)
                } else {
                    max
                };
                ApiVersion {
                    api_key: *k as i16,
                    min_version: min,
                    max_version: max,
                }
            })
            .collect(),
        ..Default::default()
    }
}

fn lock(topics: &Topics) -> std::sync::MutexGuard<'_, HashMap<String, Vec<PartitionState>>> {
    topics.lock().unwrap_or_else(PoisonError::into_inner)
}

fn metadata(r: MetadataRequest, topics: &Topics, host: &str, port: i32) -> MetadataResponse {
    let mut known = lock(topics);
    let names: Vec<String> = match r.topics {
        Some(wanted) => wanted.into_iter().filter_map(|t| t.name).collect(),
        None => known.keys().cloned().collect(),
    };
    let topics = names
        .into_iter()
        .map(|name| {
            if !known.contains_key(&name) && known.len() < TOPICS_MAX {
                known.insert(
                    name.clone(),
                    vec![PartitionState::default(); PARTITIONS_DEFAULT as usize],
                );
            }
            let Some(count) = known.get(&name).map(Vec::len) else {
                return MetadataResponseTopic {
                    error_code: ErrorCode::UnknownTopicOrPartition.code(),
                    name: Some(name),
                    ..Default::default()
                };
            };
            MetadataResponseTopic {
                error_code: ErrorCode::None.code(),
                name: Some(name),
                partitions: (0..i32::try_from(count).unwrap_or(i32::MAX))
                    .map(|p| MetadataResponsePartition {
                        error_code: ErrorCode::None.code(),
                        partition_index: p,
                        leader_id: NODE_ID,
                        leader_epoch: 0,
                        replica_nodes: vec![NODE_ID],
                        isr_nodes: vec![NODE_ID],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    MetadataResponse {
        brokers: vec![MetadataResponseBroker {
            node_id: NODE_ID,
            host: host.to_owned(),
            port,
            ..Default::default()
        }],
        cluster_id: Some("weir-sink".to_owned()),
        controller_id: NODE_ID,
        topics,
        ..Default::default()
    }
}

fn create_topics(r: CreateTopicsRequest, topics: &Topics) -> CreateTopicsResponse {
    let mut known = lock(topics);
    let results = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = if t.num_partitions == -1 {
                PARTITIONS_DEFAULT
            } else {
                t.num_partitions
            };
            let error = if known.contains_key(&t.name) {
                ErrorCode::TopicAlreadyExists
            } else if !(1..=PARTITIONS_MAX).contains(&partitions) {
                ErrorCode::InvalidPartitions
            } else if known.len() >= TOPICS_MAX {
                ErrorCode::PolicyViolation
            } else {
                if !r.validate_only {
                    known.insert(
                        t.name.clone(),
                        vec![PartitionState::default(); partitions as usize],
                    );
                }
                ErrorCode::None
            };
            CreatableTopicResult {
                name: t.name,
                error_code: error.code(),
                num_partitions: partitions,
                replication_factor: 1,
                ..Default::default()
            }
        })
        .collect();
    CreateTopicsResponse {
        topics: results,
        ..Default::default()
    }
}

/// Acknowledges every partition's batches without keeping them; the base
/// offset is the partition's record count so far.
fn produce(r: ProduceRequest, topics: &Topics) -> ProduceResponse {
    let mut known = lock(topics);
    let responses = r
        .topic_data
        .into_iter()
        .map(|t| {
            let mut offsets = known.get_mut(&t.name);
            let partition_responses = t
                .partition_data
                .into_iter()
                .map(|p| {
                    let next = offsets
                        .as_deref_mut()
                        .and_then(|o| o.get_mut(usize::try_from(p.index).ok()?));
                    let (error, base_offset) = match (next, p.records) {
                        (Some(state), Some(records)) => match record_count(&records) {
                            Some(count) => {
                                let base = state.next_offset;
                                state.next_offset += count;
                                if state.template.is_none() {
                                    state.template = first_batch(&records);
                                }
                                (ErrorCode::None, base)
                            }
                            None => (ErrorCode::CorruptMessage, -1),
                        },
                        (Some(_), None) => (ErrorCode::CorruptMessage, -1),
                        (None, _) => (ErrorCode::UnknownTopicOrPartition, -1),
                    };
                    PartitionProduceResponse {
                        index: p.index,
                        error_code: error.code(),
                        base_offset,
                        log_start_offset: 0,
                        ..Default::default()
                    }
                })
                .collect();
            TopicProduceResponse {
                name: t.name,
                partition_responses,
                ..Default::default()
            }
        })
        .collect();
    ProduceResponse {
        responses,
        ..Default::default()
    }
}

/// The first batch of `records` and its record count, if small enough to keep.
fn first_batch(records: &Bytes) -> Option<(Bytes, i64)> {
    let batch = split_batches(records).next()?.ok()?;
    let header = BatchHeader::parse(&batch).ok()?;
    // A copy: a slice would keep the whole request frame alive.
    (batch.len() <= TEMPLATE_BYTES_MAX).then(|| {
        (
            Bytes::copy_from_slice(&batch),
            i64::from(header.last_offset_delta) + 1,
        )
    })
}

/// Earliest is 0, latest the fetchable end; a timestamp finds offset 0 (the
/// template's timestamps are all in the past).
fn list_offsets(r: ListOffsetsRequest, topics: &Topics) -> ListOffsetsResponse {
    let known = lock(topics);
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions_here = known.get(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let state = partitions_here
                        .and_then(|ps| ps.get(usize::try_from(p.partition_index).ok()?));
                    let (error, offset) = match state {
                        None => (ErrorCode::UnknownTopicOrPartition, -1),
                        Some(s) if p.timestamp == LATEST_TIMESTAMP => {
                            (ErrorCode::None, s.fetchable_end())
                        }
                        Some(_) => (ErrorCode::None, 0),
                    };
                    ListOffsetsPartitionResponse {
                        partition_index: p.partition_index,
                        error_code: error.code(),
                        old_style_offsets: vec![offset],
                        timestamp: -1,
                        offset,
                        leader_epoch: 0,
                    }
                })
                .collect();
            ListOffsetsTopicResponse {
                name: t.name,
                partitions,
            }
        })
        .collect();
    ListOffsetsResponse {
        topics,
        ..Default::default()
    }
}

/// Copies of each partition's template from the fetch offset on, within the
/// partition's and the request's byte limits (always one batch when there is
/// one, as Kafka does, so a consumer never stalls behind a small limit).
fn fetch(r: FetchRequest, topics: &Topics) -> FetchResponse {
    // The client's own limit, but never more than the sink's cap: a Fetch
    // asking for 2 GiB must not make the sink build a 2 GiB response.
    let mut bytes_left = usize::try_from(r.max_bytes)
        .unwrap_or(0)
        .min(FETCH_RESPONSE_BYTES_MAX);
    let mut any_records = false;
    let responses: Vec<FetchableTopicResponse> = {
        let known = lock(topics);
        r.topics
            .into_iter()
            .map(|t| {
                let partitions_here = known.get(&t.topic);
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let state = partitions_here
                            .and_then(|ps| ps.get(usize::try_from(p.partition).ok()?));
                        let Some(state) = state else {
                            return PartitionData {
                                partition_index: p.partition,
                                error_code: ErrorCode::UnknownTopicOrPartition.code(),
                                ..Default::default()
                            };
                        };
                        let end = state.fetchable_end();
                        if p.fetch_offset < 0 || p.fetch_offset > end {
                            return PartitionData {
                                partition_index: p.partition,
                                error_code: ErrorCode::OffsetOutOfRange.code(),
                                high_watermark: end,
                                last_stable_offset: end,
                                log_start_offset: 0,
                                ..Default::default()
                            };
                        }
                        let partition_max = usize::try_from(p.partition_max_bytes).unwrap_or(0);
                        let records = copies(
                            state,
                            p.fetch_offset,
                            end,
                            partition_max,
                            &mut bytes_left,
                            !any_records,
                        );
                        any_records |= !records.is_empty();
                        PartitionData {
                            partition_index: p.partition,
                            error_code: ErrorCode::None.code(),
                            high_watermark: end,
                            last_stable_offset: end,
                            log_start_offset: 0,
                            records: Some(records),
                            ..Default::default()
                        }
                    })
                    .collect();
                FetchableTopicResponse {
                    topic: t.topic,
                    partitions,
                    ..Default::default()
                }
            })
            .collect()
    };
    if !any_records {
        let wait_ms = u64::try_from(r.max_wait_ms).unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_millis(
            wait_ms.min(FETCH_WAIT_MS_MAX),
        ));
    }
    FetchResponse {
        responses,
        ..Default::default()
    }
}

/// Template copies for `[from, end)`, each with its base offset written in.
/// `first_in_response` lets one batch exceed the limits.
fn copies(
    state: &PartitionState,
    from: i64,
    end: i64,
    partition_max_bytes: usize,
    response_bytes_left: &mut usize,
    first_in_response: bool,
) -> Bytes {
    let Some((template, count)) = &state.template else {
        return Bytes::new();
    };
    let mut out = BytesMut::new();
    let mut base = from;
    while base + count <= end {
        let fits = out.len() + template.len() <= partition_max_bytes
            && template.len() <= *response_bytes_left;
        if !fits && !(first_in_response && out.is_empty()) {
            break;
        }
        let start = out.len();
        out.extend_from_slice(template);
        out[start..start + 8].copy_from_slice(&base.to_be_bytes());
        *response_bytes_left = response_bytes_left.saturating_sub(template.len());
        base += count;
    }
    out.freeze()
}

/// Records in a run of whole v2 batches (headers only; CRCs are not read).
fn record_count(records: &Bytes) -> Option<i64> {
    let mut count = 0_i64;
    for batch in split_batches(records) {
        let batch = batch.ok()?;
        let header = BatchHeader::parse(&batch).ok()?;
        count += i64::from(header.last_offset_delta) + 1;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_protocol::messages::fetch::{FetchPartition, FetchTopic};

    /// A client asking for 2 GiB gets at most the sink's cap (plus the one
    /// batch a response may always carry), not a response of its own size.
    #[test]
    fn a_fetch_response_is_capped_whatever_the_client_asks() {
        let template = Bytes::from(vec![0_u8; 1024 * 1024]);
        let topics: Topics = Arc::default();
        lock(&topics).insert(
            "t".to_owned(),
            vec![PartitionState {
                next_offset: 1_000,
                template: Some((template.clone(), 1)),
            }],
        );
        let request = FetchRequest {
            max_bytes: i32::MAX,
            topics: vec![FetchTopic {
                topic: "t".to_owned(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: 0,
                    partition_max_bytes: i32::MAX,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let response = fetch(request, &topics);
        let records = response.responses[0].partitions[0]
            .records
            .as_ref()
            .map_or(0, Bytes::len);
        assert_eq!(records, FETCH_RESPONSE_BYTES_MAX);
    }
}

//! Response frames that may carry file ranges, so that a Fetch response's
//! record bytes can go from segment files to the socket with sendfile.
//!
//! A frame is a list of chunks: in-memory bytes (length prefix, headers,
//! per-partition fields) and file ranges (record batches). The server writes
//! them in order; on a plaintext socket the file ranges never enter user space.

use bytes::{BufMut, Bytes, BytesMut};
use weir_log::{FileRange, ReadResult};

/// One piece of a response frame.
#[derive(Debug, Clone)]
pub enum FrameChunk {
    Bytes(Bytes),
    File(FileRange),
}

/// A whole response frame, length prefix included.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub chunks: Vec<FrameChunk>,
    /// The connection must close once the chunks (if any) are written: the
    /// response could not be produced, and a client left waiting for it
    /// would only time out. Closing makes it reconnect and retry at once.
    pub close_connection: bool,
    /// The error codes the response carries, for the errors-by-code metric.
    pub errors: crate::metrics::ErrorTally,
    /// A produce response's step timings, which the server completes with the read and the
    /// socket write (`produce_trace`).
    pub produce_trace: Option<crate::produce_trace::ProduceTrace>,
}

impl Frame {
    /// No response; the server closes the connection instead of answering.
    pub fn close_connection() -> Frame {
        Frame {
            chunks: Vec::new(),
            close_connection: true,
            errors: Default::default(),
            produce_trace: None,
        }
    }

    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| match c {
                FrameChunk::Bytes(b) => b.len(),
                FrameChunk::File(f) => f.len,
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies every chunk into memory (for transports that can't sendfile, and tests).
    pub fn to_bytes(&self) -> std::io::Result<Bytes> {
        let mut out = Vec::with_capacity(self.len());
        for chunk in &self.chunks {
            match chunk {
                FrameChunk::Bytes(b) => out.extend_from_slice(b),
                FrameChunk::File(f) => {
                    let at = out.len();
                    out.resize(at + f.len, 0);
                    if let Some(dst) = out.get_mut(at..) {
                        std::os::unix::fs::FileExt::read_exact_at(&*f.file, dst, f.position)?;
                    }
                }
            }
        }
        Ok(Bytes::from(out))
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Frame {
        Frame {
            chunks: vec![FrameChunk::Bytes(bytes)],
            close_connection: false,
            errors: Default::default(),
            produce_trace: None,
        }
    }
}

/// Bytes that stand in for a partition's records while the response is encoded
/// by the generated encoder; [`splice`] later swaps each for its file ranges.
/// 8 random bytes per process plus a counter make a collision with real
/// response content (topic names, offsets) vanishingly unlikely, and
/// `splice` refuses the frame rather than guess if a placeholder goes missing.
pub struct Placeholders {
    magic: [u8; 8],
    results: Vec<ReadResult>,
}

pub const PLACEHOLDER_BYTES: usize = 16;

impl Placeholders {
    pub fn new() -> Placeholders {
        // Drawn once per process: reading /dev/urandom on every fetch pass
        // would put a file open on the fetch hot path.
        static MAGIC: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
        let magic = *MAGIC.get_or_init(|| {
            let random = crate::topics::random_id();
            let mut magic = [0u8; 8];
            magic.copy_from_slice(&random[..8]);
            magic
        });
        Placeholders {
            magic,
            results: Vec::new(),
        }
    }

    /// Registers a read; returns the bytes to put in the `records` field.
    pub fn add(&mut self, result: ReadResult) -> Bytes {
        let mut token = BytesMut::with_capacity(PLACEHOLDER_BYTES);
        token.put_slice(&self.magic);
        token.put_u64(self.results.len() as u64);
        self.results.push(result);
        token.freeze()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }
}

impl Default for Placeholders {
    fn default() -> Self {
        Placeholders::new()
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn uvarint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Replaces each placeholder in an encoded frame with its file ranges, fixing
/// the records length prefix (`compact`: unsigned varint of len+1, else i32)
/// and the frame's own size prefix. Returns None if the frame can't be spliced.
pub fn splice(encoded: Bytes, placeholders: Placeholders, compact: bool) -> Option<Frame> {
    if placeholders.is_empty() {
        return Some(Frame::from(encoded));
    }
    let old_prefix_len = if compact { 1 } else { 4 }; // 16 fits in one varint byte
    let mut chunks = Vec::with_capacity(placeholders.results.len() * 3 + 1);
    let mut total: usize = encoded.len().checked_sub(4)?;
    let mut cursor = 4usize; // the size prefix is rewritten at the end
    for (index, result) in placeholders.results.into_iter().enumerate() {
        let mut token = [0u8; PLACEHOLDER_BYTES];
        token[..8].copy_from_slice(&placeholders.magic);
        token[8..].copy_from_slice(&(index as u64).to_be_bytes());
        let at = find(&encoded, &token, cursor)?;
        let prefix_at = at.checked_sub(old_prefix_len)?;
        if prefix_at < cursor {
            return None;
        }
        chunks.push(FrameChunk::Bytes(encoded.slice(cursor..prefix_at)));
        let mut prefix = BytesMut::with_capacity(5);
        if compact {
            uvarint(&mut prefix, result.bytes as u64 + 1);
        } else {
            prefix.put_i32(i32::try_from(result.bytes).ok()?);
        }
        total = total - old_prefix_len - PLACEHOLDER_BYTES + prefix.len() + result.bytes;
        chunks.push(FrameChunk::Bytes(prefix.freeze()));
        chunks.extend(result.ranges.into_iter().map(FrameChunk::File));
        cursor = at + PLACEHOLDER_BYTES;
    }
    chunks.push(FrameChunk::Bytes(encoded.slice(cursor..)));
    let size = i32::try_from(total).ok()?;
    chunks.insert(
        0,
        FrameChunk::Bytes(Bytes::copy_from_slice(&size.to_be_bytes())),
    );
    Some(Frame {
        chunks,
        close_connection: false,
        errors: Default::default(),
        produce_trace: None,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use weir_protocol::codec::{Decode, Encode};
    use weir_protocol::messages::fetch::{FetchResponse, FetchableTopicResponse, PartitionData};

    use super::*;

    fn range_of(file: &Arc<std::fs::File>, position: u64, len: usize) -> ReadResult {
        ReadResult {
            ranges: vec![FileRange {
                file: file.clone(),
                position,
                len,
            }],
            bytes: len,
            ..Default::default()
        }
    }

    /// Encodes a fetch response with two partitions' records as file ranges,
    /// splices, and checks that the wire bytes decode to the file contents.
    fn spliced_fetch_decodes_to_file_bytes(version: i16) {
        let mut tmp = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        tmp.write_all(&content).unwrap();
        let file = Arc::new(tmp);
        let mut placeholders = Placeholders::new();
        let first = placeholders.add(range_of(&file, 10, 300));
        let second = placeholders.add(range_of(&file, 1000, 4000));
        let partition = |index, records| PartitionData {
            partition_index: index,
            high_watermark: 99,
            records: Some(records),
            ..Default::default()
        };
        let response = FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: "t".into(),
                partitions: vec![
                    partition(0, first),
                    partition(1, Bytes::new()),
                    partition(2, second),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        response.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        let frame = splice(buf.freeze(), placeholders, version >= 12).expect("splice");
        let wire = frame.to_bytes().unwrap();
        assert_eq!(
            i32::from_be_bytes(wire[0..4].try_into().unwrap()) as usize,
            wire.len() - 4
        );
        let mut body = wire.slice(4..);
        let decoded = FetchResponse::decode(&mut body, version).unwrap();
        assert!(body.is_empty(), "no trailing bytes");
        let parts = &decoded.responses[0].partitions;
        assert_eq!(parts[0].records.as_deref(), Some(&content[10..310]));
        assert_eq!(parts[1].records.as_deref(), Some(&[][..]));
        assert_eq!(parts[2].records.as_deref(), Some(&content[1000..5000]));
        assert_eq!(parts[2].high_watermark, 99);
    }

    #[test]
    fn spliced_fetch_response_decodes_at_classic_version() {
        spliced_fetch_decodes_to_file_bytes(11);
    }

    #[test]
    fn spliced_fetch_response_decodes_at_flexible_version() {
        spliced_fetch_decodes_to_file_bytes(12);
    }
}

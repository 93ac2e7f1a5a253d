//! Compression codecs for record batches: gzip, snappy (raw and xerial framing),
//! lz4 frame and zstd.
//!
//! Decompression is always capped: the output limit is enforced while decoding,
//! so a small hostile input (a "zip bomb") can never make us allocate more than
//! `output_bytes_max` plus a small constant slack. This module never touches I/O.

/// The codec named by bits 0..2 of a record batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Every codec, in wire-id order (handy for tests and config validation).
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec's id as stored in batch attributes bits 0..2.
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Maps a wire id (0..=4) back to a codec; ids 5..7 are unassigned.
    pub fn from_id(id: i16) -> Option<Compression> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Kafka's name for the codec, as used in `compression.type` configs.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Why compressing or decompressing failed.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("decompressed output exceeds the cap of {output_bytes_max} bytes")]
    OutputTooLarge { output_bytes_max: usize },
    #[error("{codec} data is malformed: {reason}")]
    Malformed { codec: &'static str, reason: String },
    #[error("{codec} compression failed: {reason}")]
    Encode { codec: &'static str, reason: String },
}

impl CompressionError {
    fn malformed(codec: Compression, reason: impl std::fmt::Display) -> CompressionError {
        CompressionError::Malformed {
            codec: codec.name(),
            reason: reason.to_string(),
        }
    }
}

/// The 8-byte magic that opens a snappy-java (xerial) stream, which is what the
/// Java client writes for `compression.type=snappy`.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// xerial header: magic, then version and minimum compatible version (i32 each).
const XERIAL_HEADER_BYTES: usize = XERIAL_MAGIC.len() + 8;
const XERIAL_VERSION: i32 = 1;
const XERIAL_COMPATIBLE_VERSION: i32 = 1;
/// Uncompressed bytes per xerial block; snappy-java's default block size.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// Gzip level; Kafka's default (`compression.gzip.level` = -1 maps to 6).
const GZIP_LEVEL: u32 = 6;
/// Zstd level; Kafka's default `compression.zstd.level`.
const ZSTD_LEVEL: i32 = 3;
/// Largest zstd window (log2 bytes) we accept regardless of the output cap.
/// Windows drive decoder memory, so a hostile frame header could otherwise make
/// the decoder allocate up to 128 MiB. 2^23 covers every standard level when
/// the content size is unknown up to level 18 (higher levels with an unknown
/// content size are rejected unless the output cap is large).
const ZSTD_WINDOW_LOG_FLOOR: u32 = 23;
/// zstd's own default decoding limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT).
const ZSTD_WINDOW_LOG_CEILING: u32 = 27;
/// Chunk size for streaming decoders' reads.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Appends `input` compressed with `codec` to `out`. `Compression::None` copies.
///
/// Output formats match what the Java client produces, so every client can read
/// them: gzip (single member), snappy with xerial framing, LZ4 frame with 64 KiB
/// independent blocks and no checksums beyond the frame header's, zstd frames.
pub fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    use std::io::Write;
    let fail = |e: &dyn std::fmt::Display| CompressionError::Encode {
        codec: codec.name(),
        reason: e.to_string(),
    };
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            encoder.write_all(input).map_err(|e| fail(&e))?;
            encoder.finish().map_err(|e| fail(&e))?;
        }
        Compression::Snappy => compress_xerial(input, out).map_err(|e| fail(&e))?,
        Compression::Lz4 => {
            let frame_info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(frame_info, out);
            encoder.write_all(input).map_err(|e| fail(&e))?;
            encoder.finish().map_err(|e| fail(&e))?;
        }
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(input, ZSTD_LEVEL).map_err(|e| fail(&e))?;
            out.extend_from_slice(&compressed);
        }
    }
    Ok(())
}

fn compress_xerial(input: &[u8], out: &mut Vec<u8>) -> Result<(), snap::Error> {
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_COMPATIBLE_VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for block in input.chunks(XERIAL_BLOCK_BYTES) {
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let data_at = out.len();
        out.resize(data_at + snap::raw::max_compress_len(block.len()), 0);
        let written = encoder.compress(block, out.get_mut(data_at..).unwrap_or_default())?;
        out.truncate(data_at + written);
        // A block is at most 32 KiB uncompressed, so its compressed length fits an i32.
        let length = i32::try_from(written).unwrap_or(i32::MAX);
        if let Some(slot) = out.get_mut(length_at..data_at) {
            slot.copy_from_slice(&length.to_be_bytes());
        }
    }
    Ok(())
}

/// Decompresses `input`, failing with [`CompressionError::OutputTooLarge`] as
/// soon as the output would exceed `output_bytes_max`. The cap is enforced while
/// decoding: memory use stays within `output_bytes_max` plus the codec's fixed
/// working buffers (at most a few MiB for lz4 and zstd windows).
///
/// Snappy input may be raw snappy or xerial-framed; the framing is detected by
/// its magic, as librdkafka does.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    output_bytes_max: usize,
) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => {
            if input.len() > output_bytes_max {
                return Err(CompressionError::OutputTooLarge { output_bytes_max });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_capped(
            codec,
            flate2::read::MultiGzDecoder::new(input),
            output_bytes_max,
        ),
        Compression::Snappy => {
            let mut out = Vec::new();
            if input.starts_with(&XERIAL_MAGIC) {
                decompress_xerial(input, output_bytes_max, &mut out)?;
            } else {
                decompress_snappy_block(input, output_bytes_max, &mut out)?;
            }
            Ok(out)
        }
        Compression::Lz4 => read_capped(
            codec,
            lz4_flex::frame::FrameDecoder::new(input),
            output_bytes_max,
        ),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| CompressionError::malformed(codec, e))?;
            decoder
                .window_log_max(zstd_window_log_max(output_bytes_max))
                .map_err(|e| CompressionError::malformed(codec, e))?;
            read_capped(codec, decoder, output_bytes_max)
        }
    }
}

/// A window never needs to exceed the content, so allow about twice the cap,
/// but never less than the floor (streaming encoders that do not know the
/// content size pick windows by level) or more than zstd's default limit.
fn zstd_window_log_max(output_bytes_max: usize) -> u32 {
    let cap_log = usize::BITS - output_bytes_max.leading_zeros();
    cap_log.clamp(ZSTD_WINDOW_LOG_FLOOR, ZSTD_WINDOW_LOG_CEILING)
}

/// Reserves room for `additional` more bytes, growing geometrically but never
/// past `output_bytes_max`, so `Vec`'s doubling cannot overshoot the cap.
/// Callers guarantee `out.len() + additional <= output_bytes_max`.
fn reserve_capped(out: &mut Vec<u8>, additional: usize, output_bytes_max: usize) {
    let needed = out.len().saturating_add(additional);
    if needed <= out.capacity() {
        return;
    }
    let target = out
        .capacity()
        .saturating_mul(2)
        .max(needed)
        .min(output_bytes_max)
        .max(needed);
    out.reserve_exact(target - out.len());
}

fn read_capped(
    codec: Compression,
    mut reader: impl std::io::Read,
    output_bytes_max: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        let read_bytes = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CompressionError::malformed(codec, e)),
        };
        let data = chunk.get(..read_bytes).unwrap_or_default();
        if data.len() > output_bytes_max - out.len() {
            return Err(CompressionError::OutputTooLarge { output_bytes_max });
        }
        reserve_capped(&mut out, data.len(), output_bytes_max);
        out.extend_from_slice(data);
    }
}

/// Decodes one raw snappy block, appending to `out`. The block's declared
/// length is checked against the remaining cap before any allocation.
fn decompress_snappy_block(
    block: &[u8],
    output_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    let codec = Compression::Snappy;
    let block_bytes =
        snap::raw::decompress_len(block).map_err(|e| CompressionError::malformed(codec, e))?;
    if block_bytes > output_bytes_max - out.len() {
        return Err(CompressionError::OutputTooLarge { output_bytes_max });
    }
    reserve_capped(out, block_bytes, output_bytes_max);
    let start = out.len();
    out.resize(start + block_bytes, 0);
    let target = out.get_mut(start..).unwrap_or_default();
    let written = snap::raw::Decoder::new()
        .decompress(block, target)
        .map_err(|e| CompressionError::malformed(codec, e))?;
    out.truncate(start + written);
    Ok(())
}

fn decompress_xerial(
    input: &[u8],
    output_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    let codec = Compression::Snappy;
    let mut rest = input
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| CompressionError::malformed(codec, "truncated xerial header"))?;
    // The versions are not checked: snappy-java itself only rejects a minimum
    // compatible version above its own, and every version uses this framing.
    while !rest.is_empty() {
        let length: [u8; 4] = rest
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| CompressionError::malformed(codec, "truncated xerial block length"))?;
        let block_bytes = usize::try_from(i32::from_be_bytes(length))
            .map_err(|_| CompressionError::malformed(codec, "negative xerial block length"))?;
        let block = rest.get(4..4 + block_bytes).ok_or_else(|| {
            CompressionError::malformed(codec, "xerial block longer than the input")
        })?;
        decompress_snappy_block(block, output_bytes_max, out)?;
        rest = rest.get(4 + block_bytes..).unwrap_or_default();
    }
    Ok(())
}

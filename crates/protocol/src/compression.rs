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
}

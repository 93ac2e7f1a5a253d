//! Primitive readers and writers for Kafka's wire types, the `Encode`/`Decode`
//! traits every generated message implements, and the codec errors.
//!
//! Decoding reads from a `bytes::Bytes` and advances it; `bytes` and `records`
//! values are `split_to` slices of the input, so a 1 MiB record set is never
//! copied. Every length or count read off the wire is checked against the bytes
//! that remain *before* anything is allocated: a count can never exceed
//! `remaining / minimum element size`, and a preallocation is further capped so
//! that a lying count can cost at most [`PREALLOC_BYTES_MAX`] up front.
//!
//! Nothing here panics on input: reads go through `try_get_*`-style checks and
//! every failure is a [`DecodeError`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Errors produced while decoding untrusted bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes remain than the next value needs.
    #[error("truncated input: needed {needed} bytes, {remaining} remain")]
    Truncated { needed: usize, remaining: usize },
    /// A classic length or count below -1, or -1 where null is not allowed.
    #[error("negative length {0}")]
    NegativeLength(i64),
    /// A length or count larger than the bytes that remain could hold.
    #[error("length {length} exceeds what {remaining} remaining bytes can hold")]
    LengthTooLarge { length: u64, remaining: usize },
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A varint longer than its type allows.
    #[error("malformed varint")]
    InvalidVarint,
    /// A null where the schema does not allow one in this version.
    #[error("null value for non-nullable field {field}")]
    UnexpectedNull { field: &'static str },
    /// The api key / version pair is not one this crate decodes.
    #[error("unsupported version {version} of api key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    /// The api key is unknown.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// A nullable-struct marker that is neither -1 nor 1.
    #[error("invalid presence marker {0}")]
    InvalidMarker(i8),
}

/// Errors produced while encoding a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// `None` in a field that is not nullable in the requested version.
    #[error("null value for non-nullable field {field} at version {version}")]
    NullNotAllowed { field: &'static str, version: i16 },
    /// The version is outside the message's supported range.
    #[error("unsupported version {version} of api key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    /// A string, byte string or array longer than its length prefix can express.
    #[error("value of length {0} is too long for its length prefix")]
    TooLong(usize),
}

/// Writes a value at a given message version.
pub trait Encode {
    /// Appends the encoding of `self` at `version` to `buf`.
    fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError>;
    /// Exactly the number of bytes `encode` appends at `version` (when it succeeds).
    fn encoded_len(&self, version: i16) -> usize;
}

/// Walks the error codes a response carries (top level, per topic, per
/// partition, ...), so the broker can count errors by API and code without
/// knowing each response's shape.
pub trait ErrorCodes {
    /// Calls `f` with every `error_code` field, `NONE` included.
    fn for_each_error_code<F: FnMut(i16)>(&self, f: &mut F);
}

/// Reads a value at a given message version, advancing `buf`.
pub trait Decode: Sized {
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError>;
}

/// Static facts about a top-level request or response.
pub trait Message {
    const API_KEY: i16;
    const MIN_VERSION: i16;
    const MAX_VERSION: i16;
    /// First flexible version, or `i16::MAX` if the message has none.
    const FLEXIBLE_MIN_VERSION: i16;
}

/// Upper bound on what one array preallocation may reserve before the elements
/// have actually been read. A larger array still decodes; it just grows as real
/// elements arrive, so memory tracks bytes actually consumed.
pub const PREALLOC_BYTES_MAX: usize = 64 * 1024;

#[inline]
fn need(buf: &Bytes, needed: usize) -> Result<(), DecodeError> {
    if buf.remaining() < needed {
        Err(DecodeError::Truncated {
            needed,
            remaining: buf.remaining(),
        })
    } else {
        Ok(())
    }
}

macro_rules! fixed_int {
    ($read:ident, $write:ident, $ty:ty, $get:ident, $put:ident) => {
        #[inline]
        pub fn $read(buf: &mut Bytes) -> Result<$ty, DecodeError> {
            need(buf, std::mem::size_of::<$ty>())?;
            Ok(buf.$get())
        }
        #[inline]
        pub fn $write(buf: &mut BytesMut, value: $ty) {
            buf.$put(value);
        }
    };
}

fixed_int!(read_i8, write_i8, i8, get_i8, put_i8);
fixed_int!(read_i16, write_i16, i16, get_i16, put_i16);
fixed_int!(read_i32, write_i32, i32, get_i32, put_i32);
fixed_int!(read_i64, write_i64, i64, get_i64, put_i64);
fixed_int!(read_u16, write_u16, u16, get_u16, put_u16);
fixed_int!(read_u32, write_u32, u32, get_u32, put_u32);
fixed_int!(read_f64, write_f64, f64, get_f64, put_f64);

#[inline]
pub fn read_bool(buf: &mut Bytes) -> Result<bool, DecodeError> {
    // Kafka treats any non-zero byte as true.
    Ok(read_i8(buf)? != 0)
}

#[inline]
pub fn write_bool(buf: &mut BytesMut, value: bool) {
    buf.put_u8(u8::from(value));
}

#[inline]
pub fn read_uuid(buf: &mut Bytes) -> Result<[u8; 16], DecodeError> {
    need(buf, 16)?;
    let mut out = [0u8; 16];
    buf.copy_to_slice(&mut out);
    Ok(out)
}

#[inline]
pub fn write_uuid(buf: &mut BytesMut, value: &[u8; 16]) {
    buf.put_slice(value);
}

/// Unsigned LEB128 varint, at most 5 bytes (Kafka's `readUnsignedVarint`).
pub fn read_uvarint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        need(buf, 1)?;
        let byte = buf.get_u8();
        if i == 4 && byte > 0x0f {
            return Err(DecodeError::InvalidVarint);
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::InvalidVarint)
}

/// Unsigned LEB128 varint of up to 10 bytes.
pub fn read_uvarlong(buf: &mut Bytes) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        need(buf, 1)?;
        let byte = buf.get_u8();
        if i == 9 && byte > 0x01 {
            return Err(DecodeError::InvalidVarint);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::InvalidVarint)
}

pub fn write_uvarint(buf: &mut BytesMut, value: u32) {
    write_uvarlong(buf, u64::from(value));
}

pub fn write_uvarlong(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[inline]
pub fn uvarint_len(value: u32) -> usize {
    uvarlong_len(u64::from(value))
}

#[inline]
pub fn uvarlong_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Zigzag-encoded signed varint (record fields).
pub fn read_varint(buf: &mut Bytes) -> Result<i32, DecodeError> {
    let raw = read_uvarint(buf)?;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

pub fn write_varint(buf: &mut BytesMut, value: i32) {
    write_uvarint(buf, ((value << 1) ^ (value >> 31)) as u32);
}

pub fn varint_len(value: i32) -> usize {
    uvarint_len(((value << 1) ^ (value >> 31)) as u32)
}

/// Zigzag-encoded signed varlong (record fields).
pub fn read_varlong(buf: &mut Bytes) -> Result<i64, DecodeError> {
    let raw = read_uvarlong(buf)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

pub fn write_varlong(buf: &mut BytesMut, value: i64) {
    write_uvarlong(buf, ((value << 1) ^ (value >> 63)) as u64);
}

pub fn varlong_len(value: i64) -> usize {
    uvarlong_len(((value << 1) ^ (value >> 63)) as u64)
}

// ---- lengths ---------------------------------------------------------------

/// Reads a length prefix: i16 (classic string), i32 (classic bytes/array), or
/// uvarint `len + 1` (compact). Returns `None` for null. The length is checked
/// against the remaining bytes times `elem_len_min` before returning.
fn read_len(
    buf: &mut Bytes,
    compact: bool,
    classic_i16: bool,
    elem_len_min: usize,
) -> Result<Option<usize>, DecodeError> {
    let raw: i64 = if compact {
        i64::from(read_uvarint(buf)?) - 1
    } else if classic_i16 {
        i64::from(read_i16(buf)?)
    } else {
        i64::from(read_i32(buf)?)
    };
    if raw == -1 {
        return Ok(None);
    }
    if raw < -1 {
        return Err(DecodeError::NegativeLength(raw));
    }
    let len = raw as u64;
    let remaining = buf.remaining();
    if len > (remaining / elem_len_min.max(1)) as u64 {
        return Err(DecodeError::LengthTooLarge {
            length: len,
            remaining,
        });
    }
    Ok(Some(len as usize))
}

fn write_len(
    buf: &mut BytesMut,
    len: Option<usize>,
    compact: bool,
    classic_i16: bool,
) -> Result<(), EncodeError> {
    match (compact, len) {
        (true, None) => write_uvarint(buf, 0),
        (true, Some(n)) => {
            let v = u32::try_from(n)
                .ok()
                .and_then(|n| n.checked_add(1))
                .ok_or(EncodeError::TooLong(n))?;
            write_uvarint(buf, v);
        }
        (false, None) if classic_i16 => write_i16(buf, -1),
        (false, None) => write_i32(buf, -1),
        (false, Some(n)) if classic_i16 => {
            write_i16(buf, i16::try_from(n).map_err(|_| EncodeError::TooLong(n))?)
        }
        (false, Some(n)) => write_i32(buf, i32::try_from(n).map_err(|_| EncodeError::TooLong(n))?),
    }
    Ok(())
}

fn len_len(len: Option<usize>, compact: bool, classic_i16: bool) -> usize {
    if compact {
        match len {
            None => 1,
            Some(n) => uvarlong_len(n as u64 + 1),
        }
    } else if classic_i16 {
        2
    } else {
        4
    }
}

// ---- strings ---------------------------------------------------------------

fn bytes_to_string(raw: Bytes) -> Result<String, DecodeError> {
    std::str::from_utf8(&raw)
        .map(str::to_owned)
        .map_err(|_| DecodeError::InvalidUtf8)
}

/// Nullable string: classic (i16 length) or compact (uvarint length + 1).
pub fn read_nullable_string(buf: &mut Bytes, compact: bool) -> Result<Option<String>, DecodeError> {
    match read_len(buf, compact, true, 1)? {
        None => Ok(None),
        Some(n) => bytes_to_string(buf.split_to(n)).map(Some),
    }
}

/// Non-nullable string; a null on the wire is an error naming `field`.
pub fn read_string(
    buf: &mut Bytes,
    compact: bool,
    field: &'static str,
) -> Result<String, DecodeError> {
    read_nullable_string(buf, compact)?.ok_or(DecodeError::UnexpectedNull { field })
}

pub fn write_nullable_string(
    buf: &mut BytesMut,
    value: Option<&str>,
    compact: bool,
) -> Result<(), EncodeError> {
    write_len(buf, value.map(str::len), compact, true)?;
    if let Some(s) = value {
        buf.put_slice(s.as_bytes());
    }
    Ok(())
}

pub fn write_string(buf: &mut BytesMut, value: &str, compact: bool) -> Result<(), EncodeError> {
    write_nullable_string(buf, Some(value), compact)
}

pub fn nullable_string_len(value: Option<&str>, compact: bool) -> usize {
    len_len(value.map(str::len), compact, true) + value.map_or(0, str::len)
}

pub fn string_len(value: &str, compact: bool) -> usize {
    nullable_string_len(Some(value), compact)
}

// ---- bytes -----------------------------------------------------------------

/// Nullable byte string; the result is a zero-copy slice of `buf`.
pub fn read_nullable_bytes(buf: &mut Bytes, compact: bool) -> Result<Option<Bytes>, DecodeError> {
    match read_len(buf, compact, false, 1)? {
        None => Ok(None),
        Some(n) => Ok(Some(buf.split_to(n))),
    }
}

pub fn read_bytes(
    buf: &mut Bytes,
    compact: bool,
    field: &'static str,
) -> Result<Bytes, DecodeError> {
    read_nullable_bytes(buf, compact)?.ok_or(DecodeError::UnexpectedNull { field })
}

pub fn write_nullable_bytes(
    buf: &mut BytesMut,
    value: Option<&[u8]>,
    compact: bool,
) -> Result<(), EncodeError> {
    write_len(buf, value.map(<[u8]>::len), compact, false)?;
    if let Some(b) = value {
        buf.put_slice(b);
    }
    Ok(())
}

pub fn write_bytes(buf: &mut BytesMut, value: &[u8], compact: bool) -> Result<(), EncodeError> {
    write_nullable_bytes(buf, Some(value), compact)
}

pub fn nullable_bytes_len(value: Option<&[u8]>, compact: bool) -> usize {
    len_len(value.map(<[u8]>::len), compact, false) + value.map_or(0, <[u8]>::len)
}

pub fn bytes_len(value: &[u8], compact: bool) -> usize {
    nullable_bytes_len(Some(value), compact)
}

// ---- arrays ----------------------------------------------------------------

/// Reads an array count (null = `None`), bounded so that `count * elem_len_min`
/// fits in what remains.
pub fn read_array_len(
    buf: &mut Bytes,
    compact: bool,
    elem_len_min: usize,
) -> Result<Option<usize>, DecodeError> {
    read_len(buf, compact, false, elem_len_min)
}

pub fn write_array_len(
    buf: &mut BytesMut,
    len: Option<usize>,
    compact: bool,
) -> Result<(), EncodeError> {
    write_len(buf, len, compact, false)
}

pub fn array_len_len(len: Option<usize>, compact: bool) -> usize {
    len_len(len, compact, false)
}

/// A `Vec` for `count` elements whose reservation is capped at
/// [`PREALLOC_BYTES_MAX`]: the count is already bounded by remaining bytes, but
/// an element can be far bigger in memory than its minimum wire size.
pub fn vec_for_count<T>(count: usize) -> Vec<T> {
    let elem_bytes = std::mem::size_of::<T>().max(1);
    Vec::with_capacity(count.min(PREALLOC_BYTES_MAX / elem_bytes))
}

/// Reads a nullable array whose elements are read by `read_elem`.
pub fn read_nullable_array<T>(
    buf: &mut Bytes,
    compact: bool,
    elem_len_min: usize,
    mut read_elem: impl FnMut(&mut Bytes) -> Result<T, DecodeError>,
) -> Result<Option<Vec<T>>, DecodeError> {
    let Some(count) = read_array_len(buf, compact, elem_len_min)? else {
        return Ok(None);
    };
    let mut out = vec_for_count(count);
    for _ in 0..count {
        out.push(read_elem(buf)?);
    }
    Ok(Some(out))
}

pub fn read_array<T>(
    buf: &mut Bytes,
    compact: bool,
    elem_len_min: usize,
    field: &'static str,
    read_elem: impl FnMut(&mut Bytes) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    read_nullable_array(buf, compact, elem_len_min, read_elem)?
        .ok_or(DecodeError::UnexpectedNull { field })
}

// ---- tagged fields ---------------------------------------------------------

/// Reads the number of tagged fields in a section, bounded by remaining bytes
/// (each field takes at least two bytes: tag and size).
pub fn read_tag_count(buf: &mut Bytes) -> Result<usize, DecodeError> {
    let count = read_uvarint(buf)? as usize;
    let remaining = buf.remaining();
    if count > remaining / 2 {
        return Err(DecodeError::LengthTooLarge {
            length: count as u64,
            remaining,
        });
    }
    Ok(count)
}

/// Reads one tagged field header and returns its tag and its value bytes
/// (a zero-copy slice, already removed from `buf`).
pub fn read_tagged_field(buf: &mut Bytes) -> Result<(u32, Bytes), DecodeError> {
    let tag = read_uvarint(buf)?;
    let size = read_uvarint(buf)? as usize;
    need(buf, size)?;
    Ok((tag, buf.split_to(size)))
}

/// Skips a whole tagged-field section (used where no tags are known).
pub fn skip_tagged_fields(buf: &mut Bytes) -> Result<(), DecodeError> {
    let count = read_tag_count(buf)?;
    for _ in 0..count {
        read_tagged_field(buf)?;
    }
    Ok(())
}

/// Writes the header of one tagged field.
pub fn write_tag_header(buf: &mut BytesMut, tag: u32, size: usize) -> Result<(), EncodeError> {
    write_uvarint(buf, tag);
    write_uvarint(
        buf,
        u32::try_from(size).map_err(|_| EncodeError::TooLong(size))?,
    );
    Ok(())
}

pub fn tag_header_len(tag: u32, size: usize) -> usize {
    uvarint_len(tag) + uvarlong_len(size as u64)
}

/// A small deterministic xorshift generator for the generated random-value
/// fillers used by round-trip tests. Not for anything that needs real randomness.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct TestRng(u64);

#[doc(hidden)]
impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    pub fn string(&mut self) -> String {
        let len = self.below(8);
        (0..len)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }
    pub fn bytes(&mut self) -> Bytes {
        let len = self.below(12);
        Bytes::from((0..len).map(|_| self.next_u64() as u8).collect::<Vec<u8>>())
    }
    pub fn uuid(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        out
    }
    pub fn f64(&mut self) -> f64 {
        // Finite and exactly representable so PartialEq round-trips.
        (self.below(1_000_000) as f64) / 8.0
    }
    pub fn array_len(&mut self) -> usize {
        self.below(3) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_round_trips_boundaries() {
        for v in [0u32, 1, 127, 128, 16383, 16384, u32::MAX] {
            let mut b = BytesMut::new();
            write_uvarint(&mut b, v);
            assert_eq!(b.len(), uvarint_len(v));
            let mut r = b.freeze();
            assert_eq!(read_uvarint(&mut r).unwrap(), v);
        }
    }

    #[test]
    fn zigzag_varlong_round_trips_extremes() {
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -64, 63] {
            let mut b = BytesMut::new();
            write_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_len(v));
            let mut r = b.freeze();
            assert_eq!(read_varlong(&mut r).unwrap(), v);
        }
    }

    #[test]
    fn overlong_uvarint_is_rejected() {
        let mut r = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(read_uvarint(&mut r), Err(DecodeError::InvalidVarint));
    }

    #[test]
    fn huge_array_count_is_rejected_before_allocation() {
        let mut r = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        let got = read_array_len(&mut r, false, 4);
        assert!(matches!(got, Err(DecodeError::LengthTooLarge { .. })));
    }

    #[test]
    fn compact_null_string_is_zero_byte() {
        let mut b = BytesMut::new();
        write_nullable_string(&mut b, None, true).unwrap();
        assert_eq!(&b[..], &[0]);
        let mut r = b.freeze();
        assert_eq!(read_nullable_string(&mut r, true).unwrap(), None);
    }

    #[test]
    fn bytes_are_sliced_not_copied() {
        let mut b = BytesMut::new();
        write_bytes(&mut b, &[7u8; 100], false).unwrap();
        let whole = b.freeze();
        let base = whole.as_ptr() as usize;
        let mut r = whole.clone();
        let got = read_bytes(&mut r, false, "x").unwrap();
        assert_eq!(got.as_ptr() as usize, base + 4);
    }
}

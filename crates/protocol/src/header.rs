//! Request and response headers, and the 4-byte length prefix that frames
//! every Kafka message.
//!
//! The header decoder reads only what it needs to pick the header version
//! (api key and version come first), so an unknown api key or an unsupported
//! version is detected from the header alone and the server can still answer
//! with UNSUPPORTED_VERSION and the right correlation id.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::api::{self, RequestBody, ResponseBody};
use crate::codec::{self, DecodeError, EncodeError};

/// Request header v1 (and v2, which adds a tagged-field section).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// Kept as a classic i16-length nullable string even in header v2: Kafka
    /// made the header flexible without making this field compact.
    pub client_id: Option<String>,
}

impl RequestHeader {
    /// Decodes a request header, advancing `buf` to the start of the body.
    /// Picks header v1 or v2 from the api key and version it reads first.
    pub fn decode(buf: &mut Bytes) -> Result<RequestHeader, DecodeError> {
        let api_key = codec::read_i16(buf)?;
        let api_version = codec::read_i16(buf)?;
        let correlation_id = codec::read_i32(buf)?;
        let client_id = codec::read_nullable_string(buf, false)?;
        if api::request_header_version(api_key, api_version) >= 2 {
            codec::skip_tagged_fields(buf)?;
        }
        Ok(RequestHeader {
            api_key,
            api_version,
            correlation_id,
            client_id,
        })
    }

    /// 1 or 2, from the api key and version.
    pub fn header_version(&self) -> i16 {
        api::request_header_version(self.api_key, self.api_version)
    }

    /// Whether this crate can decode the body that follows.
    pub fn is_supported(&self) -> bool {
        api::is_supported(self.api_key, self.api_version)
    }

    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        codec::write_i16(buf, self.api_key);
        codec::write_i16(buf, self.api_version);
        codec::write_i32(buf, self.correlation_id);
        codec::write_nullable_string(buf, self.client_id.as_deref(), false)?;
        if self.header_version() >= 2 {
            codec::write_uvarint(buf, 0);
        }
        Ok(())
    }

    pub fn encoded_len(&self) -> usize {
        8 + codec::nullable_string_len(self.client_id.as_deref(), false)
            + usize::from(self.header_version() >= 2)
    }

    /// Decodes the body that follows this header.
    pub fn decode_body(&self, buf: &mut Bytes) -> Result<RequestBody, DecodeError> {
        RequestBody::decode(self.api_key, self.api_version, buf)
    }
}

/// Response header v0 (correlation id) or v1 (plus an empty tagged-field section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseHeader {
    pub correlation_id: i32,
}

impl ResponseHeader {
    pub fn encode(&self, buf: &mut BytesMut, header_version: i16) {
        codec::write_i32(buf, self.correlation_id);
        if header_version >= 1 {
            codec::write_uvarint(buf, 0);
        }
    }

    pub fn encoded_len(&self, header_version: i16) -> usize {
        4 + usize::from(header_version >= 1)
    }

    pub fn decode(buf: &mut Bytes, header_version: i16) -> Result<ResponseHeader, DecodeError> {
        let correlation_id = codec::read_i32(buf)?;
        if header_version >= 1 {
            codec::skip_tagged_fields(buf)?;
        }
        Ok(ResponseHeader { correlation_id })
    }
}

/// Why a frame could not be taken off or put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    #[error("frame of {length} bytes exceeds the {frame_bytes_max}-byte limit")]
    TooLarge {
        length: usize,
        frame_bytes_max: usize,
    },
}

/// Bytes in the length prefix of every frame.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Takes one complete frame (without its 4-byte big-endian length prefix) off
/// the front of `buf`. Returns `Ok(None)` until the whole frame has arrived.
/// A negative length or one above `frame_bytes_max` is an error before any
/// body byte is buffered for it, so a hostile prefix cannot make the caller
/// reserve memory.
pub fn split_frame(
    buf: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let Some(prefix) = buf.get(..FRAME_PREFIX_BYTES) else {
        return Ok(None);
    };
    let length = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let length = usize::try_from(length).map_err(|_| FrameError::NegativeLength(length))?;
    if length > frame_bytes_max {
        return Err(FrameError::TooLarge {
            length,
            frame_bytes_max,
        });
    }
    if buf.len() < FRAME_PREFIX_BYTES + length {
        return Ok(None);
    }
    buf.advance(FRAME_PREFIX_BYTES);
    Ok(Some(buf.split_to(length).freeze()))
}

/// Appends `payload` as one length-prefixed frame.
pub fn write_frame(buf: &mut BytesMut, payload: &[u8]) -> Result<(), FrameError> {
    let length = i32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        length: payload.len(),
        frame_bytes_max: i32::MAX as usize,
    })?;
    buf.reserve(FRAME_PREFIX_BYTES + payload.len());
    buf.put_i32(length);
    buf.put_slice(payload);
    Ok(())
}

/// Reserves a length prefix and returns where it starts; write the frame body
/// after it and call [`finish_frame`]. Avoids copying a body encoded in place.
pub fn begin_frame(buf: &mut BytesMut) -> usize {
    let start = buf.len();
    buf.put_i32(0);
    start
}

/// Fills in the length prefix reserved by [`begin_frame`] at `start`.
pub fn finish_frame(buf: &mut BytesMut, start: usize) -> Result<(), FrameError> {
    let body_bytes = buf.len().saturating_sub(start + FRAME_PREFIX_BYTES);
    let length = i32::try_from(body_bytes).map_err(|_| FrameError::TooLarge {
        length: body_bytes,
        frame_bytes_max: i32::MAX as usize,
    })?;
    if let Some(prefix) = buf.get_mut(start..start + FRAME_PREFIX_BYTES) {
        prefix.copy_from_slice(&length.to_be_bytes());
    }
    Ok(())
}

/// Appends a complete response frame: prefix, header (version chosen from the
/// api key and version) and body.
pub fn encode_response_frame(
    buf: &mut BytesMut,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseBody,
) -> Result<(), EncodeError> {
    let api_key = body.api_key().as_i16();
    let header_version = api::response_header_version(api_key, api_version);
    let header = ResponseHeader { correlation_id };
    buf.reserve(
        FRAME_PREFIX_BYTES + header.encoded_len(header_version) + body.encoded_len(api_version),
    );
    let start = begin_frame(buf);
    header.encode(buf, header_version);
    if let Err(e) = body.encode(api_version, buf) {
        buf.truncate(start);
        return Err(e);
    }
    finish_frame(buf, start).map_err(|_| EncodeError::TooLong(buf.len() - start))
}

/// Appends a complete request frame: prefix, header and body.
pub fn encode_request_frame(
    buf: &mut BytesMut,
    header: &RequestHeader,
    body: &RequestBody,
) -> Result<(), EncodeError> {
    buf.reserve(FRAME_PREFIX_BYTES + header.encoded_len() + body.encoded_len(header.api_version));
    let start = begin_frame(buf);
    let result = header
        .encode(buf)
        .and_then(|()| body.encode(header.api_version, buf));
    if let Err(e) = result {
        buf.truncate(start);
        return Err(e);
    }
    finish_frame(buf, start).map_err(|_| EncodeError::TooLong(buf.len() - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_frame_waits_for_whole_frame() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2][..]);
        assert_eq!(split_frame(&mut buf, 100), Ok(None));
        buf.put_u8(3);
        assert_eq!(
            split_frame(&mut buf, 100),
            Ok(Some(Bytes::from_static(&[1, 2, 3])))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn split_frame_rejects_negative_and_oversized_prefixes() {
        let mut neg = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            split_frame(&mut neg, 100),
            Err(FrameError::NegativeLength(-1))
        );
        let mut big = BytesMut::from(&[0u8, 0, 1, 0][..]);
        assert_eq!(
            split_frame(&mut big, 100),
            Err(FrameError::TooLarge {
                length: 256,
                frame_bytes_max: 100
            })
        );
    }

    #[test]
    fn flexible_header_keeps_classic_client_id() {
        // ApiVersions v3 uses header v2: classic client id, then tagged fields.
        let h = RequestHeader {
            api_key: 18,
            api_version: 3,
            correlation_id: 7,
            client_id: Some("kcat".into()),
        };
        let mut buf = BytesMut::new();
        h.encode(&mut buf).unwrap();
        assert_eq!(
            &buf[..],
            &[0, 18, 0, 3, 0, 0, 0, 7, 0, 4, b'k', b'c', b'a', b't', 0]
        );
        assert_eq!(buf.len(), h.encoded_len());
        let mut bytes = buf.freeze();
        assert_eq!(RequestHeader::decode(&mut bytes).unwrap(), h);
        assert!(bytes.is_empty());
    }

    #[test]
    fn unknown_api_key_header_still_decodes() {
        let mut bytes = Bytes::from_static(&[0x7f, 0x00, 0, 1, 0, 0, 0, 9, 0xff, 0xff]);
        let h = RequestHeader::decode(&mut bytes).unwrap();
        assert_eq!(h.correlation_id, 9);
        assert!(!h.is_supported());
    }

    #[test]
    fn begin_finish_frame_writes_body_length() {
        let mut buf = BytesMut::new();
        let start = begin_frame(&mut buf);
        buf.put_slice(b"hello");
        finish_frame(&mut buf, start).unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 5]);
        let mut copy = buf.clone();
        assert_eq!(
            split_frame(&mut copy, 10).unwrap().unwrap(),
            Bytes::from_static(b"hello")
        );
    }
}

//! Record batch v2: header view, CRC, in-place rewrites, splitting, and the
//! record codec, including hostile batches.

use bytes::Bytes;
use proptest::prelude::*;
use weir_protocol::record::{
    BATCH_HEADER_BYTES, BatchHeader, Compression, Record, RecordBatchBuilder, RecordError,
    RecordHeader, TimestampType, compute_crc, decode_records, set_base_offset, set_base_sequence,
    set_log_append_time, set_max_timestamp, set_partition_leader_epoch, split_batches,
    summarize_records, verify_crc,
};

const DECOMPRESSED_BYTES_MAX: usize = 16 * 1024 * 1024;

fn record(offset_delta: i32, key: Option<&str>, value: Option<&str>) -> Record {
    Record {
        offset_delta,
        timestamp_delta: i64::from(offset_delta) * 10,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Vec::new(),
    }
}

fn sample_batch(codec: Compression) -> Bytes {
    RecordBatchBuilder::new(codec)
        .base_offset(100)
        .base_timestamp(1_700_000_000_000)
        .producer(42, 3, 7)
        .record(record(0, Some("k0"), Some("v0")))
        .record(record(1, None, Some("v1")))
        .record(record(2, Some("k2"), None))
        .build()
        .expect("build")
}

/// Recomputes the CRC after a test has corrupted a field it covers, so that the
/// decoder's own checks (not the CRC) are what the test exercises.
fn reseal(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn builder_writes_fields_at_kafka_offsets() {
    let batch = sample_batch(Compression::None);
    // Offsets from KIP-98 / DefaultRecordBatch, checked byte by byte rather
    // than through BatchHeader::parse so a shared offset bug cannot hide.
    assert_eq!(&batch[0..8], &100i64.to_be_bytes());
    assert_eq!(
        i32::from_be_bytes(batch[8..12].try_into().unwrap()) as usize,
        batch.len() - 12
    );
    assert_eq!(
        &batch[12..16],
        &(-1i32).to_be_bytes(),
        "producers send leader epoch -1"
    );
    assert_eq!(batch[16], 2, "magic");
    assert_eq!(&batch[17..21], &crc32c::crc32c(&batch[21..]).to_be_bytes());
    assert_eq!(&batch[21..23], &0i16.to_be_bytes(), "attributes");
    assert_eq!(&batch[23..27], &2i32.to_be_bytes(), "last offset delta");
    assert_eq!(&batch[27..35], &1_700_000_000_000i64.to_be_bytes());
    assert_eq!(
        &batch[35..43],
        &1_700_000_000_020i64.to_be_bytes(),
        "max timestamp"
    );
    assert_eq!(&batch[43..51], &42i64.to_be_bytes());
    assert_eq!(&batch[51..53], &3i16.to_be_bytes());
    assert_eq!(&batch[53..57], &7i32.to_be_bytes());
    assert_eq!(&batch[57..61], &3i32.to_be_bytes());

    let header = BatchHeader::parse(&batch).unwrap();
    assert_eq!(header.total_bytes(), batch.len());
    assert_eq!(header.last_offset(), 102);
    assert_eq!(header.compression(), Compression::None);
    assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
    assert!(!header.is_transactional() && !header.is_control());
}

#[test]
fn record_encoding_matches_hand_computed_varints() {
    let batch = RecordBatchBuilder::new(Compression::None)
        .record(Record {
            offset_delta: 1,
            timestamp_delta: -1,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
        })
        .build()
        .unwrap();
    // length 7 -> zigzag 14; attributes 0; ts -1 -> 1; offset 1 -> 2;
    // null key -> 1; value length 1 -> 2, 'v'; zero headers -> 0.
    assert_eq!(
        &batch[BATCH_HEADER_BYTES..],
        &[0x0e, 0x00, 0x01, 0x02, 0x01, 0x02, b'v', 0x00]
    );
}

#[test]
fn attribute_flags_round_trip_through_header() {
    let batch = RecordBatchBuilder::new(Compression::Zstd)
        .transactional(true)
        .control(true)
        .timestamp_type(TimestampType::LogAppendTime)
        .record(record(0, Some("k"), Some("v")))
        .build()
        .unwrap();
    let header = BatchHeader::parse(&batch).unwrap();
    assert_eq!(header.compression(), Compression::Zstd);
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert!(header.is_transactional());
    assert!(header.is_control());
}

#[test]
fn parse_rejects_short_buffer_bad_magic_small_length_and_unknown_codec() {
    let batch = sample_batch(Compression::None);
    assert!(matches!(
        BatchHeader::parse(&batch[..60]),
        Err(RecordError::Truncated { .. })
    ));

    let mut bad_magic = batch.to_vec();
    bad_magic[16] = 1;
    assert!(matches!(
        BatchHeader::parse(&bad_magic),
        Err(RecordError::UnsupportedMagic(1))
    ));

    let mut small = batch.to_vec();
    small[8..12].copy_from_slice(&48i32.to_be_bytes());
    assert!(matches!(
        BatchHeader::parse(&small),
        Err(RecordError::BatchLengthTooSmall(48))
    ));

    let mut codec = batch.to_vec();
    codec[21..23].copy_from_slice(&5i16.to_be_bytes());
    assert!(matches!(
        BatchHeader::parse(&codec),
        Err(RecordError::UnknownCompression(5))
    ));
}

#[test]
fn crc_verification_catches_every_single_bit_flip_in_covered_bytes() {
    let batch = sample_batch(Compression::Gzip);
    verify_crc(&batch).unwrap();
    for byte in 21..batch.len() {
        for bit in 0..8 {
            let mut corrupt = batch.to_vec();
            corrupt[byte] ^= 1 << bit;
            assert!(
                verify_crc(&corrupt).is_err(),
                "flip at byte {byte} bit {bit} went unnoticed"
            );
        }
    }
}

#[test]
fn crc_verification_rejects_truncated_batch() {
    let batch = sample_batch(Compression::None);
    assert!(matches!(
        verify_crc(&batch[..batch.len() - 1]),
        Err(RecordError::BatchLengthExceedsBuffer { .. })
    ));
}

#[test]
fn offset_and_epoch_rewrites_leave_crc_valid() {
    let mut batch = sample_batch(Compression::Lz4).to_vec();
    let crc_before = BatchHeader::parse(&batch).unwrap().crc;
    set_base_offset(&mut batch, 9_000_000_000).unwrap();
    set_partition_leader_epoch(&mut batch, 17).unwrap();
    verify_crc(&batch).unwrap();
    let header = BatchHeader::parse(&batch).unwrap();
    assert_eq!(header.base_offset, 9_000_000_000);
    assert_eq!(header.partition_leader_epoch, 17);
    assert_eq!(header.crc, crc_before, "these fields are outside the CRC");
    assert_eq!(header.last_offset(), 9_000_000_002);
}

#[test]
fn timestamp_rewrites_recompute_crc() {
    let mut batch = sample_batch(Compression::Snappy).to_vec();
    set_max_timestamp(&mut batch, 1_800_000_000_000).unwrap();
    verify_crc(&batch).unwrap();
    assert_eq!(
        BatchHeader::parse(&batch).unwrap().max_timestamp,
        1_800_000_000_000
    );

    set_base_sequence(&mut batch, 1_000_000).unwrap();
    verify_crc(&batch).unwrap();
    assert_eq!(BatchHeader::parse(&batch).unwrap().base_sequence, 1_000_000);

    set_log_append_time(&mut batch, 1_900_000_000_000).unwrap();
    verify_crc(&batch).unwrap();
    let header = BatchHeader::parse(&batch).unwrap();
    assert_eq!(header.max_timestamp, 1_900_000_000_000);
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(
        header.compression(),
        Compression::Snappy,
        "other attribute bits are kept"
    );
    assert_eq!(header.producer_id, 42);
    assert_eq!(
        decode_records(&Bytes::from(batch), DECOMPRESSED_BYTES_MAX)
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn rewrites_on_short_or_truncated_input_fail_without_writing() {
    let batch = sample_batch(Compression::None);
    for len in [0, 1, 20, 60] {
        let mut short = batch[..len].to_vec();
        assert!(set_base_offset(&mut short, 1).is_err());
        assert!(set_partition_leader_epoch(&mut short, 1).is_err());
        assert!(set_max_timestamp(&mut short, 1).is_err());
        assert!(set_log_append_time(&mut short, 1).is_err());
        assert!(set_base_sequence(&mut short, 1).is_err());
        assert_eq!(short, &batch[..len]);
    }
    // A whole header but a truncated body: CRC-covered rewrites must refuse.
    let mut truncated = batch[..batch.len() - 1].to_vec();
    assert!(set_max_timestamp(&mut truncated, 1).is_err());
    assert!(set_log_append_time(&mut truncated, 1).is_err());
    assert!(set_base_sequence(&mut truncated, 1).is_err());
    assert_eq!(truncated, &batch[..batch.len() - 1]);
}

#[test]
fn split_batches_yields_each_batch_zero_copy() {
    let batches = [
        sample_batch(Compression::None),
        sample_batch(Compression::Gzip),
        sample_batch(Compression::Zstd),
    ];
    let records = Bytes::from(batches.concat());
    let split: Vec<Bytes> = split_batches(&records).collect::<Result<_, _>>().unwrap();
    assert_eq!(split.len(), 3);
    for (got, want) in split.iter().zip(&batches) {
        assert_eq!(got, want);
    }
    // Zero-copy: the pieces point into the original buffer.
    assert_eq!(split[0].as_ptr(), records.as_ptr());
    assert_eq!(split_batches(&Bytes::new()).count(), 0);
}

#[test]
fn split_batches_rejects_truncated_tail_and_stops() {
    let one = sample_batch(Compression::None);
    let mut buf = one.to_vec();
    buf.extend_from_slice(&one[..one.len() - 1]);
    let results: Vec<_> = split_batches(&Bytes::from(buf)).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(RecordError::BatchLengthExceedsBuffer { .. })
    ));

    let tail: Vec<_> = split_batches(&Bytes::from(one[..5].to_vec())).collect();
    assert!(matches!(
        tail.as_slice(),
        [Err(RecordError::Truncated { .. })]
    ));
}

#[test]
fn split_batches_rejects_oversized_negative_and_tiny_lengths() {
    for length in [i32::MAX, i32::MIN, -1, 0, 48] {
        let mut buf = sample_batch(Compression::None).to_vec();
        buf[8..12].copy_from_slice(&length.to_be_bytes());
        let results: Vec<_> = split_batches(&Bytes::from(buf)).collect();
        assert_eq!(results.len(), 1, "length {length}");
        assert!(results[0].is_err(), "length {length}");
    }
}

#[test]
fn decode_rejects_record_count_mismatch_both_ways() {
    for count in [2i32, 4] {
        let mut batch = sample_batch(Compression::None).to_vec();
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        reseal(&mut batch);
        let err = decode_records(&Bytes::from(batch), DECOMPRESSED_BYTES_MAX).unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::RecordCountMismatch { .. } | RecordError::MalformedRecord(_)
            ),
            "count {count}: {err}"
        );
    }
}

#[test]
fn decode_rejects_huge_and_negative_record_counts_without_allocating() {
    for count in [i32::MAX, i32::MIN, -1] {
        let mut batch = sample_batch(Compression::Gzip).to_vec();
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        reseal(&mut batch);
        assert!(
            decode_records(&Bytes::from(batch), DECOMPRESSED_BYTES_MAX).is_err(),
            "count {count}"
        );
    }
}

#[test]
fn decode_rejects_bad_crc() {
    let mut batch = sample_batch(Compression::None).to_vec();
    let last = batch.len() - 1;
    batch[last] ^= 0x40;
    assert!(matches!(
        decode_records(&Bytes::from(batch), DECOMPRESSED_BYTES_MAX),
        Err(RecordError::CrcMismatch { .. })
    ));
}

#[test]
fn decode_rejects_hostile_field_lengths() {
    let base = RecordBatchBuilder::new(Compression::None)
        .record(record(0, Some("k"), Some("v")))
        .build()
        .unwrap();
    // Payload: len, attrs, ts, offset, keylen(1)->2, 'k', vallen(1)->2, 'v', headers.
    let hostile: [(usize, &[u8]); 4] = [
        (BATCH_HEADER_BYTES, &[0xfe, 0xff, 0xff, 0xff, 0x07]), // record length i32::MAX
        (BATCH_HEADER_BYTES + 4, &[0x7e]),                     // key length 63 > record
        (BATCH_HEADER_BYTES + 4, &[0x03]),                     // key length -2
        (BATCH_HEADER_BYTES + 8, &[0x7e]),                     // header count 63
    ];
    for (at, bytes) in hostile {
        let mut batch = base.to_vec();
        batch.splice(at..at + 1, bytes.iter().copied());
        let batch_length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
        reseal(&mut batch);
        assert!(
            decode_records(&Bytes::from(batch), DECOMPRESSED_BYTES_MAX).is_err(),
            "patch at {at}: {bytes:?}"
        );
    }
}

#[test]
fn decode_rejects_compressed_payload_beyond_cap() {
    let big = "x".repeat(1 << 20);
    let batch = RecordBatchBuilder::new(Compression::Zstd)
        .record(record(0, None, Some(&big)))
        .build()
        .unwrap();
    assert!(batch.len() < 64 * 1024);
    assert!(matches!(
        decode_records(&batch, 64 * 1024),
        Err(RecordError::Compression(_))
    ));
    assert_eq!(
        decode_records(&batch, 2 << 20).unwrap()[0].value.as_deref(),
        Some(big.as_bytes())
    );
}

fn arb_bytes(len_max: usize) -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..len_max).prop_map(Bytes::from))
}

fn arb_record() -> impl Strategy<Value = Record> {
    let header = ("[a-zA-Z0-9._\u{e9}-]{0,12}", arb_bytes(16))
        .prop_map(|(key, value)| RecordHeader { key, value });
    (
        any::<i64>(),
        arb_bytes(64),
        arb_bytes(512),
        proptest::collection::vec(header, 0..4),
    )
        .prop_map(|(timestamp_delta, key, value, headers)| Record {
            offset_delta: 0,
            timestamp_delta,
            key,
            value,
            headers,
        })
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    proptest::sample::select(Compression::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn records_round_trip_through_builder_and_decoder(
        codec in arb_codec(),
        mut records in proptest::collection::vec(arb_record(), 0..20),
        base_offset in 0i64..i64::MAX / 2,
        base_timestamp in any::<i64>(),
        transactional in any::<bool>(),
    ) {
        for (index, record) in records.iter_mut().enumerate() {
            record.offset_delta = index as i32;
        }
        let mut builder = RecordBatchBuilder::new(codec)
            .base_offset(base_offset)
            .base_timestamp(base_timestamp)
            .producer(1, 0, 0)
            .transactional(transactional);
        for record in &records {
            builder.push(record.clone());
        }
        let batch = builder.build().unwrap();
        verify_crc(&batch).unwrap();
        let header = BatchHeader::parse(&batch).unwrap();
        prop_assert_eq!(header.total_bytes(), batch.len());
        prop_assert_eq!(header.compression(), codec);
        prop_assert_eq!(header.record_count as usize, records.len());
        prop_assert_eq!(header.is_transactional(), transactional);
        prop_assert_eq!(header.last_offset(), base_offset + records.len().saturating_sub(1) as i64);
        let decoded = decode_records(&batch, DECOMPRESSED_BYTES_MAX).unwrap();
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn decoding_arbitrary_payload_behind_valid_header_never_panics(
        codec in arb_codec(),
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        record_count in prop_oneof![0i32..8, any::<i32>()],
    ) {
        let mut batch = RecordBatchBuilder::new(codec).build().unwrap().to_vec();
        batch.truncate(BATCH_HEADER_BYTES);
        batch.extend_from_slice(&payload);
        let batch_length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
        batch[57..61].copy_from_slice(&record_count.to_be_bytes());
        reseal(&mut batch);
        let _ = decode_records(&Bytes::from(batch), 64 * 1024);
    }

    #[test]
    fn split_batches_on_arbitrary_bytes_never_panics_and_covers_input(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let records = Bytes::from(bytes);
        let mut consumed = 0;
        for piece in split_batches(&records) {
            match piece {
                Ok(batch) => consumed += batch.len(),
                Err(_) => break,
            }
        }
        prop_assert!(consumed <= records.len());
    }
}

proptest! {
    /// The light walk produce validation uses agrees with the full decoder on
    /// every record's offset delta, timestamp delta and key presence.
    #[test]
    fn summarize_records_agrees_with_decode_records(
        records in proptest::collection::vec(
            (any::<i64>().prop_map(|t| t % 1_000_000_000), any::<bool>(), 0usize..300),
            1..40,
        ),
        codec in prop_oneof![Just(Compression::None), Just(Compression::Lz4), Just(Compression::Zstd)],
    ) {
        let mut builder = RecordBatchBuilder::new(codec).base_timestamp(1_700_000_000_000);
        for (i, (ts, keyed, len)) in records.iter().enumerate() {
            builder = builder.record(Record {
                offset_delta: i as i32,
                timestamp_delta: *ts,
                key: keyed.then(|| Bytes::from_static(b"key")),
                value: Some(Bytes::from(vec![7u8; *len])),
                headers: vec![RecordHeader { key: "h".into(), value: None }],
            });
        }
        let batch = builder.build().unwrap();
        let decoded = decode_records(&batch, DECOMPRESSED_BYTES_MAX).unwrap();
        let mut walked = Vec::new();
        summarize_records(&batch, DECOMPRESSED_BYTES_MAX, |r| walked.push(r)).unwrap();
        prop_assert_eq!(walked.len(), decoded.len());
        for (w, d) in walked.iter().zip(&decoded) {
            prop_assert_eq!(w.offset_delta, d.offset_delta);
            prop_assert_eq!(w.timestamp_delta, d.timestamp_delta);
            prop_assert_eq!(w.has_key, d.key.is_some());
        }
    }

    /// Garbage after a valid header never panics the walk.
    #[test]
    fn summarize_records_never_panics_on_garbage(garbage in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut batch = sample_batch(Compression::None).to_vec();
        batch.truncate(BATCH_HEADER_BYTES);
        batch.extend_from_slice(&garbage);
        let length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        let _ = summarize_records(&Bytes::from(batch), DECOMPRESSED_BYTES_MAX, |_| {});
    }
}

#[test]
fn summarize_records_refuses_a_record_count_the_payload_does_not_hold() {
    let mut batch = sample_batch(Compression::None).to_vec();
    // Header says 4 records; the payload holds 3.
    batch[57..61].copy_from_slice(&4i32.to_be_bytes());
    let err = summarize_records(&Bytes::from(batch), DECOMPRESSED_BYTES_MAX, |_| {}).unwrap_err();
    assert!(
        matches!(err, RecordError::RecordCountMismatch { .. }),
        "{err}"
    );
}

//! Compression codecs: round trips, snappy framings, and zip bombs. A counting
//! allocator measures the peak heap each decompression needs, so "rejected at
//! the cap" means "never allocated much beyond the cap", not just "errored".

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use weir_protocol::compression::{Compression, CompressionError, compress, decompress};

/// Tracks live and peak heap bytes per thread (tests run on many threads).
struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: Cell<usize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get().saturating_add(size);
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn on_dealloc(size: usize) {
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get().saturating_sub(size)));
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the peak heap growth it caused.
fn peak_heap_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|peak| peak.set(start));
    let result = f();
    let peak = PEAK_BYTES.with(Cell::get);
    (result, peak.saturating_sub(start))
}

const CAP_BYTES: usize = 1024 * 1024;
/// Fixed working memory a codec may use on top of its output: zstd's window
/// for a level-3 frame (2 MiB) plus stream buffers, lz4's block buffers.
const CODEC_SLACK_BYTES: usize = 3 * 1024 * 1024;

fn compressed(codec: Compression, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    compress(codec, input, &mut out).unwrap();
    out
}

#[test]
fn zip_bombs_are_rejected_at_the_cap_for_every_codec() {
    let zeros = vec![0u8; 64 * 1024 * 1024];
    for codec in Compression::ALL {
        let bomb = compressed(codec, &zeros);
        if codec != Compression::None {
            assert!(
                bomb.len() < 4 * 1024 * 1024,
                "{codec:?} bomb is {} bytes",
                bomb.len()
            );
        }
        let (result, peak) = peak_heap_bytes(|| decompress(codec, &bomb, CAP_BYTES));
        assert!(
            matches!(
                result,
                Err(CompressionError::OutputTooLarge {
                    output_bytes_max: CAP_BYTES
                })
            ),
            "{codec:?}: {result:?}"
        );
        eprintln!(
            "{codec:?}: bomb {} bytes, peak heap {peak} bytes",
            bomb.len()
        );
        assert!(
            peak <= CAP_BYTES + CODEC_SLACK_BYTES,
            "{codec:?} allocated {peak} bytes for a {CAP_BYTES}-byte cap"
        );
    }
}

#[test]
fn output_exactly_at_the_cap_is_accepted() {
    let input: Vec<u8> = (0..CAP_BYTES).map(|i| (i % 251) as u8).collect();
    for codec in Compression::ALL {
        let packed = compressed(codec, &input);
        assert_eq!(
            decompress(codec, &packed, CAP_BYTES).unwrap(),
            input,
            "{codec:?}"
        );
        assert!(
            matches!(
                decompress(codec, &packed, CAP_BYTES - 1),
                Err(CompressionError::OutputTooLarge { .. })
            ),
            "{codec:?} one byte over the cap"
        );
    }
}

#[test]
fn zstd_frame_demanding_a_huge_window_is_refused() {
    use std::io::Write;
    // A streaming encoder without a pledged size advertises its full window
    // (128 MiB here) in the frame header; decoding it would allocate that much
    // zstd-internal memory, which the counting allocator cannot see.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.window_log(27).unwrap();
    encoder.long_distance_matching(true).unwrap();
    encoder.write_all(&vec![1u8; 4 * 1024 * 1024]).unwrap();
    let frame = encoder.finish().unwrap();
    let result = decompress(Compression::Zstd, &frame, CAP_BYTES);
    assert!(
        matches!(result, Err(CompressionError::Malformed { .. })),
        "{result:?}"
    );
    // The same frame is fine when the caller's cap justifies the window.
    assert_eq!(
        decompress(Compression::Zstd, &frame, 128 * 1024 * 1024)
            .unwrap()
            .len(),
        4 * 1024 * 1024
    );
}

/// snappy-java framing built by hand from the format, not by our encoder:
/// magic, version 1, compatible version 1, then two length-prefixed raw blocks.
fn xerial_hello_world() -> Vec<u8> {
    let mut frame = vec![
        0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
    ];
    // Raw snappy "hello": varint length 5, literal tag (5-1)<<2, bytes.
    frame.extend_from_slice(&[0, 0, 0, 7, 0x05, 0x10]);
    frame.extend_from_slice(b"hello");
    // Raw snappy " world": length 6, literal tag (6-1)<<2.
    frame.extend_from_slice(&[0, 0, 0, 8, 0x06, 0x14]);
    frame.extend_from_slice(b" world");
    frame
}

#[test]
fn xerial_snappy_known_good_frame_decodes() {
    let out = decompress(Compression::Snappy, &xerial_hello_world(), 1024).unwrap();
    assert_eq!(out, b"hello world");
}

#[test]
fn raw_snappy_block_decodes() {
    let raw = [0x05, 0x10, b'h', b'e', b'l', b'l', b'o'];
    assert_eq!(
        decompress(Compression::Snappy, &raw, 1024).unwrap(),
        b"hello"
    );
}

#[test]
fn snappy_encoder_writes_xerial_framing_with_32k_blocks() {
    let input = vec![7u8; 100 * 1024];
    let out = compressed(Compression::Snappy, &input);
    assert_eq!(&out[..8], &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0]);
    assert_eq!(&out[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
    // Walk the blocks: 100 KiB in 32 KiB blocks is 4 blocks.
    let mut rest = &out[16..];
    let mut blocks = 0;
    while !rest.is_empty() {
        let len = i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        rest = &rest[4 + len..];
        blocks += 1;
    }
    assert_eq!(blocks, 4);
}

#[test]
fn snappy_declared_length_beyond_cap_is_rejected_before_allocating() {
    // A raw block whose varint header claims 4 GiB - 1 of output.
    let lying = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    let (result, peak) = peak_heap_bytes(|| decompress(Compression::Snappy, &lying, CAP_BYTES));
    assert!(
        matches!(result, Err(CompressionError::OutputTooLarge { .. })),
        "{result:?}"
    );
    assert!(peak < 64 * 1024, "allocated {peak} bytes");

    let mut framed = xerial_hello_world()[..16].to_vec();
    framed.extend_from_slice(&(lying.len() as i32).to_be_bytes());
    framed.extend_from_slice(&lying);
    assert!(matches!(
        decompress(Compression::Snappy, &framed, CAP_BYTES),
        Err(CompressionError::OutputTooLarge { .. })
    ));
}

#[test]
fn xerial_frames_with_bad_block_lengths_are_malformed() {
    let header = &xerial_hello_world()[..16];
    for tail in [
        &[0u8, 0, 0][..],
        &[0xff, 0xff, 0xff, 0xff],
        &[0x7f, 0xff, 0xff, 0xff, 0x05],
    ] {
        let mut frame = header.to_vec();
        frame.extend_from_slice(tail);
        assert!(
            matches!(
                decompress(Compression::Snappy, &frame, CAP_BYTES),
                Err(CompressionError::Malformed { .. })
            ),
            "tail {tail:?}"
        );
    }
    assert!(decompress(Compression::Snappy, &header[..12], CAP_BYTES).is_err());
}

#[test]
fn garbage_input_is_malformed_not_a_panic() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
        assert!(decompress(codec, &garbage, CAP_BYTES).is_err(), "{codec:?}");
        // Empty input may be an error or an empty output, but never more.
        assert!(
            decompress(codec, &[], CAP_BYTES).map_or(true, |out| out.is_empty()),
            "{codec:?} empty"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_codec_round_trips(
        codec in proptest::sample::select(Compression::ALL.to_vec()),
        input in proptest::collection::vec(any::<u8>(), 0..100_000),
    ) {
        let packed = compressed(codec, &input);
        prop_assert_eq!(decompress(codec, &packed, input.len()).unwrap(), input);
    }

    #[test]
    fn decompressing_arbitrary_bytes_never_panics(
        codec in proptest::sample::select(Compression::ALL.to_vec()),
        input in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let _ = decompress(codec, &input, 64 * 1024);
    }
}

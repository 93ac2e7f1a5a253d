//! Hostile input: random, mutated and lying bodies for every api and version
//! must decode to a value or an error, never panic, and never make a single
//! allocation out of proportion to the input. A counting global allocator in
//! this test binary records the largest allocation made while decoding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use weir_protocol::api::{RequestBody, ResponseBody, SUPPORTED_APIS};
use weir_protocol::codec::TestRng;
use weir_protocol::header::RequestHeader;

struct CountingAlloc;

thread_local! {
    // Largest single allocation seen on this thread while tracking is on.
    static ALLOC_BYTES_MAX: Cell<usize> = const { Cell::new(0) };
    static TRACKING: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    // try_with: thread-locals may be gone during thread teardown.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = ALLOC_BYTES_MAX.try_with(|m| m.set(m.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Largest single allocation allowed while decoding `input_bytes`: a fixed
/// preallocation allowance plus a multiple of the input. The multiple covers
/// legitimate growth, e.g. a compact array of empty strings is one wire byte
/// but 24 bytes of `String` per element, doubled by `Vec` growth.
fn alloc_bytes_allowed(input_bytes: usize) -> usize {
    64 * 1024 + 64 * input_bytes
}

/// Decodes `body` as both request and response of `api_key`/`version`,
/// returning the largest single allocation made.
fn decode_both(api_key: i16, version: i16, body: &Bytes) -> usize {
    ALLOC_BYTES_MAX.with(|m| m.set(0));
    TRACKING.with(|t| t.set(true));
    let mut b = body.clone();
    let _ = std::hint::black_box(RequestBody::decode(api_key, version, &mut b));
    let mut b = body.clone();
    let _ = std::hint::black_box(ResponseBody::decode(api_key, version, &mut b));
    let mut b = body.clone();
    let _ = std::hint::black_box(RequestHeader::decode(&mut b));
    TRACKING.with(|t| t.set(false));
    ALLOC_BYTES_MAX.with(Cell::get)
}

fn assert_bounded(api_key: i16, version: i16, body: &Bytes) {
    let max = decode_both(api_key, version, body);
    assert!(
        max <= alloc_bytes_allowed(body.len()),
        "api {api_key} v{version}: allocation of {max} bytes for a {}-byte body",
        body.len()
    );
}

fn valid_bodies(api_key: i16, version: i16, seed: u64) -> Vec<Bytes> {
    let mut rng = TestRng::new(seed);
    let mut out = Vec::new();
    if let Some(req) = RequestBody::random_for_version(api_key, version, &mut rng) {
        let mut buf = BytesMut::new();
        if req.encode(version, &mut buf).is_ok() {
            out.push(buf.freeze());
        }
    }
    if let Some(resp) = ResponseBody::random_for_version(api_key, version, &mut rng) {
        let mut buf = BytesMut::new();
        if resp.encode(version, &mut buf).is_ok() {
            out.push(buf.freeze());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_bodies_never_panic_or_over_allocate(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let body = Bytes::from(body);
        for &(api_key, min, max) in SUPPORTED_APIS {
            for version in min..=max {
                assert_bounded(api_key, version, &body);
            }
        }
    }

    #[test]
    fn mutated_valid_bodies_never_panic_or_over_allocate(seed in any::<u64>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        for &(api_key, min, max) in SUPPORTED_APIS {
            for version in min..=max {
                for body in valid_bodies(api_key, version, seed) {
                    let mut bytes = body.to_vec();
                    if bytes.is_empty() {
                        continue;
                    }
                    for &(at, value) in &flips {
                        let i = at % bytes.len();
                        bytes[i] = value;
                    }
                    assert_bounded(api_key, version, &Bytes::from(bytes.clone()));
                    // Truncations at every mutated point too.
                    let cut = flips[0].0 % bytes.len();
                    bytes.truncate(cut);
                    assert_bounded(api_key, version, &Bytes::from(bytes));
                }
            }
        }
    }
}

#[test]
fn huge_counts_in_tiny_bodies_are_rejected_cheaply() {
    let lies: [&[u8]; 6] = [
        &[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        &[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0],
        &[0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff],
        &[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0],
        &[0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0],
        &[0, 0, 0, 0, 0, 0, 0xff, 0x7f],
    ];
    for lie in lies {
        let body = Bytes::from_static(lie);
        for &(api_key, min, max) in SUPPORTED_APIS {
            for version in min..=max {
                let allocated = decode_both(api_key, version, &body);
                assert!(
                    allocated <= 64 * 1024,
                    "api {api_key} v{version}: {allocated}-byte allocation for 8-byte lie {lie:?}"
                );
            }
        }
    }
}

#[test]
fn every_truncation_of_a_valid_body_is_an_error_not_a_panic() {
    for &(api_key, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            for body in valid_bodies(api_key, version, 7) {
                for cut in 0..body.len() {
                    assert_bounded(api_key, version, &body.slice(..cut));
                }
            }
        }
    }
}

#[test]
fn allocation_tracking_sees_decoder_allocations() {
    // Guards the guard: if tracking silently recorded nothing, every bound
    // above would pass vacuously.
    let (api_key, version) = (3, 12);
    let bodies = valid_bodies(api_key, version, 11);
    let largest = bodies
        .iter()
        .map(|b| decode_both(api_key, version, b))
        .max()
        .unwrap_or(0);
    assert!(
        largest > 0,
        "no allocation observed while decoding metadata"
    );
}

//! Host-side cost of a call, without any exit: what `pvabi-host` adds to a call once it has
//! crossed the gate, measured on the mock (in-process, one thread, no scheduling noise).
//!
//! `cargo bench -p pvabi-mock --bench gate`
//!
//! * `plain_fn_call`: an `extern "C"` call through a function pointer (the scale).
//! * `null_call_dispatch`: BASE.GET_ABI_VERSION decoded and dispatched by the host
//!   (`Mock::call_as`, which is what every gate ends in).
//! * `multicall_64_per_call`: one MULTICALL.EXECUTE of 64 BASE.GET_ABI_VERSION, per batch
//!   (divide by 64 for the per-call figure `pvabi bench` reports).
//! * `ring_serve_1` / `ring_serve_16`: the host serving the shared ring
//!   (`Vm::process_ring`) for 1 and 16 posted requests, including the guest-side posting and
//!   consuming done here with plain stores into guest RAM.
//!
//! `pvabi bench` reports the end-to-end figures as ratios to a bare exit; these absolute
//! numbers say how much of a ring call is host work.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::Ordering;

use criterion::{criterion_group, criterion_main, Criterion};
use pvabi::multicall::MulticallEntry;
use pvabi::ring::{RingHeader, RingRequest};
use pvabi::{call, Regs};
use pvabi_mock::{Mock, MockConfig};

/// Guest-physical address of the ring (page aligned, in RAM, away from the scratch area's
/// start where the multicall array goes).
const RING_GPA: u64 = 0x20_0000;
/// Where the multicall array goes.
const MC_GPA: u64 = 0x30_0000;
const ORDER: u32 = 4;

extern "C" fn plain(ctx: usize, regs: *mut u64) {
    black_box((ctx, regs));
}

fn bench(c: &mut Criterion) {
    let mock = Mock::new(MockConfig::default()).expect("mock");
    let ram = mock.ram();

    c.bench_function("plain_fn_call", |b| {
        let f: extern "C" fn(usize, *mut u64) = black_box(plain);
        let mut w = 0u64;
        b.iter(|| f(black_box(0), &mut w));
    });

    let null = Regs::new(call::BASE_GET_ABI_VERSION, [0; 6]);
    c.bench_function("null_call_dispatch", |b| {
        b.iter(|| black_box(mock.call_as(0, black_box(null))));
    });

    let entry = MulticallEntry {
        call_id: call::BASE_GET_ABI_VERSION.0,
        flags: 0,
        args: [0; 6],
        status: 0,
        value: 0,
    };
    for i in 0..64u64 {
        ram.write_obj(MC_GPA + i * MulticallEntry::SIZE as u64, &entry)
            .expect("multicall array in RAM");
    }
    let mc = Regs::new(call::MULTICALL_EXECUTE, [MC_GPA, 64, 0, 0, 0, 0]);
    assert_eq!(mock.call_as(0, mc).into_result(), Ok(64));
    c.bench_function("multicall_64_per_call", |b| {
        b.iter(|| black_box(mock.call_as(0, mc)));
    });

    // A ring of 16 slots, registered by vCPU 0.
    let hdr = RingHeader {
        magic: RingHeader::MAGIC,
        order: ORDER,
        ..RingHeader::default()
    };
    ram.write_obj(RING_GPA, &hdr).expect("ring header in RAM");
    let reg = Regs::new(
        call::BASE_RING_REGISTER,
        [RING_GPA, u64::from(ORDER), 0, 0, 0, 0],
    );
    assert!(mock.call_as(0, reg).into_result().is_ok(), "ring registers");
    let mut prod = 0u32;
    let mut post_and_serve = |k: u32| {
        for i in 0..k {
            let slot = u64::from(prod.wrapping_add(i) % (1 << ORDER));
            let req = RingRequest {
                cookie: prod.wrapping_add(i),
                call_id: call::BASE_GET_ABI_VERSION.0,
                args: [0; 6],
                _reserved: 0,
            };
            let at = RING_GPA + RingHeader::SIZE as u64 + slot * RingRequest::SIZE as u64;
            ram.write_obj(at, &req).expect("request slot");
        }
        prod = prod.wrapping_add(k);
        ram.store_u32(
            RING_GPA + RingHeader::REQ_PROD as u64,
            prod,
            Ordering::Release,
        )
        .expect("req_prod");
        let served = mock.vm().process_ring();
        ram.store_u32(
            RING_GPA + RingHeader::CMP_CONS as u64,
            prod,
            Ordering::Release,
        )
        .expect("cmp_cons");
        served
    };
    assert_eq!(post_and_serve(1), 1);
    c.bench_function("ring_serve_1", |b| {
        b.iter(|| black_box(post_and_serve(1)));
    });
    c.bench_function("ring_serve_16", |b| {
        b.iter(|| black_box(post_and_serve(16)));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

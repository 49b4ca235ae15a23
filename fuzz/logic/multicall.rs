//! Target `multicall`: MULTICALL.EXECUTE against a twin guest that runs the same entries one
//! by one through the register gate.
//!
//! Two [`Vm`]s start identical (same configuration, same guest RAM contents, same prelude of
//! calls). One executes a multicall array; the other reads the same array and runs each entry
//! as a separate call, with the rules of spec `MC-1`..`MC-5` applied by the test (count above
//! `MAX_ENTRIES`: INVALID_PARAM; misaligned array or one outside RAM: INVALID_ADDRESS;
//! reserved flag bits or a call not allowed in a batch: INVALID_PARAM for that entry; stop
//! after a failing entry with STOP_ON_ERROR; each result written to its entry). Afterwards
//! the two must agree exactly: the return pair, every byte of guest RAM, the store tree,
//! port bindings, vCPU states, console output and reports. Every status is an ABI v1 status.

use std::sync::Arc;

use pvabi::call;
use pvabi::event::NUM_PORTS;
use pvabi::multicall::{MulticallEntry, MAX_ENTRIES};
use pvabi::vcpu::VcpuState;
use pvabi::{Regs, Ret, Status};
use pvabi_host::{Call, GuestRam, Outcome, Vm, VmConfig};

use super::dispatch::store_tree;
use super::env::{check_ret, clear_ram, pick_arg, pick_call, snapshot, FuzzPlatform, RAM_A, RAM_B};
use super::input::Input;

fn make(ram: &GuestRam, vcpus: u32, harness: bool) -> Vm {
    let mut cfg = VmConfig::new(vcpus);
    cfg.harness = harness;
    Vm::new(cfg, ram.clone(), FuzzPlatform::new(false)).expect("valid config")
}

fn compare(a: &Vm, b: &Vm, ra: &GuestRam, rb: &GuestRam, what: &str) {
    assert!(snapshot(ra) == snapshot(rb), "{what}: guest RAM differs");
    assert_eq!(store_tree(a), store_tree(b), "{what}: store differs");
    for p in 0..NUM_PORTS {
        assert_eq!(a.port_binding(p), b.port_binding(p), "{what}: port {p}");
    }
    for v in 0..a.config().vcpu_count {
        assert_eq!(a.vcpu_state(v), b.vcpu_state(v), "{what}: vCPU {v} state");
    }
    assert_eq!(
        a.take_console_output(),
        b.take_console_output(),
        "{what}: console"
    );
    assert_eq!(a.take_reports(), b.take_reports(), "{what}: reports");
    assert_eq!(a.shutdown_state(), b.shutdown_state(), "{what}: shutdown");
}

/// The twin: runs a multicall array entry by entry.
fn sequential(vm: &Vm, ram: &GuestRam, v: u32, gpa: u64, count: u64) -> Ret {
    if count > MAX_ENTRIES {
        return Ret::err(Status::INVALID_PARAM);
    }
    if count == 0 {
        return Ret::ok(0);
    }
    let size = MulticallEntry::SIZE as u64;
    if gpa & (MulticallEntry::ALIGN - 1) != 0 || ram.check_range(gpa, count * size).is_err() {
        return Ret::err(Status::INVALID_ADDRESS);
    }
    let entries: Vec<MulticallEntry> = (0..count)
        .map(|i| ram.read_obj(gpa + i * size).expect("checked range"))
        .collect();
    let mut done = 0;
    for (i, e) in entries.iter().enumerate() {
        let regs = Regs {
            rax: e.call_id as u64,
            args: e.args,
        };
        let batch_ok = Call::decode(&regs).map_or(true, |c| c.allowed_in_batch());
        let r = if e.flags & !MulticallEntry::FLAG_STOP_ON_ERROR != 0 || !batch_ok {
            Ret::err(Status::INVALID_PARAM)
        } else {
            match vm.handle_call(v, &regs) {
                Outcome::Return(r) => r,
                o => panic!("entry {i} ({:#x}) did not return: {o:?}", e.call_id),
            }
        };
        check_ret("sequential entry", r);
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&r.status.to_reg().to_le_bytes());
        out[8..].copy_from_slice(&r.value.to_le_bytes());
        ram.write_bytes(gpa + i as u64 * size + 56, &out)
            .expect("checked range");
        done += 1;
        if !r.status.is_success() && e.flags & MulticallEntry::FLAG_STOP_ON_ERROR != 0 {
            break;
        }
    }
    Ret::ok(done)
}

/// Runs one input of the `multicall` target on two guest RAMs of the fuzzing layout.
///
/// # Panics
///
/// When the multicall and the sequential twin disagree, or a status is not an ABI v1 status.
pub fn run(data: &[u8], ra: &GuestRam, rb: &GuestRam) {
    clear_ram(ra);
    clear_ram(rb);
    let mut input = Input::new(data);
    let c0 = input.u8();
    let vcpus = 1 + (c0 % 3) as u32;
    let harness = c0 & 0x80 == 0;
    let a = Arc::new(make(ra, vcpus, harness));
    let b = Arc::new(make(rb, vcpus, harness));
    let mut recent: Vec<u64> = Vec::new();
    let mut steps = 0;
    while !input.is_empty() && steps < 24 {
        steps += 1;
        match input.u8() % 5 {
            0 => {
                // Guest writes the same bytes to both.
                let region = if input.u8() & 3 == 0 { RAM_B } else { RAM_A };
                let gpa = region.0 + input.u16() as u64 % region.1;
                let n = (input.u8() as u64).min(region.0 + region.1 - gpa) as usize;
                let bytes = input.bytes(n).to_vec();
                ra.write_bytes(gpa, &bytes).expect("inside RAM");
                rb.write_bytes(gpa, &bytes).expect("inside RAM");
            }
            1 => {
                // A plain call on both (state set-up: event page, ports, store, grants).
                let sel = input.u8();
                let raw = if sel >= 240 { input.u64() } else { 0 };
                let rax = pick_call(sel, raw);
                if rax == call::MULTICALL_EXECUTE.0 as u64 {
                    continue;
                }
                let mut args = [0u64; 6];
                for x in &mut args {
                    *x = pick_arg(&mut input, &recent);
                }
                if a.vcpu_state(0) != Some(VcpuState::RUNNING) {
                    break;
                }
                let regs = Regs { rax, args };
                let oa = a.handle_call(0, &regs);
                let ob = b.handle_call(0, &regs);
                assert_eq!(oa, ob, "twin calls {rax:#x} differ");
                if let Outcome::Return(r) = oa {
                    check_ret("prelude", r);
                    if r.status.is_success() {
                        recent.push(r.value);
                    }
                } else {
                    break;
                }
            }
            _ => {
                if a.vcpu_state(0) != Some(VcpuState::RUNNING) {
                    break;
                }
                // Write an array to both, then execute it in one and entry by entry in the other.
                let gpa = match input.u8() {
                    0..=239 => (input.u16() as u64 & !7) % RAM_A.1,
                    240..=247 => RAM_B.0 + (input.u16() as u64 & !7) % RAM_B.1,
                    _ => pick_arg(&mut input, &recent),
                };
                let n = input.u8() as u64 % 12;
                for i in 0..n {
                    let sel = input.u8();
                    let raw = if sel >= 240 { input.u64() } else { 0 };
                    let f = input.u8();
                    let mut e = MulticallEntry {
                        call_id: pick_call(sel, raw) as u32,
                        flags: if f < 230 { (f & 1) as u32 } else { f as u32 },
                        ..MulticallEntry::default()
                    };
                    for x in &mut e.args {
                        *x = pick_arg(&mut input, &recent);
                    }
                    let _ = ra.write_obj(gpa.wrapping_add(i * MulticallEntry::SIZE as u64), &e);
                    let _ = rb.write_obj(gpa.wrapping_add(i * MulticallEntry::SIZE as u64), &e);
                }
                let count = match input.u8() {
                    0..=229 => n,
                    230..=239 => n + 1,
                    240..=247 => MAX_ENTRIES + 1,
                    _ => pick_arg(&mut input, &recent),
                };
                let oa = a.handle_call(
                    0,
                    &Regs::new(call::MULTICALL_EXECUTE, [gpa, count, 0, 0, 0, 0]),
                );
                let rb_ret = sequential(&b, rb, 0, gpa, count);
                assert_eq!(
                    oa,
                    Outcome::Return(rb_ret),
                    "multicall at {gpa:#x} x{count} vs sequential"
                );
                check_ret("multicall", rb_ret);
                compare(&a, &b, ra, rb, "after multicall");
            }
        }
    }
    compare(&a, &b, ra, rb, "at the end");
}

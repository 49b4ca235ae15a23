//! SSE2 integer and move instructions that KVM's instruction emulator does not implement.
//!
//! Where guest ring-0 code is executed by KVM's emulator (nested hosts whose KVM runs ring 0
//! in software), an SSE instruction the emulator lacks ends `KVM_RUN` with an emulation
//! failure and the instruction bytes. Compiled Rust (and the precompiled `core`, e.g. its
//! integer formatting) uses a small set of them. This module decodes those instructions
//! (register and memory operands, ModRM/SIB/RIP-relative addressing) and performs them on the
//! vCPU's registers and guest memory; anything else is left to the caller, which reports the
//! failure with the registers.

use kvm_bindings::{kvm_fpu, kvm_regs};

/// An operand in the r/m position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rm {
    /// A register (XMM or general, as the opcode says).
    Reg(usize),
    /// A memory operand: `base + index * scale + disp` (RIP-relative: `next RIP + disp`).
    Mem {
        /// Base register, if any.
        base: Option<usize>,
        /// Index register and scale, if any.
        index: Option<(usize, u8)>,
        /// Displacement.
        disp: i64,
        /// RIP-relative.
        rip: bool,
    },
}

/// The operations implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opc {
    Xor,
    And,
    AndNot,
    Or,
    /// 128-bit move into the XMM register.
    Load128,
    /// 128-bit move from the XMM register into r/m.
    Store128,
    /// movd/movq xmm, r/m (32 or 64 bits, zero-extended).
    MovdLoad,
    /// movd/movq r/m, xmm.
    MovdStore,
    /// movq xmm, xmm/m64 (upper half zeroed).
    MovqLoad,
    /// movq xmm/m64, xmm.
    MovqStore,
    PaddB,
    PaddW,
    PaddD,
    PaddQ,
    PsubB,
    PsubW,
    PsubD,
    PsubQ,
    PcmpeqB,
    PcmpeqW,
    PcmpeqD,
    PcmpgtB,
    PcmpgtW,
    PcmpgtD,
    PunpckLBW,
    PunpckLWD,
    PunpckLDQ,
    PunpckLQDQ,
    PunpckHBW,
    PunpckHWD,
    PunpckHDQ,
    PunpckHQDQ,
    Pshufd,
    Pshuflw,
    Pshufhw,
    /// Shift by an immediate: (lane bits, left?).
    ShiftImm(u32, bool),
    /// Whole-register byte shift by an immediate (left?).
    ByteShift(bool),
    /// Shift by the low 64 bits of an XMM operand: (lane bits, left?).
    ShiftXmm(u32, bool),
    Pinsrw,
    Pextrw,
    Pmovmskb,
    Pmuludq,
    Pmullw,
    Packsswb,
    Packssdw,
    Shufps,
    /// movss/movsd into the XMM register (bits 32 or 64): register sources merge into the
    /// low lane, memory sources zero the rest.
    MovsLoad(u32),
    /// movss/movsd from the XMM register into r/m (bits 32 or 64).
    MovsStore(u32),
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    /// The operation.
    pub(crate) op: Opc,
    /// The ModRM reg field (with REX.R).
    pub(crate) reg: usize,
    /// The r/m operand.
    pub(crate) rm: Rm,
    /// The immediate byte, if the instruction has one.
    pub(crate) imm: u8,
    /// REX.W.
    pub(crate) wide: bool,
    /// Length in bytes.
    pub(crate) len: usize,
}

/// Decodes `bytes` (the instruction at RIP).
pub(crate) fn decode(bytes: &[u8]) -> Option<Insn> {
    let mut i = 0;
    let (mut p66, mut pf2, mut pf3) = (false, false, false);
    loop {
        match bytes.get(i)? {
            0x66 => p66 = true,
            0xF2 => pf2 = true,
            0xF3 => pf3 = true,
            _ => break,
        }
        i += 1;
    }
    let mut rex = 0u8;
    if let Some(&b) = bytes.get(i) {
        if (0x40..=0x4F).contains(&b) {
            rex = b;
            i += 1;
        }
    }
    if *bytes.get(i)? != 0x0F {
        return None;
    }
    let opc = *bytes.get(i + 1)?;
    i += 2;
    let modrm = *bytes.get(i)?;
    i += 1;
    let md = modrm >> 6;
    let reg_field = (modrm >> 3) & 7;
    let reg = usize::from(reg_field) | if rex & 4 != 0 { 8 } else { 0 };
    let rm = if md == 3 {
        Rm::Reg(usize::from(modrm & 7) | if rex & 1 != 0 { 8 } else { 0 })
    } else {
        let mut base = Some(usize::from(modrm & 7) | if rex & 1 != 0 { 8 } else { 0 });
        let mut index = None;
        let mut rip = false;
        if modrm & 7 == 4 {
            let sib = *bytes.get(i)?;
            i += 1;
            let idx = usize::from((sib >> 3) & 7) | if rex & 2 != 0 { 8 } else { 0 };
            if idx != 4 {
                index = Some((idx, 1u8 << (sib >> 6)));
            }
            let b = usize::from(sib & 7) | if rex & 1 != 0 { 8 } else { 0 };
            base = if sib & 7 == 5 && md == 0 {
                None
            } else {
                Some(b)
            };
        } else if modrm & 7 == 5 && md == 0 {
            base = None;
            rip = true;
        }
        let disp = match (md, base) {
            (1, _) => {
                let d = i64::from(*bytes.get(i)? as i8);
                i += 1;
                d
            }
            (2, _) | (0, None) => {
                let d = i32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?);
                i += 4;
                i64::from(d)
            }
            _ => 0,
        };
        Rm::Mem {
            base,
            index,
            disp,
            rip,
        }
    };
    use Opc::*;
    let op = match (p66, pf2, pf3, opc) {
        (_, false, false, 0x57) => Xor,
        (_, false, false, 0x54) => And,
        (_, false, false, 0x55) => AndNot,
        (_, false, false, 0x56) => Or,
        (true, false, false, 0xEF) => Xor,
        (true, false, false, 0xDB) => And,
        (true, false, false, 0xDF) => AndNot,
        (true, false, false, 0xEB) => Or,
        (_, false, false, 0x28) | (false, false, false, 0x10) => Load128,
        (true, false, false, 0x6F) | (false, false, true, 0x6F) => Load128,
        (_, false, false, 0x29) | (false, false, false, 0x11) => Store128,
        (true, false, false, 0x7F) | (false, false, true, 0x7F) => Store128,
        (true, false, false, 0x6E) => MovdLoad,
        (true, false, false, 0x7E) => MovdStore,
        (false, false, true, 0x7E) => MovqLoad,
        (true, false, false, 0xD6) => MovqStore,
        (true, false, false, 0xFC) => PaddB,
        (true, false, false, 0xFD) => PaddW,
        (true, false, false, 0xFE) => PaddD,
        (true, false, false, 0xD4) => PaddQ,
        (true, false, false, 0xF8) => PsubB,
        (true, false, false, 0xF9) => PsubW,
        (true, false, false, 0xFA) => PsubD,
        (true, false, false, 0xFB) => PsubQ,
        (true, false, false, 0x74) => PcmpeqB,
        (true, false, false, 0x75) => PcmpeqW,
        (true, false, false, 0x76) => PcmpeqD,
        (true, false, false, 0x64) => PcmpgtB,
        (true, false, false, 0x65) => PcmpgtW,
        (true, false, false, 0x66) => PcmpgtD,
        (true, false, false, 0x60) => PunpckLBW,
        (true, false, false, 0x61) => PunpckLWD,
        (true, false, false, 0x62) => PunpckLDQ,
        (true, false, false, 0x6C) => PunpckLQDQ,
        (true, false, false, 0x68) => PunpckHBW,
        (true, false, false, 0x69) => PunpckHWD,
        (true, false, false, 0x6A) => PunpckHDQ,
        (true, false, false, 0x6D) => PunpckHQDQ,
        (true, false, false, 0x70) => Pshufd,
        (false, true, false, 0x70) => Pshuflw,
        (false, false, true, 0x70) => Pshufhw,
        (true, false, false, 0x71..=0x73) if md == 3 => {
            let bits = match opc {
                0x71 => 16,
                0x72 => 32,
                _ => 64,
            };
            match (opc, reg_field) {
                (_, 2) => ShiftImm(bits, false),
                (_, 6) => ShiftImm(bits, true),
                (0x73, 3) => ByteShift(false),
                (0x73, 7) => ByteShift(true),
                _ => return None,
            }
        }
        (true, false, false, 0xD1) => ShiftXmm(16, false),
        (true, false, false, 0xD2) => ShiftXmm(32, false),
        (true, false, false, 0xD3) => ShiftXmm(64, false),
        (true, false, false, 0xF1) => ShiftXmm(16, true),
        (true, false, false, 0xF2) => ShiftXmm(32, true),
        (true, false, false, 0xF3) => ShiftXmm(64, true),
        (true, false, false, 0xC4) => Pinsrw,
        (true, false, false, 0xF4) => Pmuludq,
        (true, false, false, 0xD5) => Pmullw,
        (true, false, false, 0x63) => Packsswb,
        (true, false, false, 0x6B) => Packssdw,
        (false, false, false, 0xC6) => Shufps,
        (false, false, true, 0x10) => MovsLoad(32),
        (false, true, false, 0x10) => MovsLoad(64),
        (false, false, true, 0x11) => MovsStore(32),
        (false, true, false, 0x11) => MovsStore(64),
        (true, false, false, 0xC5) if md == 3 => Pextrw,
        (true, false, false, 0xD7) if md == 3 => Pmovmskb,
        _ => return None,
    };
    let has_imm = matches!(
        op,
        Pshufd | Pshuflw | Pshufhw | ShiftImm(..) | ByteShift(_) | Pinsrw | Pextrw | Shufps
    );
    let imm = if has_imm {
        let b = *bytes.get(i)?;
        i += 1;
        b
    } else {
        0
    };
    Some(Insn {
        op,
        reg,
        rm,
        imm,
        wide: rex & 8 != 0,
        len: i,
    })
}

/// Guest memory as the emulated instruction sees it (virtual addresses).
pub(crate) trait Memory {
    /// Reads `buf.len()` bytes at guest-virtual `gva`.
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> bool;
    /// Writes `data` at guest-virtual `gva`.
    fn write(&mut self, gva: u64, data: &[u8]) -> bool;
}

fn gpr(r: &mut kvm_regs, i: usize) -> Option<&mut u64> {
    Some(match i {
        0 => &mut r.rax,
        1 => &mut r.rcx,
        2 => &mut r.rdx,
        3 => &mut r.rbx,
        4 => &mut r.rsp,
        5 => &mut r.rbp,
        6 => &mut r.rsi,
        7 => &mut r.rdi,
        8 => &mut r.r8,
        9 => &mut r.r9,
        10 => &mut r.r10,
        11 => &mut r.r11,
        12 => &mut r.r12,
        13 => &mut r.r13,
        14 => &mut r.r14,
        15 => &mut r.r15,
        _ => return None,
    })
}

fn lanes<const N: usize>(v: u128) -> [u128; N] {
    let bits = 128 / N as u32;
    let mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    core::array::from_fn(|k| (v >> (bits * k as u32)) & mask)
}

fn join<const N: usize>(l: [u128; N]) -> u128 {
    let bits = 128 / N as u32;
    let mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    l.iter()
        .enumerate()
        .fold(0, |acc, (k, x)| acc | ((x & mask) << (bits * k as u32)))
}

fn lanewise<const N: usize>(a: u128, b: u128, f: impl Fn(u128, u128) -> u128) -> u128 {
    let (x, y) = (lanes::<N>(a), lanes::<N>(b));
    join::<N>(core::array::from_fn(|k| f(x[k], y[k])))
}

fn sign(x: u128, bits: u32) -> i128 {
    let sh = 128 - bits;
    ((x << sh) as i128) >> sh
}

/// Interleaves the lanes of the low (`high == false`) or high halves of `a` and `b`.
fn unpack<const N: usize>(a: u128, b: u128, high: bool) -> u128 {
    let (x, y) = (lanes::<N>(a), lanes::<N>(b));
    let off = if high { N / 2 } else { 0 };
    join::<N>(core::array::from_fn(|k| {
        let src = off + k / 2;
        if k % 2 == 0 {
            x[src]
        } else {
            y[src]
        }
    }))
}

fn shift<const N: usize>(v: u128, count: u64, left: bool) -> u128 {
    let bits = 128 / N as u64;
    if count >= bits {
        return 0;
    }
    let c = count as u32;
    lanewise::<N>(v, 0, |x, _| if left { x << c } else { x >> c })
}

/// Performs `insn` on the registers and memory; false when an operand cannot be accessed
/// (the caller reports the instruction as not emulated).
pub(crate) fn execute(
    insn: &Insn,
    rip_next: u64,
    regs: &mut kvm_regs,
    fpu: &mut kvm_fpu,
    mem: &mut dyn Memory,
) -> bool {
    use Opc::*;
    let xmm = |f: &kvm_fpu, i: usize| f.xmm.get(i).map(|b| u128::from_le_bytes(*b));
    let addr = |regs: &mut kvm_regs, rm: Rm| -> Option<u64> {
        let Rm::Mem {
            base,
            index,
            disp,
            rip,
        } = rm
        else {
            return None;
        };
        let mut a = if rip { rip_next } else { 0 };
        if let Some(b) = base {
            a = a.wrapping_add(*gpr(regs, b)?);
        }
        if let Some((x, s)) = index {
            a = a.wrapping_add(gpr(regs, x)?.wrapping_mul(u64::from(s)));
        }
        Some(a.wrapping_add(disp as u64))
    };
    // The source operand of `size` bytes from r/m: an XMM register or memory.
    let mut src = |regs: &mut kvm_regs, fpu: &kvm_fpu, size: usize| -> Option<u128> {
        match insn.rm {
            Rm::Reg(r) => xmm(fpu, r),
            m => {
                let a = addr(regs, m)?;
                let mut b = [0u8; 16];
                if !mem.read(a, b.get_mut(..size)?) {
                    return None;
                }
                Some(u128::from_le_bytes(b))
            }
        }
    };
    let Some(d) = xmm(fpu, insn.reg) else {
        return false;
    };
    let result: Option<u128> = match insn.op {
        Xor | And | AndNot | Or | PaddB | PaddW | PaddD | PaddQ | PsubB | PsubW | PsubD | PsubQ
        | PcmpeqB | PcmpeqW | PcmpeqD | PcmpgtB | PcmpgtW | PcmpgtD | PunpckLBW | PunpckLWD
        | PunpckLDQ | PunpckLQDQ | PunpckHBW | PunpckHWD | PunpckHDQ | PunpckHQDQ | Load128
        | Pshufd | Pshuflw | Pshufhw | ShiftXmm(..) | Pmuludq | Pmullw | Packsswb | Packssdw
        | Shufps => {
            let Some(s) = src(regs, fpu, 16) else {
                return false;
            };
            let mask = |c: bool, bits: u32| if c { (1u128 << bits) - 1 } else { 0 };
            Some(match insn.op {
                Xor => d ^ s,
                And => d & s,
                AndNot => !d & s,
                Or => d | s,
                Load128 => s,
                PaddB => lanewise::<16>(d, s, |a, b| a.wrapping_add(b)),
                PaddW => lanewise::<8>(d, s, |a, b| a.wrapping_add(b)),
                PaddD => lanewise::<4>(d, s, |a, b| a.wrapping_add(b)),
                PaddQ => lanewise::<2>(d, s, |a, b| a.wrapping_add(b)),
                PsubB => lanewise::<16>(d, s, |a, b| a.wrapping_sub(b)),
                PsubW => lanewise::<8>(d, s, |a, b| a.wrapping_sub(b)),
                PsubD => lanewise::<4>(d, s, |a, b| a.wrapping_sub(b)),
                PsubQ => lanewise::<2>(d, s, |a, b| a.wrapping_sub(b)),
                PcmpeqB => lanewise::<16>(d, s, |a, b| mask(a == b, 8)),
                PcmpeqW => lanewise::<8>(d, s, |a, b| mask(a == b, 16)),
                PcmpeqD => lanewise::<4>(d, s, |a, b| mask(a == b, 32)),
                PcmpgtB => lanewise::<16>(d, s, |a, b| mask(sign(a, 8) > sign(b, 8), 8)),
                PcmpgtW => lanewise::<8>(d, s, |a, b| mask(sign(a, 16) > sign(b, 16), 16)),
                PcmpgtD => lanewise::<4>(d, s, |a, b| mask(sign(a, 32) > sign(b, 32), 32)),
                PunpckLBW => unpack::<16>(d, s, false),
                PunpckLWD => unpack::<8>(d, s, false),
                PunpckLDQ => unpack::<4>(d, s, false),
                PunpckLQDQ => unpack::<2>(d, s, false),
                PunpckHBW => unpack::<16>(d, s, true),
                PunpckHWD => unpack::<8>(d, s, true),
                PunpckHDQ => unpack::<4>(d, s, true),
                PunpckHQDQ => unpack::<2>(d, s, true),
                Pshufd => {
                    let l = lanes::<4>(s);
                    join::<4>(core::array::from_fn(|k| {
                        l[usize::from((insn.imm >> (2 * k)) & 3)]
                    }))
                }
                Pshuflw | Pshufhw => {
                    let l = lanes::<8>(s);
                    let off = if insn.op == Pshufhw { 4 } else { 0 };
                    join::<8>(core::array::from_fn(|k| {
                        if k / 4 * 4 == off {
                            l[off + usize::from((insn.imm >> (2 * (k % 4))) & 3)]
                        } else {
                            l[k]
                        }
                    }))
                }
                Pmuludq => {
                    let (x, y) = (lanes::<4>(d), lanes::<4>(s));
                    join::<2>([x[0] * y[0], x[2] * y[2]])
                }
                Pmullw => lanewise::<8>(d, s, |a, b| a.wrapping_mul(b)),
                Packsswb | Packssdw => {
                    let sat = |x: u128, from: u32, to: u32| -> u128 {
                        let v = sign(x, from);
                        let max = (1i128 << (to - 1)) - 1;
                        (v.clamp(-max - 1, max) as u128) & ((1u128 << to) - 1)
                    };
                    if insn.op == Packsswb {
                        let (x, y) = (lanes::<8>(d), lanes::<8>(s));
                        join::<16>(core::array::from_fn(|k| {
                            sat(if k < 8 { x[k] } else { y[k - 8] }, 16, 8)
                        }))
                    } else {
                        let (x, y) = (lanes::<4>(d), lanes::<4>(s));
                        join::<8>(core::array::from_fn(|k| {
                            sat(if k < 4 { x[k] } else { y[k - 4] }, 32, 16)
                        }))
                    }
                }
                Shufps => {
                    let (x, y) = (lanes::<4>(d), lanes::<4>(s));
                    let sel = |k: usize| usize::from((insn.imm >> (2 * k)) & 3);
                    join::<4>([x[sel(0)], x[sel(1)], y[sel(2)], y[sel(3)]])
                }
                ShiftXmm(bits, left) => {
                    let c = s as u64;
                    match bits {
                        16 => shift::<8>(d, c, left),
                        32 => shift::<4>(d, c, left),
                        _ => shift::<2>(d, c, left),
                    }
                }
                _ => return false,
            })
        }
        ShiftImm(bits, left) => {
            let Rm::Reg(r) = insn.rm else {
                return false;
            };
            let Some(v) = xmm(fpu, r) else {
                return false;
            };
            let c = u64::from(insn.imm);
            let out = match bits {
                16 => shift::<8>(v, c, left),
                32 => shift::<4>(v, c, left),
                _ => shift::<2>(v, c, left),
            };
            return write_xmm(fpu, r, out);
        }
        ByteShift(left) => {
            let Rm::Reg(r) = insn.rm else {
                return false;
            };
            let Some(v) = xmm(fpu, r) else {
                return false;
            };
            let c = u32::from(insn.imm.min(16)) * 8;
            let out = if c >= 128 {
                0
            } else if left {
                v << c
            } else {
                v >> c
            };
            return write_xmm(fpu, r, out);
        }
        MovdLoad => {
            let size = if insn.wide { 8 } else { 4 };
            let v = match insn.rm {
                Rm::Reg(r) => gpr(regs, r).map(|g| *g),
                m => {
                    let Some(a) = addr(regs, m) else {
                        return false;
                    };
                    let mut b = [0u8; 8];
                    let ok = match b.get_mut(..size) {
                        Some(s) => mem.read(a, s),
                        None => false,
                    };
                    ok.then(|| u64::from_le_bytes(b))
                }
            };
            v.map(|v| u128::from(if insn.wide { v } else { v & 0xFFFF_FFFF }))
        }
        MovqLoad => src(regs, fpu, 8).map(|s| s & u128::from(u64::MAX)),
        Pinsrw => {
            let w = match insn.rm {
                Rm::Reg(r) => gpr(regs, r).map(|g| u128::from(*g & 0xFFFF)),
                m => {
                    let Some(a) = addr(regs, m) else {
                        return false;
                    };
                    let mut b = [0u8; 2];
                    mem.read(a, &mut b)
                        .then(|| u128::from(u16::from_le_bytes(b)))
                }
            };
            w.map(|w| {
                let sh = 16 * u32::from(insn.imm & 7);
                (d & !(0xFFFFu128 << sh)) | (w << sh)
            })
        }
        Store128 | MovdStore | MovqStore => {
            let (size, v) = match insn.op {
                Store128 => (16, d),
                MovqStore => (8, d & u128::from(u64::MAX)),
                _ if insn.wide => (8, d & u128::from(u64::MAX)),
                _ => (4, d & 0xFFFF_FFFF),
            };
            return match insn.rm {
                Rm::Reg(r) if insn.op == MovdStore => match gpr(regs, r) {
                    Some(g) => {
                        *g = v as u64;
                        true
                    }
                    None => false,
                },
                Rm::Reg(r) => {
                    let keep = if size == 16 {
                        v
                    } else {
                        v & ((1u128 << (size * 8)) - 1)
                    };
                    write_xmm(fpu, r, keep)
                }
                m => {
                    let Some(a) = addr(regs, m) else {
                        return false;
                    };
                    let b = v.to_le_bytes();
                    match b.get(..size) {
                        Some(s) => mem.write(a, s),
                        None => false,
                    }
                }
            };
        }
        MovsLoad(bits) => {
            let low = (1u128 << bits) - 1;
            match insn.rm {
                Rm::Reg(r) => xmm(fpu, r).map(|v| (d & !low) | (v & low)),
                _ => src(regs, fpu, (bits / 8) as usize).map(|v| v & low),
            }
        }
        MovsStore(bits) => {
            let low = (1u128 << bits) - 1;
            return match insn.rm {
                Rm::Reg(r) => match xmm(fpu, r) {
                    Some(v) => write_xmm(fpu, r, (v & !low) | (d & low)),
                    None => false,
                },
                m => {
                    let Some(a) = addr(regs, m) else {
                        return false;
                    };
                    let b = d.to_le_bytes();
                    match b.get(..(bits / 8) as usize) {
                        Some(s) => mem.write(a, s),
                        None => false,
                    }
                }
            };
        }
        Pextrw | Pmovmskb => {
            let Rm::Reg(r) = insn.rm else {
                return false;
            };
            let Some(s) = xmm(fpu, r) else {
                return false;
            };
            let v = if insn.op == Pextrw {
                ((s >> (16 * u32::from(insn.imm & 7))) & 0xFFFF) as u64
            } else {
                lanes::<16>(s)
                    .iter()
                    .enumerate()
                    .fold(0u64, |m, (k, b)| m | (((b >> 7) & 1) as u64) << k)
            };
            return match gpr(regs, insn.reg) {
                Some(g) => {
                    *g = v;
                    true
                }
                None => false,
            };
        }
    };
    match result {
        Some(v) => write_xmm(fpu, insn.reg, v),
        None => false,
    }
}

fn write_xmm(fpu: &mut kvm_fpu, i: usize, v: u128) -> bool {
    match fpu.xmm.get_mut(i) {
        Some(slot) => {
            *slot = v.to_le_bytes();
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flat(Vec<u8>);
    impl Memory for Flat {
        fn read(&mut self, gva: u64, buf: &mut [u8]) -> bool {
            let a = gva as usize;
            match self.0.get(a..a + buf.len()) {
                Some(s) => {
                    buf.copy_from_slice(s);
                    true
                }
                None => false,
            }
        }
        fn write(&mut self, gva: u64, data: &[u8]) -> bool {
            let a = gva as usize;
            match self.0.get_mut(a..a + data.len()) {
                Some(s) => {
                    s.copy_from_slice(data);
                    true
                }
                None => false,
            }
        }
    }

    fn run(bytes: &[u8], regs: &mut kvm_regs, fpu: &mut kvm_fpu, mem: &mut Flat) -> usize {
        let i = decode(bytes).expect("decodes");
        assert!(execute(&i, 0x1000, regs, fpu, mem), "{i:?}");
        i.len
    }

    #[test]
    fn xorps_zeroes_and_pinsrw_reads_memory() {
        let mut regs = kvm_regs::default();
        let mut fpu = kvm_fpu::default();
        let mut mem = Flat(vec![0; 64]);
        fpu.xmm[0] = [0xAA; 16];
        assert_eq!(run(&[0x0F, 0x57, 0xC0], &mut regs, &mut fpu, &mut mem), 3);
        assert_eq!(fpu.xmm[0], [0; 16]);
        // pinsrw $0x1, (%rdi,%r11,2), %xmm0
        mem.0[0x24..0x26].copy_from_slice(&0x3130u16.to_le_bytes());
        regs.rdi = 0x20;
        regs.r11 = 2;
        let n = run(
            &[0x66, 0x42, 0x0F, 0xC4, 0x04, 0x5F, 0x01],
            &mut regs,
            &mut fpu,
            &mut mem,
        );
        assert_eq!(n, 7);
        assert_eq!(u128::from_le_bytes(fpu.xmm[0]), 0x3130 << 16);
        // movd %xmm0, -0x20(%rbp,%r10,1)
        regs.rbp = 0x30;
        regs.r10 = 0x8;
        let n = run(
            &[0x66, 0x42, 0x0F, 0x7E, 0x44, 0x15, 0xE0],
            &mut regs,
            &mut fpu,
            &mut mem,
        );
        assert_eq!(n, 7);
        assert_eq!(&mem.0[0x18..0x1C], &(0x3130u32 << 16).to_le_bytes());
    }

    #[test]
    fn lane_operations() {
        let mut regs = kvm_regs::default();
        let mut fpu = kvm_fpu::default();
        let mut mem = Flat(vec![0; 16]);
        fpu.xmm[1] = (0x0102_0304u128 | (5u128 << 64)).to_le_bytes();
        fpu.xmm[2] = (1u128 | (1u128 << 64)).to_le_bytes();
        // paddq %xmm2, %xmm1
        run(&[0x66, 0x0F, 0xD4, 0xCA], &mut regs, &mut fpu, &mut mem);
        assert_eq!(u128::from_le_bytes(fpu.xmm[1]), 0x0102_0305 | (6u128 << 64));
        // pshufd $0x00, %xmm1, %xmm3: broadcast dword 0
        run(
            &[0x66, 0x0F, 0x70, 0xD9, 0x00],
            &mut regs,
            &mut fpu,
            &mut mem,
        );
        assert_eq!(
            lanes::<4>(u128::from_le_bytes(fpu.xmm[3])),
            [0x0102_0305; 4]
        );
        // psrlq $8, %xmm1
        run(
            &[0x66, 0x0F, 0x73, 0xD1, 0x08],
            &mut regs,
            &mut fpu,
            &mut mem,
        );
        assert_eq!(u128::from_le_bytes(fpu.xmm[1]), 0x0001_0203);
        // pcmpgtb: -1 > 0 is false, 1 > 0 true
        fpu.xmm[4] = [0xFF, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        fpu.xmm[5] = [0; 16];
        run(&[0x66, 0x0F, 0x64, 0xE5], &mut regs, &mut fpu, &mut mem);
        assert_eq!(&fpu.xmm[4][..2], &[0, 0xFF]);
        // punpcklbw %xmm5, %xmm4 interleaves low bytes with zero
        fpu.xmm[4] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        run(&[0x66, 0x0F, 0x60, 0xE5], &mut regs, &mut fpu, &mut mem);
        assert_eq!(&fpu.xmm[4][..6], &[1, 0, 2, 0, 3, 0]);
        // movq %xmm4, %rax (66 REX.W 0F 7E /r)
        run(
            &[0x66, 0x48, 0x0F, 0x7E, 0xE0],
            &mut regs,
            &mut fpu,
            &mut mem,
        );
        assert_eq!(regs.rax, u64::from_le_bytes([1, 0, 2, 0, 3, 0, 4, 0]));
    }

    #[test]
    fn multiplies_packs_and_shuffles() {
        let mut regs = kvm_regs::default();
        let mut fpu = kvm_fpu::default();
        let mut mem = Flat(vec![0; 16]);
        fpu.xmm[0] = join::<4>([3, 0xFFFF_FFFF, 5, 7]).to_le_bytes();
        fpu.xmm[1] = join::<4>([4, 9, 0xFFFF_FFFF, 9]).to_le_bytes();
        // pmuludq %xmm1, %xmm0
        run(&[0x66, 0x0F, 0xF4, 0xC1], &mut regs, &mut fpu, &mut mem);
        assert_eq!(
            lanes::<2>(u128::from_le_bytes(fpu.xmm[0])),
            [12, 5 * 0xFFFF_FFFF]
        );
        // packsswb saturates words to bytes
        fpu.xmm[2] = join::<8>([1, 300, 0xFFFF, 0x8000, 0, 0, 0, 0]).to_le_bytes();
        fpu.xmm[3] = [0; 16];
        run(&[0x66, 0x0F, 0x63, 0xD3], &mut regs, &mut fpu, &mut mem);
        assert_eq!(&fpu.xmm[2][..4], &[1, 127, 0xFF, 0x80]);
        // shufps $0x1B, %xmm1, %xmm1 reverses the dwords
        fpu.xmm[1] = join::<4>([1, 2, 3, 4]).to_le_bytes();
        run(&[0x0F, 0xC6, 0xC9, 0x1B], &mut regs, &mut fpu, &mut mem);
        assert_eq!(lanes::<4>(u128::from_le_bytes(fpu.xmm[1])), [4, 3, 2, 1]);
        // movss %xmm1, %xmm2 merges the low dword
        fpu.xmm[2] = [0xEE; 16];
        run(&[0xF3, 0x0F, 0x10, 0xD1], &mut regs, &mut fpu, &mut mem);
        assert_eq!(&fpu.xmm[2][..5], &[4, 0, 0, 0, 0xEE]);
        // movsd %xmm2, (%rax) stores 8 bytes
        regs.rax = 8;
        run(&[0xF2, 0x0F, 0x11, 0x10], &mut regs, &mut fpu, &mut mem);
        assert_eq!(&mem.0[8..16], &fpu.xmm[2][..8]);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert_eq!(decode(&[0x0F, 0x0B]), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x0F, 0x57]), None);
        // An MMX form (no 66 prefix) of pxor.
        assert_eq!(decode(&[0x0F, 0xEF, 0xC0]), None);
    }
}

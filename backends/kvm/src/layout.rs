//! Guest-physical layout the loader sets up, and the structures it writes there.
//!
//! | GPA range              | contents                                                     |
//! |------------------------|--------------------------------------------------------------|
//! | `0x0000..0x1000`       | unused                                                       |
//! | `0x1000`               | GDT (null, ring-0 code/data, ring-3 data/code, one TSS per vCPU) |
//! | `0x2000..0x4000`       | one TSS per vCPU (0x200 bytes apart)                         |
//! | `0x4000`               | PML4                                                         |
//! | `0x5000`               | PDPT                                                         |
//! | `0x6000..0xA000`       | four page directories: the low 4 GiB in 2 MiB pages          |
//! | `0xA000`               | `BootInfo` (128 bytes), the memory map, the command line      |
//! | `0x20000..0x60000`     | one 16 KiB interrupt stack per vCPU (the TSS's IST1 and RSP0) |
//! | `0x70000..0x80000`     | boot stack of vCPU 0                                          |
//! | `0x10_0000..`          | the guest image, then free RAM                               |
//!
//! Each vCPU's TSS has IST1 (and RSP0) pointing at its own interrupt stack, so a ring-0 guest
//! can set IST = 1 in its IDT gates and take upcalls without touching the interrupted stack
//! (code compiled with a red zone, like the precompiled `core`, stays safe).
//!
//! Everything below the end of the image is reported as `LOADER` in the memory map, the rest
//! as `RAM`: the guest may reuse the loader's part
//! once it has its own GDT, page tables and stacks.

use pvabi::memory::{MemKind, MemMapEntry};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

/// GPA of the GDT.
pub const GDT_GPA: u64 = 0x1000;
/// GPA of vCPU 0's TSS; vCPU `v`'s is at `TSS_GPA + v * TSS_STRIDE`.
pub const TSS_GPA: u64 = 0x2000;
/// Distance between the TSSs of consecutive vCPUs.
pub const TSS_STRIDE: u64 = 0x200;
/// GPA of the PML4.
pub const PML4_GPA: u64 = 0x4000;
/// GPA of the PDPT.
pub const PDPT_GPA: u64 = 0x5000;
/// GPA of the first page directory.
pub const PD_GPA: u64 = 0x6000;
/// Lowest GPA of the per-vCPU interrupt stacks; vCPU `v`'s stack ends at
/// `IST_BASE + (v + 1) * IST_SIZE`.
pub const IST_BASE: u64 = 0x2_0000;
/// Size of each vCPU's interrupt stack.
pub const IST_SIZE: u64 = 0x4000;
/// Number of page directories (each maps 1 GiB).
pub const PD_COUNT: u64 = 4;
/// GPA of the boot info.
pub const BOOT_INFO_GPA: u64 = 0xA000;
/// GPA of the memory map (right after the boot info).
pub const MEM_MAP_GPA: u64 = BOOT_INFO_GPA + pvabi::BootInfo::SIZE as u64;
/// Largest command line in bytes.
pub const CMDLINE_MAX: usize = 4096;
/// Top of the boot vCPU's stack.
pub const BOOT_STACK_TOP: u64 = 0x8_0000;
/// Lowest GPA an image segment may be loaded at.
pub const IMAGE_MIN: u64 = 0x10_0000;
/// Largest guest RAM this loader supports (everything lies below the 3 GiB hole).
pub const MAX_MEM: u64 = 3 << 30;
/// Smallest guest RAM (image area included).
pub const MIN_MEM: u64 = 2 << 20;

/// GDT selector of the ring-0 64-bit code segment.
pub const SEL_KCODE: u16 = 0x08;
/// GDT selector of the ring-0 data segment.
pub const SEL_KDATA: u16 = 0x10;
/// GDT selector (with RPL 3) of the ring-3 data segment.
pub const SEL_UDATA: u16 = 0x18 | 3;
/// GDT selector (with RPL 3) of the ring-3 64-bit code segment.
pub const SEL_UCODE: u16 = 0x20 | 3;
/// GDT selector of vCPU 0's TSS; vCPU `v`'s is `SEL_TSS + 16 * v`.
pub const SEL_TSS: u16 = 0x28;
/// Offset of the I/O permission bitmap in the TSS.
pub const TSS_IOMAP: u64 = 0x68;
/// TSS limit: the 104-byte TSS, bitmap bytes for ports `0..=max(gate ports)`, and the
/// terminating byte.
pub const TSS_LIMIT: u64 = TSS_IOMAP + (IOMAP_MAX_PORT as u64 / 8) + 1;
/// Highest port a 4-byte access to either gate port touches.
const IOMAP_MAX_PORT: u16 = 3 + if pvabi::gate::DEFAULT_IOPORT > pvabi::gate::NULL_IOPORT {
    pvabi::gate::DEFAULT_IOPORT
} else {
    pvabi::gate::NULL_IOPORT
};
/// Number of 8-byte GDT slots (each TSS takes two).
pub const GDT_ENTRIES: u64 = 5 + 2 * pvabi::MAX_VCPUS as u64;

/// The TSS selector of vCPU `v`.
pub const fn tss_selector(v: u32) -> u16 {
    SEL_TSS + 16 * v as u16
}

/// The GPA of vCPU `v`'s TSS.
pub const fn tss_gpa(v: u32) -> u64 {
    TSS_GPA + TSS_STRIDE * v as u64
}

// The fixed areas do not overlap.
const _: () = {
    assert!(tss_gpa(pvabi::MAX_VCPUS) <= PML4_GPA);
    assert!(TSS_LIMIT < TSS_STRIDE);
    assert!(PD_GPA + PD_COUNT * 0x1000 <= BOOT_INFO_GPA);
    assert!(BOOT_INFO_GPA + 0x2000 <= IST_BASE);
    assert!(IST_BASE + pvabi::MAX_VCPUS as u64 * IST_SIZE <= BOOT_STACK_TOP - 0x1_0000);
    assert!(tss_selector(pvabi::MAX_VCPUS - 1) as u64 / 8 + 2 <= GDT_ENTRIES);
    assert!(GDT_ENTRIES * 8 <= TSS_GPA - GDT_GPA);
};

const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_PS: u64 = 1 << 7;

/// The flat GDT: `(base, limit, access, flags)` packed the usual way.
const fn seg_desc(access: u64, flags: u64) -> u64 {
    // limit 0xFFFFF, base 0.
    0xFFFF | (0xF << 48) | (access << 40) | (flags << 52)
}

/// Writes identity-mapped page tables for the low 4 GiB with 2 MiB pages. With `user`, every
/// level has the U/S bit, so ring-3 code can use all of it.
///
/// # Errors
///
/// A vm-memory error when the tables do not fit in guest RAM (cannot happen with
/// [`MIN_MEM`] or more).
pub fn write_page_tables(
    mem: &GuestMemoryMmap,
    user: bool,
) -> Result<(), vm_memory::GuestMemoryError> {
    let us = if user { PTE_US } else { 0 };
    mem.write_obj(PDPT_GPA | PTE_P | PTE_RW | us, GuestAddress(PML4_GPA))?;
    for i in 0..PD_COUNT {
        let pd = PD_GPA + i * 0x1000;
        mem.write_obj(pd | PTE_P | PTE_RW | us, GuestAddress(PDPT_GPA + i * 8))?;
        let mut table = [0u64; 512];
        for (j, e) in table.iter_mut().enumerate() {
            let base = (i << 30) + ((j as u64) << 21);
            *e = base | PTE_P | PTE_RW | PTE_PS | us;
        }
        mem.write_slice(table.as_bytes(), GuestAddress(pd))?;
    }
    Ok(())
}

/// Writes the GDT (with a TSS descriptor per possible vCPU) and the TSSs.
///
/// # Errors
///
/// A vm-memory error when they do not fit in guest RAM.
pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError> {
    // access: P | DPL | S | type; flags: G | D/B | L.
    let kcode = seg_desc(0x9B, 0xA); // P, DPL0, code exec/read accessed; G, L
    let kdata = seg_desc(0x93, 0xC); // P, DPL0, data rw accessed; G, D/B
    let udata = seg_desc(0xF3, 0xC); // P, DPL3, data
    let ucode = seg_desc(0xFB, 0xA); // P, DPL3, code, L
    let mut gdt = [0u64; GDT_ENTRIES as usize];
    for (slot, d) in gdt.iter_mut().zip([0, kcode, kdata, udata, ucode]) {
        *slot = d;
    }
    for v in 0..pvabi::MAX_VCPUS {
        let base = tss_gpa(v);
        let lo = (TSS_LIMIT & 0xFFFF)
            | ((base & 0xFF_FFFF) << 16)
            | (0x89 << 40) // P, available 64-bit TSS
            | (((TSS_LIMIT >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56);
        let i = usize::from(tss_selector(v) / 8);
        if let Some(pair) = gdt.get_mut(i..i + 2) {
            pair.copy_from_slice(&[lo, base >> 32]);
        }
        mem.write_slice(&tss_image(v), GuestAddress(base))?;
    }
    mem.write_slice(gdt.as_bytes(), GuestAddress(GDT_GPA))
}

/// vCPU `v`'s TSS: RSP0 (offset 4) and IST1 (offset 0x24) point at the vCPU's own interrupt
/// stack, and an I/O permission bitmap lets ring 3 reach exactly the gate ports (all other
/// ports, and those beyond the TSS limit, fault as usual).
pub fn tss_image(v: u32) -> [u8; TSS_LIMIT as usize + 1] {
    let mut tss = [0u8; TSS_LIMIT as usize + 1];
    let stack_top = IST_BASE + (u64::from(v) + 1) * IST_SIZE;
    for off in [4usize, 0x24] {
        if let Some(s) = tss.get_mut(off..off + 8) {
            s.copy_from_slice(&stack_top.to_le_bytes());
        }
    }
    if let Some(s) = tss.get_mut(0x66..0x68) {
        s.copy_from_slice(&(TSS_IOMAP as u16).to_le_bytes());
    }
    if let Some(map) = tss.get_mut(TSS_IOMAP as usize..) {
        map.fill(0xFF);
        // An access of N bytes checks the bits of all N ports it covers, so each port a guest
        // may write with up to 4 bytes (the gate, the null port, the ring doorbell of any
        // width, spec `RING-4`) opens 4 ports.
        for base in [
            pvabi::gate::DEFAULT_IOPORT,
            pvabi::gate::NULL_IOPORT,
            crate::vmm::RING_DOORBELL_PORT,
        ] {
            for port in base..base + 4 {
                if let Some(b) = map.get_mut(usize::from(port / 8)) {
                    *b &= !(1u8 << (port % 8));
                }
            }
        }
    }
    tss
}

/// The memory map for a guest of `mem_size` bytes whose image ends at `image_end`.
pub fn memory_map(mem_size: u64, image_end: u64) -> Vec<MemMapEntry> {
    let image_end = image_end.clamp(IMAGE_MIN, mem_size);
    // The loader's structures and the image: the guest's own once it no longer needs them.
    let mut v = vec![MemMapEntry {
        base: 0,
        length: image_end,
        kind: MemKind::LOADER.0,
        _reserved: 0,
    }];
    if mem_size > image_end {
        v.push(MemMapEntry {
            base: image_end,
            length: mem_size - image_end,
            kind: MemKind::RAM.0,
            _reserved: 0,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_covers_ram_without_gaps() {
        let m = memory_map(64 << 20, 0x10_3000);
        let mut next = 0;
        for e in &m {
            assert_eq!(e.base, next);
            next = e.base + e.length;
        }
        assert_eq!(next, 64 << 20);
        assert_eq!(m.last().map(|e| e.kind), Some(MemKind::RAM.0));
    }

    #[test]
    fn io_bitmap_allows_only_the_gate_ports() {
        let t = tss_image(0);
        let allowed = |p: u16| {
            t.get(TSS_IOMAP as usize + usize::from(p / 8))
                .is_some_and(|b| b & (1 << (p % 8)) == 0)
        };
        assert!(allowed(pvabi::gate::DEFAULT_IOPORT));
        assert!(allowed(pvabi::gate::NULL_IOPORT));
        assert!(allowed(pvabi::gate::DEFAULT_IOPORT + 3));
        // A 4-byte doorbell at 0x512 covers 0x512..=0x515.
        assert!(allowed(crate::vmm::RING_DOORBELL_PORT + 3));
        assert!(!allowed(0x80) && !allowed(0x3F8) && !allowed(0x516) && !allowed(0xFFFF));
        assert_eq!(t.last(), Some(&0xFF));
    }

    #[test]
    fn every_vcpu_has_its_own_tss_and_interrupt_stack() {
        let ist1 = |v: u32| {
            let t = tss_image(v);
            u64::from_le_bytes(t[0x24..0x2C].try_into().expect("8 bytes"))
        };
        assert_eq!(ist1(0), IST_BASE + IST_SIZE);
        assert_eq!(ist1(3), IST_BASE + 4 * IST_SIZE);
    }

    #[test]
    fn descriptors_have_the_expected_encoding() {
        assert_eq!(seg_desc(0x9B, 0xA), 0x00AF_9B00_0000_FFFF);
        assert_eq!(seg_desc(0xF3, 0xC), 0x00CF_F300_0000_FFFF);
    }
}

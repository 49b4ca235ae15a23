//! Shared parts of the pvabi fuzz targets: the target bodies (in `logic/`, also run by the
//! stable smoke test in `backends/host/tests/fuzz_smoke.rs`) and guest RAM surrounded by
//! inaccessible pages, so that any host access outside guest RAM faults at once.

use std::sync::OnceLock;

use pvabi_host::GuestRam;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

#[path = "../logic/mod.rs"]
pub mod logic;

use logic::env::REGIONS;

const GUARD: usize = 4096;

/// Guest RAM with the fuzzing layout in which every region is surrounded by `PROT_NONE`
/// pages. The mapping lives for the whole process.
///
/// # Panics
///
/// If the kernel refuses the mapping.
pub fn guarded_ram() -> GuestRam {
    let sizes: Vec<usize> = REGIONS.iter().map(|(_, l)| *l as usize).collect();
    let total = GUARD + sizes.iter().map(|s| s + GUARD).sum::<usize>();
    // SAFETY: an anonymous private mapping with no address hint has no precondition; the
    // result is checked against MAP_FAILED below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "reserve guarded guest RAM");
    let mut off = GUARD;
    let mut regions = Vec::new();
    for ((gpa, _), size) in REGIONS.iter().zip(&sizes) {
        // SAFETY: `off + size <= total`, so the pointer stays inside the mapping made above.
        let p = unsafe { base.cast::<u8>().add(off) };
        // SAFETY: `p..p+size` lies inside our own mapping and is page aligned (GUARD and the
        // region sizes are multiples of 4096); nothing else refers to it yet.
        let rc = unsafe { libc::mprotect(p.cast(), *size, libc::PROT_READ | libc::PROT_WRITE) };
        assert_eq!(rc, 0, "mprotect guest RAM region");
        // SAFETY: `p..p+size` is a valid, readable and writable part of a mapping that is
        // never unmapped (it is leaked for the life of the process), so it outlives the
        // region object.
        let r = unsafe {
            MmapRegion::<()>::build_raw(
                p,
                *size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            )
        }
        .expect("region over our mapping");
        regions.push(GuestRegionMmap::new(r, GuestAddress(*gpa)).expect("region fits"));
        off += size + GUARD;
    }
    GuestRam::new(GuestMemoryMmap::from_regions(regions).expect("sorted regions"))
}

/// The process-wide guarded RAM (one for each index asked for), created once.
pub fn ram(i: usize) -> &'static GuestRam {
    static RAMS: [OnceLock<GuestRam>; 2] = [OnceLock::new(), OnceLock::new()];
    RAMS[i % 2].get_or_init(guarded_ram)
}

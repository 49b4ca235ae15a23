//! A bare-metal PVH kernel that checks the guest side of pvabi's Xen transport under a real Xen.
//!
//! Xen enters `_start` in 32-bit protected mode without paging, with EBX = the guest-physical
//! address of the `hvm_start_info` (the `XEN_ELFNOTE_PHYS32_ENTRY` contract). The entry code
//! identity maps the first 4 GiB with 2 MiB pages (Xen's special pages, the console and
//! xenstore rings, sit just below 4 GiB), enables long mode and SSE, switches to a
//! 64-bit GDT and a stack in .bss, and calls [`pvh_main`].
//!
//! The kernel prints one `PVH-CHECK <name> ok|fail <detail>` line per step on the PV console
//! (and on Xen's debug port 0xE9), then `PVH-CONNECT connected|refused|failed <detail>` for the
//! end of the handshake, the ring checks when the backend connected, and `PVH-DONE`, and powers
//! off with `SCHEDOP_shutdown`.
#![no_std]
#![no_main]

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU8};

use pvabi::{call, ServiceId, Status};
use pvabi_guest::shared::RingShared;
use pvabi_guest::xen::abi as xa;
use pvabi_guest::xen::connect::{abandon, XenCause, XenStep};
use pvabi_guest::xen::console::{ConsInterface, PvConsole};
use pvabi_guest::xen::grant::{GrantEntryV1, GrantTable, ENTRIES_PER_FRAME};
use pvabi_guest::xen::handshake::{self, BackendInfo, FrontendKeys};
use pvabi_guest::xen::hypercall::{Doorbell, EventChannel};
use pvabi_guest::ring::init_header;
use pvabi_guest::xen::xenstore::{XsClient, XsInterface};
use pvabi_guest::xen::{self, Hypercalls, StrBuf, XenConnectOptions, XenError, XenWindow};
use pvabi_guest::{Gate, PhysReader, Pvabi, TakeOnce, Translate};
use pvabi_image_rt as _;

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long _start
    .balign 4

    .section .text._start, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    mov %ebx, %esi
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov $pvh_pdpt, %eax
    or $3, %eax
    mov %eax, pvh_pml4
    mov $pvh_pdpt, %edi
    mov $pvh_pd, %eax
    or $3, %eax
    mov $4, %ecx
3:
    mov %eax, (%edi)
    add $4096, %eax
    add $8, %edi
    dec %ecx
    jnz 3b
    mov $pvh_pd, %edi
    mov $0x83, %eax
    mov $2048, %ecx
1:
    mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x200000, %eax
    add $8, %edi
    dec %ecx
    jnz 1b
    mov $0x620, %eax
    mov %eax, %cr4
    mov $pvh_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    and $0xFFFFFFFB, %eax
    or $0x80000003, %eax
    mov %eax, %cr0
    lgdt pvh_gdt_ptr
    ljmp $0x08, $pvh_long

    .code64
pvh_long:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    lea pvh_stack_top(%rip), %rsp
    mov %esi, %edi
    call pvh_main
2:
    hlt
    jmp 2b

    .section .rodata.pvh_gdt, "a"
    .balign 16
pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
pvh_gdt_ptr:
    .word 23
    .long pvh_gdt

    .section .bss.pvh_tables, "aw", @nobits
    .balign 4096
pvh_pml4:
    .skip 4096
pvh_pdpt:
    .skip 4096
pvh_pd:
    .skip 4 * 4096
pvh_stack:
    .skip 65536
pvh_stack_top:
"#,
    options(att_syntax)
);

/// One 4 KiB page of bytes that other parties may change (Xen, the backend).
#[repr(C, align(4096))]
struct Page([AtomicU8; 4096]);

impl Page {
    const fn new() -> Self {
        Self([const { AtomicU8::new(0) }; 4096])
    }
}

/// Xen writes the hypercall stubs here (via the MSR); executed, never read by Rust.
static HYPERCALL_PAGE: Page = Page::new();

/// The frame where grant-table frame 0 is mapped (its RAM page is replaced).
#[repr(C, align(4096))]
struct GrantFrame([GrantEntryV1; ENTRIES_PER_FRAME]);
static GRANT_FRAME: GrantFrame = GrantFrame([const { GrantEntryV1::new() }; ENTRIES_PER_FRAME]);

/// The window granted to the backend: the ring (page 0) and a data page (page 1) for the
/// buffers the kernel's calls name.
#[repr(C, align(4096))]
struct Window {
    ring: RingShared<8>,
    data: DataPage,
}
/// One page of buffers, handed out once.
#[repr(C, align(4096))]
struct DataPage(TakeOnce<[u8; 4000]>);
static WINDOW: Window = Window {
    ring: RingShared::new(),
    data: DataPage(TakeOnce::new([0; 4000])),
};
const WINDOW_PAGES: u32 = (core::mem::size_of::<Window>() / 4096) as u32;

/// The index page: grant references of the window pages.
#[repr(C, align(4096))]
struct IndexPage([AtomicU32; 1024]);
static INDEX: IndexPage = IndexPage([const { AtomicU32::new(0) }; 1024]);

/// A buffer outside the window (for the XEN-7 check).
static OUTSIDE: [u8; 8] = *b"outside\n";

/// The first grant reference used (0..7 are reserved).
const FIRST_REF: u32 = 8;
/// Polls of a xenstore node while waiting for the backend's state.
const STATE_POLLS: u64 = 200_000;
/// Idle polls per xenstore or console wait.
const SPIN: u64 = 50_000_000;

fn gpa<T>(r: &T) -> u64 {
    r as *const T as u64
}

fn e9(s: &[u8]) {
    for &b in s {
        // SAFETY: port 0xE9 is Xen's debug console port for HVM/PVH guests; an `out` to it has
        // no effect on memory.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") 0xE9u16, in("al") b, options(nostack, nomem))
        };
    }
}

/// The console: the PV console ring when set up, and port 0xE9 always.
struct Out<'a> {
    pv: Option<PvConsole<'a, EventChannel>>,
}

impl Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        e9(s.as_bytes());
        if let Some(pv) = self.pv.as_mut() {
            let _ = pv.write_bytes(s.as_bytes());
        }
        Ok(())
    }
}

/// Prints `PVH-CHECK <name> ok|fail <detail>` and evaluates to whether it passed.
macro_rules! check {
    ($out:expr, $name:expr, $ok:expr, $($fmt:tt)*) => {{
        let ok: bool = $ok;
        let _ = writeln!(
            $out,
            "PVH-CHECK {} {} {}",
            $name,
            if ok { "ok" } else { "fail" },
            format_args!($($fmt)*)
        );
        ok
    }};
}

fn off(hc: Option<Hypercalls>, out: &mut Out<'_>, reason: u32) -> ! {
    let _ = writeln!(out, "PVH-DONE");
    if let Some(pv) = out.pv.as_mut() {
        let _ = pv.flush();
    }
    if let Some(hc) = hc {
        let _ = hc.shutdown(reason);
    }
    loop {
        // SAFETY: `hlt` with interrupts disabled stops this vCPU; no memory effect.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}

/// Maps a guest frame of the identity-mapped first 4 GiB as a `T` made of atomics.
///
/// # Safety
///
/// `pfn` must be a frame that Xen set aside for the shared structure `T` (console or xenstore
/// page), not overlapping any Rust object, and `T` must consist of atomics only.
unsafe fn shared_page<T>(pfn: u64) -> Option<&'static T> {
    if pfn == 0 || pfn >= (1 << 32) / 4096 {
        return None;
    }
    // SAFETY: the entry code identity maps [0, 4 GiB) writable, so the frame is mapped at
    // `pfn * 4096`, page-aligned (enough for `T`'s atomics); per the caller it is a shared page
    // of type `T` that no Rust object overlaps, and atomics tolerate concurrent changes.
    Some(unsafe { &*((pfn * 4096) as *const T) })
}

/// Whether the command line in the `hvm_start_info` at `start_info` contains `word` (a
/// space-separated token).
fn cmdline_has(start_info: u64, word: &[u8]) -> bool {
    if start_info == 0 || start_info >= (1 << 32) - 32 || !start_info.is_multiple_of(8) {
        return false;
    }
    // SAFETY: the hvm_start_info lies in the identity-mapped first 4 GiB (checked above);
    // `cmdline_paddr` is the u64 at offset 24, read volatile and aligned.
    let p = unsafe { core::ptr::read_volatile((start_info + 24) as *const u64) };
    if p == 0 || p >= (1 << 32) - 256 {
        return false;
    }
    let mut buf = [0u8; 256];
    let mut len = 0;
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: `p + i` is below 4 GiB (checked: p < 4 GiB - 256, i < 256), identity mapped;
        // byte reads need no alignment.
        let c = unsafe { core::ptr::read_volatile((p + i as u64) as *const u8) };
        if c == 0 {
            break;
        }
        *b = c;
        len = i + 1;
    }
    buf.get(..len)
        .unwrap_or_default()
        .split(|&c| c == b' ')
        .any(|t| t == word)
}

/// The domain id in the `domid` node.
fn read_domid<D: Doorbell>(xs: &mut XsClient<'_, D>) -> Result<u32, XenError> {
    let d = xs.read_u64("domid")?;
    u32::try_from(d).map_err(|_| XenError::BadValue)
}

#[no_mangle]
extern "C" fn pvh_main(start_info: u64) -> ! {
    let mut out = Out { pv: None };
    let Some(xen) = xen::detect(xen::cpuid_native) else {
        let _ = writeln!(out, "PVH-CHECK xen_detect fail no Xen CPUID leaves");
        off(None, &mut out, xa::SHUTDOWN_CRASH);
    };
    // SAFETY: we run in ring 0 of a PVH guest of this Xen (the PHYS32 entry); HYPERCALL_PAGE is
    // a page-aligned page of this image reserved for the stubs, identity mapped (VA == GPA) and
    // executable (the 2 MiB mappings have no NX bit), used by nothing else.
    let installed = unsafe {
        Hypercalls::install(
            &xen,
            HYPERCALL_PAGE.0.as_ptr() as *mut u8,
            gpa(&HYPERCALL_PAGE),
        )
    };
    let Ok(hc) = installed else {
        let _ = writeln!(out, "PVH-CHECK hypercall_page fail no hypercall page");
        off(None, &mut out, xa::SHUTDOWN_CRASH);
    };
    // The PV console first, so that everything after shows up in the console log.
    let con_pfn = hc.hvm_get_param(xa::HVM_PARAM_CONSOLE_PFN);
    let con_port = hc.hvm_get_param(xa::HVM_PARAM_CONSOLE_EVTCHN);
    if let (Ok(pfn), Ok(port)) = (con_pfn, con_port) {
        // SAFETY: HVM_PARAM_CONSOLE_PFN names the console ring page the toolstack set aside
        // outside this image; ConsInterface is atomics only.
        if let Some(intf) = unsafe { shared_page::<ConsInterface>(pfn) } {
            out.pv = Some(PvConsole::new(
                intf,
                EventChannel {
                    hc,
                    port: port as u32,
                },
                SPIN,
            ));
        }
    }
    let _ = writeln!(out, "PVH-BEGIN");
    let magic = if start_info != 0 && start_info < (1 << 32) - 4 && start_info.is_multiple_of(4) {
        // SAFETY: Xen passes the hvm_start_info's address in EBX; it lies in the
        // identity-mapped first 4 GiB (checked) and 4 aligned bytes are read, volatile.
        unsafe { core::ptr::read_volatile(start_info as *const u32) }
    } else {
        0
    };
    check!(
        out,
        "start_info",
        magic == xa::HVM_START_MAGIC,
        "addr={start_info:#x} magic={magic:#x}"
    );
    check!(
        out,
        "xen_detect",
        true,
        "base={:#x} version={}.{} hypercall_msr={:#x}",
        xen.base,
        xen.major(),
        xen.minor(),
        xen.hypercall_msr
    );
    // A hypercall through the page that must succeed proves the page works.
    check!(
        out,
        "hypercall_page",
        con_pfn.is_ok(),
        "page={:#x} hvm_get_param={:?}",
        gpa(&HYPERCALL_PAGE),
        con_pfn
    );
    check!(
        out,
        "pv_console",
        out.pv.is_some(),
        "pfn={con_pfn:x?} evtchn={con_port:?}"
    );

    // Xenstore.
    let store_pfn = hc.hvm_get_param(xa::HVM_PARAM_STORE_PFN);
    let store_port = hc.hvm_get_param(xa::HVM_PARAM_STORE_EVTCHN);
    let intf = match store_pfn {
        // SAFETY: HVM_PARAM_STORE_PFN names the xenstore ring page the toolstack set aside
        // outside this image; XsInterface is atomics only.
        Ok(pfn) => unsafe { shared_page::<XsInterface>(pfn) },
        Err(_) => None,
    };
    check!(
        out,
        "store_params",
        intf.is_some() && store_port.is_ok(),
        "pfn={store_pfn:x?} evtchn={store_port:?}"
    );
    let (Some(intf), Ok(store_port)) = (intf, store_port) else {
        off(Some(hc), &mut out, xa::SHUTDOWN_POWEROFF);
    };
    let mut xs = XsClient::new(
        intf,
        EventChannel {
            hc,
            port: store_port as u32,
        },
        SPIN,
    );
    let domid = read_domid(&mut xs);
    check!(out, "xenstore_read_domid", domid.is_ok(), "domid={domid:?}");
    let Ok(domid) = domid else {
        off(Some(hc), &mut out, xa::SHUTDOWN_POWEROFF);
    };
    let node: StrBuf<64> =
        xen::format(format_args!("/local/domain/{domid}/data/pvh-check")).unwrap_or_default();
    let value: StrBuf<32> = xen::format(format_args!("hello from {domid}")).unwrap_or_default();
    let w = xs.write(node.as_str(), value.as_bytes());
    let mut back = [0u8; 64];
    let r = xs.read(node.as_str(), &mut back);
    let got = r.ok().and_then(|n| back.get(..n)).unwrap_or_default();
    check!(
        out,
        "xenstore_write_read",
        w.is_ok() && got == value.as_bytes(),
        "node={} write={w:?} read={:?}",
        node.as_str(),
        core::str::from_utf8(got).unwrap_or("<not utf-8>")
    );
    let missing = xs.read("data/pvh-check-missing", &mut back);
    check!(
        out,
        "xenstore_enoent",
        matches!(missing, Err(XenError::Store(e)) if e.as_str() == "ENOENT"),
        "read of a missing node: {missing:?}"
    );
    let denied = xs.write("/local/domain/0/pvh-check-denied", b"x");
    check!(
        out,
        "xenstore_eacces",
        matches!(denied, Err(XenError::Store(e)) if e.as_str() == "EACCES"),
        "write into dom0's directory: {denied:?}"
    );

    // Grant table frame 0 at GRANT_FRAME.
    let gt_gfn = gpa(&GRANT_FRAME) / 4096;
    // SAFETY: GRANT_FRAME is a page of this image that holds only grant entries (atomics);
    // after the call the frame is Xen's grant-table frame 0, which is what it describes.
    let mapped = unsafe { hc.map_grant_table_frame(0, gt_gfn) };
    let gt = GrantTable::new(&GRANT_FRAME.0);
    // The toolstack seeds reference 1 with the xenstore page for dom0 (xc_dom_gnttab_seed):
    // seeing it proves the frame now is the real grant table.
    let seeded = gt.entry(1);
    let store_frame = store_pfn.unwrap_or(0);
    check!(
        out,
        "grant_table_map",
        mapped.is_ok()
            && seeded.map(|(f, d, fr)| (f & 1, d, u64::from(fr))) == Some((1, 0, store_frame)),
        "gfn={gt_gfn:#x} add_to_physmap={mapped:?} ref1={seeded:x?} store_pfn={store_frame:#x}"
    );

    // An unbound event channel for dom0.
    let probe_port = hc.evtchn_alloc_unbound(0);
    check!(
        out,
        "evtchn_alloc_unbound",
        matches!(probe_port, Ok(p) if p != store_port as u32),
        "port={probe_port:?}"
    );

    // The handshake of appendix B: through `Pvabi::connect_xen`, or by hand for the
    // deliberately invalid keys of `bad-ring-order`.
    if cmdline_has(start_info, b"bad-ring-order") {
        invalid_handshake(&mut out, hc, &mut xs, &gt, domid);
        off(Some(hc), &mut out, xa::SHUTDOWN_POWEROFF);
    }
    let window = XenWindow {
        ring: &WINDOW.ring,
        window_gfn: gpa(&WINDOW) / 4096,
        window_pages: WINDOW_PAGES,
        index: &INDEX.0,
        index_gfn: gpa(&INDEX) / 4096,
        first_ref: FIRST_REF,
    };
    // SAFETY: the entry code identity maps the first 4 GiB, where this image lies, so the
    // address of any object of the kernel is its guest-physical address; the handle reads
    // guest memory only at addresses the host returns in shared areas, none here.
    let phys = unsafe { PhysReader::new(Translate::Identity) };
    let opts = XenConnectOptions {
        state_polls: STATE_POLLS,
        spin_limit: SPIN,
    };
    let connected = Pvabi::connect_xen(hc, &mut xs, &gt, &window, &phys, &opts);
    // One PVH-CHECK line per handshake step: the steps before the failed one passed.
    let failed_step = connected.as_ref().err().map(|e| e.step);
    let passed = |step: XenStep| match failed_step {
        None => true,
        Some(f) => (step as u32) < (f as u32),
    };
    let steps = [
        (XenStep::Backend, "handshake_backend_initwait"),
        (XenStep::GrantWindow, "handshake_grant_window"),
        (XenStep::EventChannel, "handshake_event_channel"),
        (XenStep::Layout, "handshake_layout"),
        (XenStep::Publish, "handshake_initialised"),
    ];
    for (step, name) in steps {
        if Some(step) == failed_step || passed(step) {
            let detail: StrBuf<256> = match &connected {
                Ok((_, c)) => step_detail(step, &c.backend, &c.keys),
                Err(e) if Some(step) == failed_step => {
                    xen::format(format_args!("{:?}", e.cause)).unwrap_or_default()
                }
                Err(e) => match (e.backend, e.keys) {
                    (Some(b), Some(k)) => step_detail(step, &b, &k),
                    _ => {
                        xen::format(format_args!("passed before {:?}", e.step)).unwrap_or_default()
                    }
                },
            };
            check!(out, name, passed(step), "{}", detail.as_str());
        }
    }
    match connected {
        Ok((pv, conn)) => {
            let _ = writeln!(out, "PVH-CONNECT connected");
            pvabi_checks(&mut out, &pv, domid);
            // XEN-12: Closing, the backend lets go of the window (state 6), then Closed.
            let closed = conn.close(&mut xs, STATE_POLLS);
            check!(
                out,
                "handshake_closed",
                closed.is_ok(),
                "state 5, backend state 6, state 6: {closed:?}"
            );
        }
        Err(e) => {
            match (e.step, e.cause, e.backend) {
                (XenStep::Connect, XenCause::Xen(XenError::Refused), Some(b)) => {
                    report_refusal(&mut out, &mut xs, &b)
                }
                _ => {
                    let _ = writeln!(out, "PVH-CONNECT failed {:?} {:?}", e.step, e.cause);
                }
            }
            abandon(&mut xs, domid);
        }
    }
    off(Some(hc), &mut out, xa::SHUTDOWN_POWEROFF)
}

/// The detail of a passed handshake step.
fn step_detail(step: XenStep, b: &BackendInfo, k: &FrontendKeys) -> StrBuf<256> {
    match step {
        XenStep::Backend => xen::format(format_args!(
            "dir={} id={} abi={:#x} features={:#x} max-window-pages={} max-ring-order={}",
            b.dir.as_str(),
            b.id,
            b.abi_version,
            b.features,
            b.max_window_pages,
            b.max_ring_order
        )),
        XenStep::GrantWindow => xen::format(format_args!(
            "window-gfn={:#x} pages={} index-ref={}",
            k.window_gfn, k.window_pages, k.window_index_ref
        )),
        XenStep::EventChannel => {
            xen::format(format_args!("port={} remote={}", k.event_channel, b.id))
        }
        XenStep::Layout => xen::format(format_args!(
            "ring-gpa={:#x} ring-order={} within the window",
            k.ring_gpa, k.ring_order
        )),
        _ => xen::format(format_args!("state=3")),
    }
    .unwrap_or_default()
}

/// Prints `PVH-CONNECT refused error=<the backend's reason>`.
fn report_refusal<D: Doorbell>(out: &mut Out<'_>, xs: &mut XsClient<'_, D>, b: &BackendInfo) {
    let mut why = [0u8; 200];
    let n = handshake::backend_error(xs, b, &mut why);
    let why = core::str::from_utf8(why.get(..n).unwrap_or_default()).unwrap_or("?");
    let _ = writeln!(out, "PVH-CONNECT refused error={why}");
}

/// The handshake by hand with a ring order above the backend's limit in the keys (the ring
/// header still says the real order), which the backend must refuse (`XEN-3`, `XEN-4`).
fn invalid_handshake<D: Doorbell>(
    out: &mut Out<'_>,
    hc: Hypercalls,
    xs: &mut XsClient<'_, D>,
    gt: &GrantTable<'_>,
    domid: u32,
) {
    let backend = handshake::read_backend(xs, domid, STATE_POLLS);
    let Ok(backend) = backend else {
        check!(out, "handshake_backend_initwait", false, "{backend:?}");
        return;
    };
    check!(
        out,
        "handshake_backend_initwait",
        true,
        "dir={} id={} abi={:#x} features={:#x} max-window-pages={} max-ring-order={}",
        backend.dir.as_str(),
        backend.id,
        backend.abi_version,
        backend.features,
        backend.max_window_pages,
        backend.max_ring_order
    );
    let window_gfn = gpa(&WINDOW) / 4096;
    let index_ref = handshake::grant_window(
        gt,
        backend.id,
        window_gfn,
        WINDOW_PAGES,
        &INDEX.0,
        gpa(&INDEX) / 4096,
        FIRST_REF,
    );
    check!(
        out,
        "handshake_grant_window",
        index_ref.is_ok(),
        "window-gfn={window_gfn:#x} pages={WINDOW_PAGES} index-ref={index_ref:?}"
    );
    let port = hc.evtchn_alloc_unbound(backend.id);
    check!(
        out,
        "handshake_event_channel",
        port.is_ok(),
        "port={port:?} remote={}",
        backend.id
    );
    let (Ok(index_ref), Ok(port)) = (index_ref, port) else {
        return;
    };
    init_header(&WINDOW.ring);
    let keys = FrontendKeys {
        window_gfn,
        window_pages: u64::from(WINDOW_PAGES),
        window_index_ref: index_ref,
        ring_gpa: gpa(&WINDOW.ring),
        ring_order: backend
            .max_ring_order
            .saturating_add(1)
            .min(u64::from(u32::MAX)) as u32,
        event_channel: port,
    };
    let layout = keys.check(backend.max_window_pages, backend.max_ring_order);
    check!(
        out,
        "handshake_layout",
        layout.is_err(),
        "deliberately invalid (bad-ring-order), the guest's own check says {layout:?}: {keys:?}"
    );
    let published = handshake::publish(xs, domid, &keys);
    check!(
        out,
        "handshake_initialised",
        published.is_ok(),
        "state=3 {published:?}"
    );
    if published.is_err() {
        return;
    }
    match handshake::wait_connected(xs, &backend, STATE_POLLS) {
        Ok(()) => {
            // A backend that accepted the invalid keys: the test sees no refusal.
            let _ = writeln!(out, "PVH-CONNECT connected");
            let _ = handshake::close(xs, domid, &backend, STATE_POLLS);
        }
        Err(XenError::Refused) => {
            report_refusal(out, xs, &backend);
            abandon(xs, domid);
        }
        Err(e) => {
            let _ = writeln!(out, "PVH-CONNECT failed {e}");
            abandon(xs, domid);
        }
    }
}

/// The kernel's calls through the typed API over the Xen ring: discovery's results,
/// BASE.GET_ABI_VERSION, a batch, CONSOLE.WRITE of a buffer inside the window, a STORE write
/// and read back, CONSOLE.WRITE of a buffer outside the window (XEN-7: not guest RAM for the
/// host) and the calls the ring refuses (RING-6).
fn pvabi_checks(out: &mut Out<'_>, pv: &Pvabi, domid: u32) {
    let info = pv.info();
    check!(
        out,
        "pvabi_discover",
        info.version.major == pvabi::ABI_VERSION.major
            && info.has_service(ServiceId::CONSOLE)
            && info.has_service(ServiceId::STORE)
            && info.vcpu_count >= 1,
        "version={:#x} features={:#x} vcpus={} backend={:?} vcpu={:?} services={:?}",
        info.version.to_u32(),
        info.features.bits(),
        info.vcpu_count,
        info.backend_id,
        info.boot_vcpu,
        info.service_functions
    );
    let v = pv.abi_version();
    check!(
        out,
        "ring_get_abi_version",
        matches!(v, Ok(v) if v.major == pvabi::ABI_VERSION.major),
        "{v:?}"
    );
    // Twelve calls in one batch: two chunks of the ring's eight slots, one notification each.
    let Gate::Ring(gate) = pv.gate() else {
        check!(out, "ring_batch", false, "the handle's gate is not a ring");
        return;
    };
    let calls = [pvabi::Regs::new(call::BASE_GET_ABI_VERSION, [0; 6]); 12];
    let mut rets = [pvabi::Ret::err(Status::FAILED); 12];
    let batch = gate.call_batch(&calls, &mut rets);
    let want = v.map(|v| u64::from(v.to_u32())).unwrap_or(u64::MAX);
    let good = rets
        .iter()
        .filter(|r| r.status == Status::SUCCESS && r.value == want)
        .count();
    check!(
        out,
        "ring_batch",
        batch.is_ok() && good == rets.len(),
        "{batch:?}: {good} of {} BASE.GET_ABI_VERSION answered {want:#x} in chunks of {}",
        rets.len(),
        gate.slots()
    );
    let Some(buf) = WINDOW.data.0.take() else {
        check!(
            out,
            "ring_console_write",
            false,
            "window buffer taken twice"
        );
        return;
    };
    let msg = b"pvabi console write through the Xen ring\n";
    let (text, rest) = buf.split_at_mut(msg.len());
    text.copy_from_slice(msg);
    let w = pv.console().write(text);
    check!(
        out,
        "ring_console_write",
        w == Ok(msg.len()),
        "{w:?} (CONS-1: the length {})",
        msg.len()
    );
    // STORE-5/STORE-3 over the ring: the backend stores it at /local/domain/D/pvabi/pvh-check
    // (XEN-10), where dom0 reads it too. Path, value and buffer all lie in the window.
    let path = b"pvh-check";
    let (p, rest) = rest.split_at_mut(path.len());
    p.copy_from_slice(path);
    let value: StrBuf<64> =
        xen::format(format_args!("written through pvabi by domain {domid}")).unwrap_or_default();
    let (val, rest) = rest.split_at_mut(value.as_bytes().len());
    val.copy_from_slice(value.as_bytes());
    let (back, _) = rest.split_at_mut(128);
    back.fill(0);
    let wr = pv.store_write(p, val, None);
    let rd = pv.store_read(p, back, None);
    let got = rd.ok().and_then(|n| back.get(..n)).unwrap_or_default();
    check!(
        out,
        "pvabi_store_write_read",
        wr.is_ok() && got == value.as_bytes(),
        "write={wr:?} read={rd:?} {:?}",
        core::str::from_utf8(got).unwrap_or("<not utf-8>")
    );
    let o = pv.console().write(&OUTSIDE);
    check!(
        out,
        "ring_outside_window_refused",
        o == Err(Status::INVALID_ADDRESS),
        "{o:?} (XEN-7 and CONS-5: INVALID_ADDRESS for a buffer at {:#x}, outside the window)",
        OUTSIDE.as_ptr() as u64
    );
    // RING-6: calls the ring refuses fail at once; their Xen equivalents are hypercalls.
    let block = pv.vcpu_block(None);
    let shut = pv.power_off(0);
    check!(
        out,
        "pvabi_refused_calls",
        block == Err(Status::INVALID_PARAM) && shut == Status::INVALID_PARAM,
        "VCPU.BLOCK {block:?}, POWER.SHUTDOWN {shut:?} (RING-6: INVALID_PARAM, not sent)"
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Out { pv: None }, "PVH-PANIC {info}");
    loop {
        // SAFETY: `hlt` stops this vCPU; no memory effect.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}

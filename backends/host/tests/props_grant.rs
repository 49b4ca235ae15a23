//! Property tests: the grant table (spec chapter 10, `HAR-10`, `HAR-15`..`HAR-17`) against a
//! model. The guest writes entries and page contents at will (revoking, re-granting, making
//! entries read-only, naming pages in holes or beyond RAM); every host access through the
//! `Vm` API and through HARNESS.GRANT_ACCESS must agree with the model in status and bytes,
//! every access re-reads the entry (`GNT-5`), and nothing but the granted byte range is ever
//! written.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::TestPlatform;
use proptest::prelude::*;
use pvabi::call::*;
use pvabi::grant::GrantEntry;
use pvabi::harness::GRANT_ACCESS_READ;
use pvabi::{Regs, Ret, Status, PAGE_SIZE};
use pvabi_host::{GuestRam, HostError, Outcome, Vm, VmConfig};
use zerocopy::FromBytes;

/// RAM: 64 KiB at 0, a hole, 16 KiB at 0x20000.
const REGIONS: [(u64, u64); 2] = [(0, 0x1_0000), (0x2_0000, 0x4000)];
const TABLE: u64 = 0x1000;

#[derive(Clone, Debug)]
enum Op {
    Setup {
        entries: u64,
        gpa: u64,
    },
    Entry {
        index: u64,
        flags: u16,
        domid: u32,
        gfn: u64,
    },
    Fill {
        page: u64,
        byte: u8,
    },
    HostRead {
        gref: u32,
        off: u64,
        len: usize,
    },
    HostWrite {
        gref: u32,
        off: u64,
        data: Vec<u8>,
    },
    Harness {
        gref: u64,
        off: u64,
        write: u64,
    },
}

fn gfn() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 2u64..16,           // RAM A (not the table page 1)
        2 => 0x20u64..0x24,      // RAM B
        1 => 0x10u64..0x20,      // the hole
        1 => 0x24u64..0x40,      // beyond RAM
        1 => Just(u64::MAX >> 11), // gfn * 4096 overflows
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let gref = prop_oneof![8 => 0u32..12, 1 => Just(u32::MAX), 1 => 4095u32..4097];
    prop_oneof![
        1 => (prop_oneof![0u64..12, Just(4096u64), Just(4097u64)],
              prop_oneof![8 => Just(TABLE), 1 => Just(TABLE + 8), 1 => Just(0xfff0u64), 1 => Just(0x1_8000u64)])
            .prop_map(|(entries, gpa)| Op::Setup { entries, gpa }),
        3 => (0u64..12,
              prop_oneof![Just(0u16), Just(1), Just(2), Just(3), Just(5), Just(0x8001), any::<u16>()],
              prop_oneof![4 => Just(0u32), 1 => Just(1u32), 1 => any::<u32>()],
              gfn())
            .prop_map(|(index, flags, domid, gfn)| Op::Entry { index, flags, domid, gfn }),
        1 => (gfn(), any::<u8>()).prop_map(|(page, byte)| Op::Fill { page, byte }),
        3 => (gref.clone(), prop_oneof![0u64..16, 4080u64..4100, Just(u64::MAX - 2)], 0usize..24)
            .prop_map(|(gref, off, len)| Op::HostRead { gref, off, len }),
        3 => (gref.clone(), prop_oneof![0u64..16, 4088u64..4100], proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(gref, off, data)| Op::HostWrite { gref, off, data }),
        3 => (prop_oneof![8 => 0u64..12, 1 => Just(1u64 << 32)],
              prop_oneof![0u64..8, 4094u64..4098],
              prop_oneof![Just(GRANT_ACCESS_READ), 0u64..256, Just(256u64), Just(u64::MAX - 1)])
            .prop_map(|(gref, off, write)| Op::Harness { gref, off, write }),
    ]
}

/// The host-side state the model needs; entries are read from the model's copy of guest
/// memory, which the test checks against the real one after every step.
#[derive(Default)]
struct Model {
    table: Option<(u64, u64)>,
}

fn in_ram(gpa: u64, len: u64) -> bool {
    REGIONS
        .iter()
        .any(|(b, l)| gpa >= *b && gpa.checked_add(len).is_some_and(|e| e <= b + l))
}

impl Model {
    /// The granted page's GPA for an access, or the status the spec names.
    fn lookup(&self, mem: &[u8], gref: u64, write: bool) -> Result<u64, Status> {
        let (table, n) = self.table.ok_or(Status::BAD_STATE)?;
        if gref >= n {
            return Err(Status::INVALID_PARAM);
        }
        let at = G::offset_of(table + gref * 16);
        let e = GrantEntry::read_from_bytes(&mem[at..at + 16]).expect("16 bytes");
        if e.flags & GrantEntry::FLAG_VALID == 0 || e.flags & !GrantEntry::FLAGS_KNOWN != 0 {
            return Err(Status::DENIED);
        }
        if e.domid != GrantEntry::DOMID_HOST {
            return Err(Status::DENIED);
        }
        if write && e.flags & GrantEntry::FLAG_READONLY != 0 {
            return Err(Status::DENIED);
        }
        let gpa = e
            .gfn
            .checked_mul(PAGE_SIZE)
            .ok_or(Status::INVALID_ADDRESS)?;
        if !in_ram(gpa, PAGE_SIZE) {
            return Err(Status::INVALID_ADDRESS);
        }
        Ok(gpa)
    }
}

struct G {
    vm: Vm,
    ram: GuestRam,
}

impl G {
    fn new() -> Self {
        let ram = GuestRam::from_ranges(&[
            (REGIONS[0].0, REGIONS[0].1 as usize),
            (REGIONS[1].0, REGIONS[1].1 as usize),
        ])
        .expect("ram");
        let p = Arc::new(TestPlatform::default());
        p.now.store(1_000, Ordering::SeqCst);
        let mut cfg = VmConfig::new(1);
        cfg.harness = true;
        let vm = Vm::new(cfg, ram.clone(), p).expect("vm");
        G { vm, ram }
    }
    fn call(&self, id: pvabi::CallId, args: [u64; 6]) -> Ret {
        match self.vm.handle_call(0, &Regs::new(id, args)) {
            Outcome::Return(r) => r,
            o => panic!("{o:?}"),
        }
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (b, l) in REGIONS {
            let mut v = vec![0; l as usize];
            self.ram.read_into(b, &mut v).expect("own RAM");
            out.extend(v);
        }
        out
    }
    fn offset_of(gpa: u64) -> usize {
        if gpa >= REGIONS[1].0 {
            (REGIONS[0].1 + gpa - REGIONS[1].0) as usize
        } else {
            gpa as usize
        }
    }
}

fn status(e: HostError) -> Status {
    match e {
        HostError::Status(s) => s,
        other => panic!("unexpected host error {other:?}"),
    }
}

fn st(r: Result<(), HostError>) -> Result<(), Status> {
    r.map_err(status)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn grant_table_matches_model(ops in proptest::collection::vec(op(), 1..50)) {
        let g = G::new();
        let mut m = Model::default();
        for op in &ops {
            let before = g.snapshot();
            let mut expect_after = before.clone();
            match op {
                Op::Setup { entries, gpa } => {
                    let r = g.call(GRANT_SETUP_TABLE, [*gpa, *entries, 0, 0, 0, 0]);
                    let want = if *entries > pvabi::grant::MAX_ENTRIES {
                        Err(Status::INVALID_PARAM)
                    } else if *entries == 0 {
                        Ok(None)
                    } else if gpa % 16 != 0 || !in_ram(*gpa, entries * 16) {
                        Err(Status::INVALID_ADDRESS)
                    } else {
                        Ok(Some(*entries))
                    };
                    match want {
                        Ok(t) => {
                            prop_assert_eq!(r, Ret::ok(0));
                            m.table = t.map(|n| (*gpa, n));
                        }
                        Err(s) => prop_assert_eq!(r, Ret::err(s)),
                    }
                }
                Op::Entry { index, flags, domid, gfn } => {
                    let e = GrantEntry { flags: *flags, _reserved: 0, domid: *domid, gfn: *gfn };
                    g.ram.write_obj(TABLE + index * 16, &e).expect("table in RAM");
                    let at = G::offset_of(TABLE + index * 16);
                    expect_after[at..at + 16].copy_from_slice(zerocopy::IntoBytes::as_bytes(&e));
                }
                Op::Fill { page, byte } => {
                    let gpa = page.saturating_mul(PAGE_SIZE);
                    if in_ram(gpa, PAGE_SIZE) && *page != 1 {
                        g.ram.write_bytes(gpa, &vec![*byte; PAGE_SIZE as usize]).expect("fill");
                        let at = G::offset_of(gpa);
                        expect_after[at..at + PAGE_SIZE as usize].fill(*byte);
                    }
                }
                Op::HostRead { gref, off, len } => {
                    let mut buf = vec![0xEEu8; *len];
                    let r = st(g.vm.grant_read(*gref, *off, &mut buf));
                    let want = m.lookup(&before, *gref as u64, false).and_then(|gpa| {
                        if off.checked_add(*len as u64).is_none_or(|e| e > PAGE_SIZE) {
                            Err(Status::INVALID_PARAM)
                        } else {
                            Ok(gpa)
                        }
                    });
                    match want {
                        Ok(gpa) => {
                            prop_assert_eq!(r, Ok(()));
                            let at = G::offset_of(gpa + off);
                            prop_assert_eq!(&buf[..], &before[at..at + len]);
                        }
                        Err(s) => prop_assert_eq!(r, Err(s)),
                    }
                    let mapped = g.vm.grant_map(*gref, false).map_err(status);
                    let want = m.lookup(&before, *gref as u64, false);
                    prop_assert_eq!(mapped.map(|x| x.gpa), want);
                }
                Op::HostWrite { gref, off, data } => {
                    let r = st(g.vm.grant_write(*gref, *off, data));
                    let want = m.lookup(&before, *gref as u64, true).and_then(|gpa| {
                        if off + data.len() as u64 > PAGE_SIZE {
                            Err(Status::INVALID_PARAM)
                        } else {
                            Ok(gpa)
                        }
                    });
                    match want {
                        Ok(gpa) => {
                            prop_assert_eq!(r, Ok(()));
                            let at = G::offset_of(gpa + off);
                            expect_after[at..at + data.len()].copy_from_slice(data);
                        }
                        Err(s) => prop_assert_eq!(r, Err(s)),
                    }
                }
                Op::Harness { gref, off, write } => {
                    let r = g.call(HARNESS_GRANT_ACCESS, [*gref, *off, *write, 0, 0, 0]);
                    let is_write = *write != GRANT_ACCESS_READ;
                    let want = if *off >= PAGE_SIZE || (is_write && *write > 255) || *gref > u32::MAX as u64 {
                        Err(Status::INVALID_PARAM)
                    } else {
                        m.lookup(&before, *gref, is_write)
                    };
                    match want {
                        Ok(gpa) => {
                            let at = G::offset_of(gpa + off);
                            if is_write {
                                prop_assert_eq!(r, Ret::ok(0));
                                expect_after[at] = *write as u8;
                            } else {
                                prop_assert_eq!(r, Ret::ok(before[at] as u64));
                            }
                        }
                        Err(s) => prop_assert_eq!(r, Ret::err(s)),
                    }
                }
            }
            // The host wrote exactly the granted bytes, never the table or anything else.
            prop_assert!(g.snapshot() == expect_after, "guest RAM differs from the model after {:?}", op);
        }
    }
}

//! The cases, one module per spec chapter. Each module exports `CASES` (ordinary cases),
//! `TERMINAL` (cases that end the guest) and `FUNCTIONS` (guest functions its cases pass as
//! vCPU entries or callbacks).

use crate::{Case, GuestEntry, TerminalCase};

pub mod base;
pub mod clock;
pub mod console;
pub mod conv;
pub mod discovery;
pub mod event;
pub mod gates;
pub mod grant;
pub mod harness;
pub mod memory;
pub mod multicall;
pub mod power;
pub mod ring;
pub mod security;
pub mod store;
pub mod vcpu;
pub mod version;

/// Every chapter's cases, in spec order: (chapter name, cases).
pub const CHAPTERS: &[(&str, &[Case])] = &[
    ("VER", version::CASES),
    ("DISC", discovery::CASES),
    ("CONV", conv::CASES),
    ("GATE", gates::CASES),
    ("RING", ring::CASES),
    ("BASE", base::CASES),
    ("CONS", console::CASES),
    ("CLK", clock::CASES),
    ("VCPU", vcpu::CASES),
    ("EVT", event::CASES),
    ("MEM", memory::CASES),
    ("GNT", grant::CASES),
    ("STORE", store::CASES),
    ("PWR", power::CASES),
    ("MC", multicall::CASES),
    ("SEC", security::CASES),
    ("HAR", harness::CASES),
];

/// Every chapter's terminal cases.
pub const TERMINAL: &[&[TerminalCase]] = &[
    power::TERMINAL,
    vcpu::TERMINAL,
    event::TERMINAL,
    security::TERMINAL,
];

/// Guest functions the cases use as vCPU entries or callbacks, per chapter.
pub const FUNCTIONS: &[&[GuestEntry]] = &[
    base::FUNCTIONS,
    console::FUNCTIONS,
    vcpu::FUNCTIONS,
    event::FUNCTIONS,
    clock::FUNCTIONS,
    store::FUNCTIONS,
    security::FUNCTIONS,
];

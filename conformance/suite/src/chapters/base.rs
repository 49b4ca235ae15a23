//! BASE (spec chapter 4).

use pvabi::{call, ServiceId, Status, ABI_VERSION};

use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "base::abi_version",
        clauses: "BASE-1",
        run: abi_version,
    },
    Case {
        name: "base::unknown_function",
        clauses: "CONV-7",
        run: unknown_function,
    },
];

fn abi_version(c: &mut Ctx<'_>) {
    if let Some(v) = c.expect_ok(c.pv.abi_version(), "BASE.GET_ABI_VERSION") {
        c.check(
            v.major == ABI_VERSION.major,
            format_args!("major {} != {}", v.major, ABI_VERSION.major),
        );
    }
}

fn unknown_function(c: &mut Ctx<'_>) {
    let ret = c.raw(pvabi::CallId::new(ServiceId::BASE, 0x7fff), [0; 6]);
    c.expect_status(ret, Status::NOT_SUPPORTED, "BASE function 0x7fff");
    let _ = call::BASE_GET_ABI_VERSION;
}

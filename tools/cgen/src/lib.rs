//! Generator of `guest/include/pvabi.h`, the C view of the pvabi ABI.
//!
//! Everything in the header comes from the `pvabi` crate: call ids from
//! [`pvabi::call::CALLS`], statuses from [`pvabi::Status::ALL`], discovery constants, feature
//! bits, service limits and flags from the service modules, and every shared-memory layout from
//! [`pvabi::layout::LAYOUTS`]. Field types are derived from the Rust field types
//! ([`ctype::struct_maps`]) and checked against `LAYOUTS` before anything is written: a C struct
//! that would differ from the Rust layout makes [`generate`] panic.
//!
//! The header is checked in; a test regenerates it in memory and fails when the file differs.
//! Regenerate with `cargo run -p pvabi-cgen -- --write` (or `PVABI_BLESS=1 cargo test -p
//! pvabi-cgen`).
//!
//! [`probe`] builds a C program that prints, from C, every size, alignment, offset and
//! constant, and checks its output against the crate; the crate's tests compile and run it
//! with gcc.
//!
//! ```
//! let h = pvabi_cgen::generate();
//! assert!(h.contains("#define PVABI_CALL_CONSOLE_WRITE 0x00010000u"));
//! assert!(h.contains("_Static_assert(sizeof(struct pvabi_clock_page) == 32"));
//! ```

use std::path::{Path, PathBuf};

pub mod consts;
pub mod ctype;
mod gates;
pub mod probe;

/// The command that rewrites the checked-in header.
pub const REGENERATE: &str = "cargo run -p pvabi-cgen -- --write";

/// Path of the checked-in header: `guest/include/pvabi.h` in the workspace.
pub fn header_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // tools/cgen -> the workspace root.
    let root = manifest.ancestors().nth(2).unwrap_or(manifest);
    root.join("guest").join("include").join("pvabi.h")
}

/// Produces the full text of `pvabi.h`.
///
/// # Panics
///
/// Panics when the C structs derived from the Rust field types would not reproduce a size,
/// alignment or offset of [`pvabi::layout::LAYOUTS`] (see [`ctype::check_type_map`]).
pub fn generate() -> String {
    let structs = ctype::checked_structs();
    let v = pvabi::ABI_VERSION;
    let mut h = String::new();
    h.push_str(&format!(
        "/* SPDX-License-Identifier: MIT OR Apache-2.0 */\n\
         /*\n \
         * pvabi.h: the C view of the pvabi paravirtualization ABI, version {v}.\n \
         *\n \
         * GENERATED from the `pvabi` crate by pvabi-cgen. Do not edit; regenerate with\n \
         *     {REGENERATE}\n \
         *\n \
         * All multi-byte values in shared memory are little-endian (CONV-9). The layouts are\n \
         * the x86_64 (LP64) ones; every size, alignment and field offset is asserted below.\n \
         * Clause ids (CONV-1, CLK-1, ...) refer to the pvabi specification.\n \
         */\n\
         #ifndef PVABI_H\n\
         #define PVABI_H\n\
         \n\
         #include <stddef.h>\n\
         #include <stdint.h>\n\
         \n\
         #ifdef __cplusplus\n\
         /* C++ spells the C11 keywords used below differently. */\n\
         #ifndef _Static_assert\n\
         #define _Static_assert static_assert\n\
         #endif\n\
         #ifndef _Alignof\n\
         #define _Alignof alignof\n\
         #endif\n\
         extern \"C\" {{\n\
         #endif\n\n"
    ));

    for g in consts::const_groups() {
        h.push_str(&format!("/* {} */\n", g.title));
        for c in &g.consts {
            if !c.doc.is_empty() {
                h.push_str(&format!("/** {} */\n", c.doc));
            }
            h.push_str(&format!("#define {} {}\n", c.name, c.value.literal()));
        }
        h.push('\n');
    }

    h.push_str(&call_id_helpers());

    h.push_str("/* Shared-memory layouts (pvabi::layout::LAYOUTS) */\n\n");
    for s in &structs {
        h.push_str(&format!(
            "/** Rust `{}`: {} bytes, {}-byte aligned. */\n",
            s.rust_name, s.size, s.align
        ));
        h.push_str(&format!("struct {} {{\n", s.c_name));
        for f in &s.fields {
            h.push_str(&format!("    {};\n", f.ty.declare(f.name)));
        }
        match s.aligned_attr {
            Some(a) => h.push_str(&format!("}} __attribute__((aligned({a})));\n")),
            None => h.push_str("};\n"),
        }
        h.push_str(&format!(
            "_Static_assert(sizeof(struct {n}) == {size}, \"size of struct {n}\");\n\
             _Static_assert(_Alignof(struct {n}) == {align}, \"alignment of struct {n}\");\n",
            n = s.c_name,
            size = s.size,
            align = s.align
        ));
        for f in &s.fields {
            h.push_str(&format!(
                "_Static_assert(offsetof(struct {n}, {f}) == {o}, \"offset of {n}.{f}\");\n",
                n = s.c_name,
                f = f.name,
                o = f.offset
            ));
        }
        h.push('\n');
    }

    h.push_str(&gates::gate_section());
    h.push_str(
        "\n#ifdef __cplusplus\n\
         } /* extern \"C\" */\n\
         #endif\n\
         \n\
         #endif /* PVABI_H */\n",
    );
    h
}

/// Macros that build and split call ids, with a compile-time check that every call id macro
/// is its service and function put together.
fn call_id_helpers() -> String {
    let mut h = String::from(
        "/* Building and splitting call ids (CONV-1) */\n\
         /** The call id of `function` of `service`. */\n\
         #define PVABI_CALL_ID(service, function) \\\n    \
         ((((uint32_t)(service)) << 16) | ((uint32_t)(function) & 0xffffu))\n\
         /** The service id of a call id. */\n\
         #define PVABI_CALL_SERVICE(call_id) ((uint32_t)(call_id) >> 16)\n\
         /** The function number of a call id. */\n\
         #define PVABI_CALL_FUNCTION(call_id) ((uint32_t)(call_id) & 0xffffu)\n\
         _Static_assert(PVABI_ABI_VERSION == \
         ((PVABI_ABI_VERSION_MAJOR << 16) | PVABI_ABI_VERSION_MINOR), \"ABI version encoding\");\n",
    );
    for ci in pvabi::call::CALLS {
        let service = ci
            .id
            .service()
            .name()
            .unwrap_or_else(|| panic!("call {} has an unnamed service", ci.name));
        h.push_str(&format!(
            "_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_{service}, {f}) == {m}, \"{m}\");\n",
            f = ci.id.function(),
            m = consts::call_macro(ci.name)
        ));
    }
    h.push('\n');
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_field_has_an_offset_assert() {
        let h = generate();
        for l in pvabi::layout::LAYOUTS {
            let n = ctype::c_struct_name(l.name);
            assert!(h.contains(&format!("struct {n} {{\n")), "{n}");
            assert!(h.contains(&format!("sizeof(struct {n}) == {},", l.size)));
            for f in l.fields {
                assert!(
                    h.contains(&format!(
                        "offsetof(struct {n}, {}) == {},",
                        f.name, f.offset
                    )),
                    "{n}.{}",
                    f.name
                );
            }
        }
        assert!(h.contains("int8_t tsc_shift;"));
        assert!(h.contains("struct pvabi_vcpu_event_info vcpu[16];"));
        assert!(h.contains("#define PVABI_STATUS_NOT_SUPPORTED (-1)\n"));
    }

    #[test]
    fn header_path_points_into_the_guest_crate() {
        let p = header_path();
        assert!(p.ends_with("guest/include/pvabi.h"));
        assert!(p
            .parent()
            .and_then(|d| d.parent())
            .is_some_and(|g| g.join("Cargo.toml").is_file()));
    }
}

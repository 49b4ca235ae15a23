//! C types of layout fields, derived from the Rust field types, and the check that the C
//! structs built from them reproduce every size, alignment and offset in
//! [`pvabi::layout::LAYOUTS`].
//!
//! The field types are not written by hand: [`struct_maps`] names each field once and the Rust
//! compiler supplies its type through the [`CRepr`] trait. [`check_type_map`] then lays the
//! fields out by the C rules (each field at the next multiple of its alignment, the struct
//! rounded up to its alignment) and compares the result with `LAYOUTS`; any difference is an
//! error, and [`crate::generate`] panics on it rather than write a header that disagrees.

use pvabi::layout::{LayoutInfo, LAYOUTS};

/// The C type of one field (x86_64 / LP64 sizes and alignments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CType {
    /// `uint8_t`.
    U8,
    /// `int8_t`.
    I8,
    /// `uint16_t`.
    U16,
    /// `uint32_t`.
    U32,
    /// `int32_t`.
    I32,
    /// `uint64_t`.
    U64,
    /// `int64_t`.
    I64,
    /// An array of `len` elements.
    Array(Box<CType>, usize),
    /// Another layout, by its Rust name in `LAYOUTS` (emitted as `struct pvabi_<snake>`).
    Struct(&'static str),
}

impl CType {
    /// Size in bytes, or `None` for a struct that `layouts` does not describe.
    pub fn size(&self, layouts: &[LayoutInfo]) -> Option<usize> {
        Some(match self {
            CType::U8 | CType::I8 => 1,
            CType::U16 => 2,
            CType::U32 | CType::I32 => 4,
            CType::U64 | CType::I64 => 8,
            CType::Array(elem, len) => elem.size(layouts)?.checked_mul(*len)?,
            CType::Struct(name) => find(layouts, name)?.size,
        })
    }

    /// Alignment in bytes, or `None` for a struct that `layouts` does not describe.
    pub fn align(&self, layouts: &[LayoutInfo]) -> Option<usize> {
        match self {
            CType::Array(elem, _) => elem.align(layouts),
            CType::Struct(name) => Some(find(layouts, name)?.align),
            scalar => scalar.size(layouts),
        }
    }

    /// The element type name: `uint32_t`, `struct pvabi_upcall_frame`, ...
    fn base_name(&self) -> String {
        match self {
            CType::U8 => "uint8_t".into(),
            CType::I8 => "int8_t".into(),
            CType::U16 => "uint16_t".into(),
            CType::U32 => "uint32_t".into(),
            CType::I32 => "int32_t".into(),
            CType::U64 => "uint64_t".into(),
            CType::I64 => "int64_t".into(),
            CType::Array(elem, _) => elem.base_name(),
            CType::Struct(name) => format!("struct {}", c_struct_name(name)),
        }
    }

    /// A C declaration of `name` with this type, e.g. `uint64_t args[6]`.
    pub fn declare(&self, name: &str) -> String {
        let mut dims = String::new();
        let mut t = self;
        while let CType::Array(elem, len) = t {
            dims.push_str(&format!("[{len}]"));
            t = elem;
        }
        format!("{} {name}{dims}", self.base_name())
    }

    /// The layouts this type refers to (directly or through arrays).
    fn struct_ref(&self) -> Option<&'static str> {
        match self {
            CType::Array(elem, _) => elem.struct_ref(),
            CType::Struct(name) => Some(name),
            _ => None,
        }
    }
}

/// Rust types that have a C counterpart in the header.
pub trait CRepr {
    /// The C type of `Self`.
    fn c_type() -> CType;
}

macro_rules! scalar {
    ($($t:ty => $c:ident),* $(,)?) => {
        $(impl CRepr for $t {
            fn c_type() -> CType {
                CType::$c
            }
        })*
    };
}

scalar!(u8 => U8, i8 => I8, u16 => U16, u32 => U32, i32 => I32, u64 => U64, i64 => I64);

impl<T: CRepr, const N: usize> CRepr for [T; N] {
    fn c_type() -> CType {
        CType::Array(Box::new(T::c_type()), N)
    }
}

macro_rules! layout_struct {
    ($($t:path => $name:literal),* $(,)?) => {
        $(impl CRepr for $t {
            fn c_type() -> CType {
                CType::Struct($name)
            }
        })*
    };
}

// Layout types that appear as fields of other layouts.
layout_struct!(
    pvabi::event::UpcallFrame => "UpcallFrame",
    pvabi::event::VcpuEventInfo => "VcpuEventInfo",
);

/// The C type of a field, from a projection closure that is never called.
fn field_type<S, T: CRepr>(_: fn(&S) -> &T) -> CType {
    T::c_type()
}

/// The fields of one layout with their C types, as the generator will emit them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructMap {
    /// Rust type name, as in [`LayoutInfo::name`].
    pub name: &'static str,
    /// Field names and C types, in declaration order.
    pub fields: Vec<(&'static str, CType)>,
}

macro_rules! map {
    ($ty:path, $name:literal, [$($f:ident),* $(,)?]) => {
        StructMap {
            name: $name,
            fields: vec![$((stringify!($f), field_type::<$ty, _>(|s: &$ty| &s.$f))),*],
        }
    };
}

/// The type map of every layout: field names listed once, field types taken from the Rust
/// types by the compiler. [`check_type_map`] verifies it against `LAYOUTS`.
pub fn struct_maps() -> Vec<StructMap> {
    use pvabi::{clock, discovery, event, grant, harness, memory, multicall, power, ring, store};
    vec![
        map!(
            discovery::BootInfo,
            "BootInfo",
            [
                magic,
                abi_version,
                size,
                gate_kind,
                gate_param,
                features,
                vcpu_count,
                boot_vcpu,
                mem_map_gpa,
                mem_map_entries,
                exec_mode,
                cmdline_gpa,
                cmdline_len,
                backend_id,
                mem_size,
                _reserved
            ]
        ),
        map!(
            memory::MemMapEntry,
            "MemMapEntry",
            [base, length, kind, _reserved]
        ),
        map!(
            clock::ClockPage,
            "ClockPage",
            [
                version,
                _reserved0,
                tsc_timestamp,
                system_time,
                tsc_to_system_mul,
                tsc_shift,
                flags,
                _reserved1
            ]
        ),
        map!(
            pvabi::vcpu::StealTime,
            "StealTime",
            [steal, version, flags, preempted, _reserved0, _reserved1]
        ),
        map!(
            event::UpcallFrame,
            "UpcallFrame",
            [rip, rsp, rflags, rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11, _reserved]
        ),
        map!(
            event::VcpuEventInfo,
            "VcpuEventInfo",
            [selector, upcall_pending, upcall_mask, _reserved, frame]
        ),
        map!(
            event::EventPage,
            "EventPage",
            [pending, mask, vcpu, _reserved]
        ),
        map!(
            grant::GrantEntry,
            "GrantEntry",
            [flags, _reserved, domid, gfn]
        ),
        map!(
            store::WatchEvent,
            "WatchEvent",
            [watch_id, path_len, dropped, _reserved]
        ),
        map!(
            power::CrashHeader,
            "CrashHeader",
            [magic, message_len, code, rip, _reserved]
        ),
        map!(
            multicall::MulticallEntry,
            "MulticallEntry",
            [call_id, flags, args, status, value]
        ),
        map!(
            ring::RingHeader,
            "RingHeader",
            [
                magic,
                order,
                req_prod,
                req_cons,
                cmp_prod,
                cmp_cons,
                host_polling,
                _reserved0,
                _reserved1
            ]
        ),
        map!(
            ring::RingRequest,
            "RingRequest",
            [cookie, call_id, args, _reserved]
        ),
        map!(
            ring::RingCompletion,
            "RingCompletion",
            [cookie, _reserved, status, value]
        ),
        map!(
            harness::ReportHeader,
            "ReportHeader",
            [magic, outcome, clauses_len, name_len, detail_len, _reserved]
        ),
    ]
}

/// One field of a checked C struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CField {
    /// Field name (the Rust name).
    pub name: &'static str,
    /// C type.
    pub ty: CType,
    /// Byte offset under the C layout rules (equal to the Rust offset once checked).
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// A C struct whose layout has been checked against `LAYOUTS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CStruct {
    /// Rust type name.
    pub rust_name: &'static str,
    /// C tag: `pvabi_<snake_case>`.
    pub c_name: String,
    /// Size in bytes.
    pub size: usize,
    /// Alignment in bytes.
    pub align: usize,
    /// `Some(n)` when the Rust alignment exceeds the fields' natural one and the struct needs
    /// `__attribute__((aligned(n)))`.
    pub aligned_attr: Option<usize>,
    /// Fields in order.
    pub fields: Vec<CField>,
}

/// The C struct tag of a Rust layout name: `ClockPage` becomes `pvabi_clock_page`.
pub fn c_struct_name(rust_name: &str) -> String {
    let mut s = String::from("pvabi_");
    for (i, ch) in rust_name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(ch.to_ascii_lowercase());
        } else {
            s.push(ch);
        }
    }
    s
}

fn find<'a>(layouts: &'a [LayoutInfo], name: &str) -> Option<&'a LayoutInfo> {
    layouts.iter().find(|l| l.name == name)
}

fn align_up(v: usize, align: usize) -> usize {
    v.div_ceil(align) * align
}

/// Checks `maps` against `layouts` and returns the C structs in an order in which every struct
/// is declared before it is used.
///
/// # Errors
///
/// Returns every disagreement found, one per line: a layout without a map or a map without a
/// layout, field names or order that differ, a field whose C size differs from the Rust size,
/// a C offset or struct size or alignment that differs, a Rust alignment below the fields'
/// natural one (not expressible without `packed`), or struct references that cannot be ordered.
pub fn check_type_map(layouts: &[LayoutInfo], maps: &[StructMap]) -> Result<Vec<CStruct>, String> {
    let mut errors = Vec::new();
    let mut structs = Vec::new();
    for m in maps {
        if find(layouts, m.name).is_none() {
            errors.push(format!("type map has `{}`, which LAYOUTS lacks", m.name));
        }
    }
    for l in layouts {
        let Some(m) = maps.iter().find(|m| m.name == l.name) else {
            errors.push(format!(
                "LAYOUTS has `{}` but the type map lacks it",
                l.name
            ));
            continue;
        };
        let rust_names: Vec<_> = l.fields.iter().map(|f| f.name).collect();
        let map_names: Vec<_> = m.fields.iter().map(|f| f.0).collect();
        if rust_names != map_names {
            errors.push(format!(
                "{}: fields {:?} in LAYOUTS but {:?} in the type map",
                l.name, rust_names, map_names
            ));
            continue;
        }
        let mut end = 0usize;
        let mut natural = 1usize;
        let mut fields = Vec::new();
        for (fi, (name, ty)) in l.fields.iter().zip(&m.fields) {
            let (Some(size), Some(align)) = (ty.size(layouts), ty.align(layouts)) else {
                errors.push(format!("{}.{}: unknown C type {:?}", l.name, name, ty));
                continue;
            };
            let offset = align_up(end, align);
            if size != fi.size {
                errors.push(format!(
                    "{}.{}: C type `{}` has {} bytes, the Rust field {}",
                    l.name,
                    name,
                    ty.declare(name),
                    size,
                    fi.size
                ));
            }
            if offset != fi.offset {
                errors.push(format!(
                    "{}.{}: C offset {} but Rust offset {}",
                    l.name, name, offset, fi.offset
                ));
            }
            natural = natural.max(align);
            end = offset + size;
            fields.push(CField {
                name,
                ty: ty.clone(),
                offset,
                size,
            });
        }
        if l.align < natural {
            errors.push(format!(
                "{}: Rust alignment {} is below the C fields' natural alignment {}",
                l.name, l.align, natural
            ));
        }
        let align = l.align.max(natural);
        let size = align_up(end, align);
        if size != l.size {
            errors.push(format!(
                "{}: C size {} but Rust size {}",
                l.name, size, l.size
            ));
        }
        structs.push(CStruct {
            rust_name: l.name,
            c_name: c_struct_name(l.name),
            size,
            align,
            aligned_attr: (l.align > natural).then_some(l.align),
            fields,
        });
    }
    // Order so that every struct comes after the structs its fields use.
    let mut ordered: Vec<CStruct> = Vec::new();
    while !structs.is_empty() {
        let ready = structs.iter().position(|s| {
            s.fields.iter().all(|f| {
                f.ty.struct_ref()
                    .is_none_or(|r| ordered.iter().any(|o| o.rust_name == r))
            })
        });
        match ready {
            Some(i) => ordered.push(structs.remove(i)),
            None => {
                let names: Vec<_> = structs.iter().map(|s| s.rust_name).collect();
                errors.push(format!(
                    "cannot order structs {names:?}: a field names a struct that is missing or cyclic"
                ));
                break;
            }
        }
    }
    if errors.is_empty() {
        Ok(ordered)
    } else {
        Err(errors.join("\n"))
    }
}

/// [`check_type_map`] of [`struct_maps`] against [`LAYOUTS`].
///
/// # Panics
///
/// Panics with every disagreement when the C structs would not match the Rust layouts: the
/// generator refuses to produce a header that is wrong.
pub fn checked_structs() -> Vec<CStruct> {
    match check_type_map(LAYOUTS, &struct_maps()) {
        Ok(s) => s,
        Err(e) => panic!("the C type map disagrees with pvabi::layout::LAYOUTS:\n{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_declarations() {
        assert_eq!(c_struct_name("ClockPage"), "pvabi_clock_page");
        assert_eq!(c_struct_name("VcpuEventInfo"), "pvabi_vcpu_event_info");
        assert_eq!(<[u64; 6]>::c_type().declare("args"), "uint64_t args[6]");
        assert_eq!(<[[u8; 3]; 2]>::c_type().declare("x"), "uint8_t x[2][3]");
        assert_eq!(
            <[pvabi::event::VcpuEventInfo; 16]>::c_type().declare("vcpu"),
            "struct pvabi_vcpu_event_info vcpu[16]"
        );
    }

    #[test]
    fn the_real_map_matches_layouts() {
        let s = checked_structs();
        assert_eq!(s.len(), LAYOUTS.len());
        let clock = s
            .iter()
            .find(|s| s.rust_name == "ClockPage")
            .expect("ClockPage");
        let shift = clock
            .fields
            .iter()
            .find(|f| f.name == "tsc_shift")
            .expect("tsc_shift");
        assert_eq!(shift.ty, CType::I8, "signedness comes from the Rust type");
        let pos = |n: &str| s.iter().position(|s| s.rust_name == n).expect("present");
        assert!(pos("UpcallFrame") < pos("VcpuEventInfo"));
        assert!(pos("VcpuEventInfo") < pos("EventPage"));
    }

    fn mutate(name: &str, field: &str, ty: CType) -> Vec<StructMap> {
        let mut maps = struct_maps();
        for m in maps.iter_mut().filter(|m| m.name == name) {
            for f in m.fields.iter_mut().filter(|f| f.0 == field) {
                f.1 = ty.clone();
            }
        }
        maps
    }

    #[test]
    fn a_wrong_field_type_is_rejected() {
        let e = check_type_map(LAYOUTS, &mutate("ClockPage", "tsc_shift", CType::U16))
            .expect_err("a u16 where the Rust field is one byte must be rejected");
        assert!(e.contains("ClockPage.tsc_shift"), "{e}");
        assert!(
            e.contains("ClockPage.flags: C offset 30 but Rust offset 29"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_layout_or_renamed_field_is_rejected() {
        let mut maps = struct_maps();
        maps.retain(|m| m.name != "GrantEntry");
        let e = check_type_map(LAYOUTS, &maps).expect_err("missing map");
        assert!(e.contains("`GrantEntry`"), "{e}");

        let mut maps = struct_maps();
        if let Some(m) = maps.iter_mut().find(|m| m.name == "WatchEvent") {
            m.fields.swap(0, 1);
        }
        let e = check_type_map(LAYOUTS, &maps).expect_err("reordered fields");
        assert!(e.contains("WatchEvent: fields"), "{e}");
    }

    #[test]
    fn over_alignment_gets_an_attribute_and_under_alignment_is_rejected() {
        let fields: &'static [pvabi::layout::FieldInfo] = &[pvabi::layout::FieldInfo {
            name: "a",
            offset: 0,
            size: 4,
        }];
        let map = [StructMap {
            name: "T",
            fields: vec![("a", CType::U32)],
        }];
        let over = [LayoutInfo {
            name: "T",
            size: 32,
            align: 32,
            fields,
        }];
        let s = check_type_map(&over, &map).expect("expressible with aligned(32)");
        assert_eq!(s.first().and_then(|s| s.aligned_attr), Some(32));
        let under = [LayoutInfo {
            name: "T",
            size: 4,
            align: 2,
            fields,
        }];
        let e = check_type_map(&under, &map).expect_err("needs packed");
        assert!(e.contains("below the C fields' natural alignment"), "{e}");
    }
}

//! The inline gate functions of the header: one per gate kind, with the register convention of
//! `pvabi::gate` (spec `CONV-8`), for kernels that link no library.

use pvabi::gate::ARG_REGISTERS;

/// How one gate kind's instruction is issued.
struct Gate {
    /// Function name suffix: `pvabi_<name>_call`.
    name: &'static str,
    /// Comment lines above the function.
    doc: &'static str,
    /// The leading parameter that goes to RDX, if any: (C declaration, value of RDX); without
    /// one RDX is 0.
    rdx: Option<(&'static str, &'static str)>,
    /// The instruction, in AT&T syntax as it appears inside the asm string.
    insn: &'static str,
}

const GATES: &[Gate] = &[
    Gate {
        name: "ioport",
        doc: "I/O-port gate (GATE-2): `out dx, eax` to `port`, which travels in RDX.",
        rdx: Some(("uint16_t port", "port")),
        insn: "outl %%eax, %%dx",
    },
    Gate {
        name: "mmio",
        doc: "MMIO gate (GATE-4): a 32-bit store of the call id to the trigger word; `trigger`\n \
              * is where the kernel has mapped the gate's guest-physical address (uncached). It\n \
              * travels in RDX.",
        rdx: Some(("volatile uint32_t *trigger", "(uint64_t)(uintptr_t)trigger")),
        insn: "movl %%eax, (%%rdx)",
    },
    Gate {
        name: "vmcall",
        doc: "VMCALL gate (GATE-6), Intel. RDX is 0.",
        rdx: None,
        insn: "vmcall",
    },
    Gate {
        name: "vmmcall",
        doc: "VMMCALL gate (GATE-6), AMD. RDX is 0.",
        rdx: None,
        insn: "vmmcall",
    },
];

/// The C text of the gate section (inside `#if defined(__x86_64__)`).
pub fn gate_section() -> String {
    assert_eq!(
        ARG_REGISTERS,
        ["RDI", "RSI", "R8", "R9", "R10", "R11"],
        "the inline gates below are written for this argument register order"
    );
    let mut s = String::new();
    s.push_str(
        r#"/*
 * Inline gates (x86_64). Register convention (CONV-8): RAX = call id in, status out
 * (sign-extended); RDI, RSI, R8, R9, R10, R11 = arguments 0..5; RDI = value on return;
 * RDX = gate parameter. The host preserves every register but RAX and RDI.
 */
#if defined(__x86_64__)

/** The return pair of a call (CONV-5): status from RAX, value from RDI. */
struct pvabi_ret {
    int64_t status;
    uint64_t value;
};

/**
 * Decodes the status register. A value that is not a sign-extended 32-bit integer is
 * reported as PVABI_STATUS_FAILED: a guest must not trust a malformed return.
 */
static inline int64_t pvabi_status_from_reg(uint64_t rax)
{
    int64_t v = (int64_t)rax;
    if (v < (int64_t)INT32_MIN || v > (int64_t)INT32_MAX) {
        return PVABI_STATUS_FAILED;
    }
    return v;
}

"#,
    );
    for g in GATES {
        let (param, rdx_init) = match g.rdx {
            Some((decl, expr)) => (format!("{decl}, "), expr.to_string()),
            None => (String::new(), "0".to_string()),
        };
        s.push_str(&format!(
            r#"/**
 * {doc}
 */
static inline struct pvabi_ret pvabi_{name}_call({param}uint32_t call_id,
        uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{{
    uint64_t rax = call_id;
    uint64_t rdi = a0;
    uint64_t rsi = a1;
    uint64_t rdx = {rdx_init};
    register uint64_t r8 __asm__("r8") = a2;
    register uint64_t r9 __asm__("r9") = a3;
    register uint64_t r10 __asm__("r10") = a4;
    register uint64_t r11 __asm__("r11") = a5;
    struct pvabi_ret ret;
    /* The host preserves RSI, RDX and R8..R11 (CONV-8); they are still declared as written
     * so that a faulty host cannot corrupt the caller's state. */
    __asm__ __volatile__("{insn}"
                         : "+a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r8), "+r"(r9),
                           "+r"(r10), "+r"(r11)
                         :
                         : "memory", "cc");
    ret.status = pvabi_status_from_reg(rax);
    ret.value = rdi;
    return ret;
}}

"#,
            doc = g.doc,
            name = g.name,
            insn = g.insn,
        ));
    }
    s.push_str(
        r#"/**
 * Calls through the gate that discovery reported: `gate_kind` a PVABI_GATE_* value and
 * `gate_param` the I/O port (IOPORT) or the address at which the MMIO trigger word is mapped
 * (MMIO). Any other kind returns PVABI_STATUS_NOT_SUPPORTED without touching the hypervisor.
 */
static inline struct pvabi_ret pvabi_gate_call(uint32_t gate_kind, uint64_t gate_param,
        uint32_t call_id, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
        uint64_t a5)
{
    struct pvabi_ret none;
    switch (gate_kind) {
    case PVABI_GATE_IOPORT:
        return pvabi_ioport_call((uint16_t)gate_param, call_id, a0, a1, a2, a3, a4, a5);
    case PVABI_GATE_MMIO:
        return pvabi_mmio_call((volatile uint32_t *)(uintptr_t)gate_param, call_id, a0, a1,
                               a2, a3, a4, a5);
    case PVABI_GATE_VMCALL:
        return pvabi_vmcall_call(call_id, a0, a1, a2, a3, a4, a5);
    case PVABI_GATE_VMMCALL:
        return pvabi_vmmcall_call(call_id, a0, a1, a2, a3, a4, a5);
    default:
        none.status = PVABI_STATUS_NOT_SUPPORTED;
        none.value = 0;
        return none;
    }
}

/** Executes CPUID for `leaf` (subleaf 0). */
static inline void pvabi_cpuid(uint32_t leaf, uint32_t *eax, uint32_t *ebx, uint32_t *ecx,
                               uint32_t *edx)
{
    uint32_t a, b, c, d;
    __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(0u));
    *eax = a;
    *ebx = b;
    *ecx = c;
    *edx = d;
}

/**
 * Searches PVABI_CPUID_BASE_FIRST..=PVABI_CPUID_BASE_LAST (step PVABI_CPUID_BASE_STEP) for the
 * pvabi signature (DISC-5, DISC-6) and returns the signature leaf, or 0 when none has it.
 */
static inline uint32_t pvabi_cpuid_find_base(void)
{
    uint32_t base = PVABI_CPUID_BASE_FIRST;
    for (;;) {
        uint32_t a, b, c, d;
        pvabi_cpuid(base, &a, &b, &c, &d);
        if (b == PVABI_CPUID_SIGNATURE_EBX && c == PVABI_CPUID_SIGNATURE_ECX &&
            d == PVABI_CPUID_SIGNATURE_EDX) {
            return base;
        }
        if (base >= PVABI_CPUID_BASE_LAST) {
            return 0;
        }
        base += PVABI_CPUID_BASE_STEP;
    }
}

#endif /* __x86_64__ */
"#,
    );
    s
}

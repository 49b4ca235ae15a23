/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Checks the inline gates of pvabi.h against the register convention (CONV-8), in user space.
 *
 * A user-mode `out` (no I/O permission) and a store to a PROT_NONE page both fault. The
 * SIGSEGV handler plays the host: it records the registers at the gate instruction, answers
 * with a status in RAX and a value in RDI, and resumes after the instruction. The test then
 * checks that each argument arrived in its register and that the return pair was read back.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "pvabi.h"

struct trap {
    int hits;
    uint64_t rax, rdi, rsi, rdx, r8, r9, r10, r11;
    unsigned char insn[2];
    uint64_t answer_rax, answer_rdi;
};

static struct trap t;
static int checks, failures;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        checks++;                                                                       \
        if (!(cond)) {                                                                  \
            failures++;                                                                 \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                      \
        }                                                                               \
    } while (0)

static void host(int sig, siginfo_t *info, void *ctx)
{
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    (void)sig;
    (void)info;
    t.hits++;
    t.rax = (uint64_t)g[REG_RAX];
    t.rdi = (uint64_t)g[REG_RDI];
    t.rsi = (uint64_t)g[REG_RSI];
    t.rdx = (uint64_t)g[REG_RDX];
    t.r8 = (uint64_t)g[REG_R8];
    t.r9 = (uint64_t)g[REG_R9];
    t.r10 = (uint64_t)g[REG_R10];
    t.r11 = (uint64_t)g[REG_R11];
    t.insn[0] = ip[0];
    t.insn[1] = ip[1];
    if (ip[0] == 0xef) {
        g[REG_RIP] += 1; /* out %eax, (%dx) */
    } else if (ip[0] == 0x89 && ip[1] == 0x02) {
        g[REG_RIP] += 2; /* mov %eax, (%rdx) */
    } else {
        static const char msg[] = "unexpected faulting instruction\n";
        if (write(1, msg, sizeof msg - 1) < 0) {
            _exit(4);
        }
        _exit(3);
    }
    g[REG_RAX] = (greg_t)t.answer_rax;
    g[REG_RDI] = (greg_t)t.answer_rdi;
}

#define A0 0xa0a1a2a3a4a5a6a7ull
#define A1 0xb0b1b2b3b4b5b6b7ull
#define A2 0xc0c1c2c3c4c5c6c7ull
#define A3 0xd0d1d2d3d4d5d6d7ull
#define A4 0xe0e1e2e3e4e5e6e7ull
#define A5 0xf0f1f2f3f4f5f6f7ull

static void check_args(uint32_t call_id)
{
    CHECK(t.rax == (uint64_t)call_id); /* bits 63..32 zero (CONV-4) */
    CHECK(t.rdi == A0);
    CHECK(t.rsi == A1);
    CHECK(t.r8 == A2);
    CHECK(t.r9 == A3);
    CHECK(t.r10 == A4);
    CHECK(t.r11 == A5);
}

int main(void)
{
    struct sigaction sa;
    struct pvabi_ret r;
    volatile uint32_t *trigger;
    void *page;
    uint32_t base;

    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = host;
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSEGV, &sa, NULL) != 0 || sigaction(SIGBUS, &sa, NULL) != 0) {
        perror("sigaction");
        return 2;
    }
    page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    trigger = (volatile uint32_t *)page;

    /* Port gate: arguments in RDI, RSI, R8..R11, port in RDX; status and value come back. */
    t.answer_rax = (uint64_t)(int64_t)PVABI_STATUS_BUFFER_TOO_SMALL;
    t.answer_rdi = 0x0123456789abcdefull;
    r = pvabi_ioport_call(PVABI_DEFAULT_IOPORT, PVABI_CALL_STORE_READ, A0, A1, A2, A3, A4, A5);
    CHECK(t.hits == 1);
    CHECK(t.insn[0] == 0xef);
    check_args(PVABI_CALL_STORE_READ);
    CHECK((t.rdx & 0xffff) == PVABI_DEFAULT_IOPORT);
    CHECK(r.status == PVABI_STATUS_BUFFER_TOO_SMALL);
    CHECK(r.value == 0x0123456789abcdefull);

    /* A status that is not sign-extended is FAILED (as pvabi::Status::from_reg). */
    t.answer_rax = 0x00000000ffffffffull;
    r = pvabi_ioport_call(0x1234, PVABI_CALL_CONSOLE_WRITE, A0, A1, A2, A3, A4, A5);
    CHECK(t.hits == 2);
    CHECK((t.rdx & 0xffff) == 0x1234);
    CHECK(r.status == PVABI_STATUS_FAILED);
    t.answer_rax = 1ull << 40;
    r = pvabi_ioport_call(0x1234, PVABI_CALL_CONSOLE_WRITE, A0, A1, A2, A3, A4, A5);
    CHECK(r.status == PVABI_STATUS_FAILED);
    t.answer_rax = 0;
    t.answer_rdi = 42;
    r = pvabi_ioport_call(0x1234, PVABI_CALL_CONSOLE_WRITE, A0, A1, A2, A3, A4, A5);
    CHECK(r.status == PVABI_STATUS_SUCCESS && r.value == 42);

    /* MMIO gate: a 32-bit store of EAX through RDX. */
    t.answer_rax = (uint64_t)(int64_t)PVABI_STATUS_DENIED;
    t.answer_rdi = 7;
    r = pvabi_mmio_call(trigger, PVABI_CALL_HARNESS_CLOCK_READ, A0, A1, A2, A3, A4, A5);
    CHECK(t.hits == 5);
    CHECK(t.insn[0] == 0x89 && t.insn[1] == 0x02);
    check_args(PVABI_CALL_HARNESS_CLOCK_READ);
    CHECK(t.rdx == (uint64_t)(uintptr_t)page);
    CHECK(r.status == PVABI_STATUS_DENIED && r.value == 7);

    /* The dispatcher picks the gate by kind. */
    t.answer_rax = 0;
    r = pvabi_gate_call(PVABI_GATE_IOPORT, PVABI_DEFAULT_IOPORT, PVABI_CALL_EVENT_SEND, A0, A1,
                        A2, A3, A4, A5);
    CHECK(t.hits == 6 && t.insn[0] == 0xef);
    check_args(PVABI_CALL_EVENT_SEND);
    r = pvabi_gate_call(PVABI_GATE_MMIO, (uint64_t)(uintptr_t)page, PVABI_CALL_EVENT_MASK, A0,
                        A1, A2, A3, A4, A5);
    CHECK(t.hits == 7 && t.insn[0] == 0x89);
    CHECK(t.rdx == (uint64_t)(uintptr_t)page);
    check_args(PVABI_CALL_EVENT_MASK);
    r = pvabi_gate_call(PVABI_GATE_NONE, 0, PVABI_CALL_EVENT_SEND, A0, A1, A2, A3, A4, A5);
    CHECK(t.hits == 7);
    CHECK(r.status == PVABI_STATUS_NOT_SUPPORTED && r.value == 0);
    r = pvabi_gate_call(PVABI_GATE_INPROCESS, 0, PVABI_CALL_EVENT_SEND, A0, A1, A2, A3, A4, A5);
    CHECK(t.hits == 7 && r.status == PVABI_STATUS_NOT_SUPPORTED);

    /* CPUID search: no hypervisor here offers the pvabi signature, but a result must be 0 or a
     * leaf of the search range. */
    base = pvabi_cpuid_find_base();
    CHECK(base == 0 || (base >= PVABI_CPUID_BASE_FIRST && base <= PVABI_CPUID_BASE_LAST &&
                        (base - PVABI_CPUID_BASE_FIRST) % PVABI_CPUID_BASE_STEP == 0));
    printf("cpuid base 0x%08x\n", base);

    printf("gate-regs: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}

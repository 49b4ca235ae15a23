/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * c-hello: a freestanding C guest kernel that uses nothing but guest/include/pvabi.h (the
 * constants, the layouts and the inline gate functions).
 *
 * It discovers the host from the boot info (or, without one, by the CPUID scan), prints a
 * greeting through CONSOLE, registers a clock page and reads it (and CLOCK.GET_TIME), registers
 * the event page, allocates a port, binds it to itself, sends on it and sees the pending bit,
 * writes a STORE key and reads it back, and powers off with 0. If a check fails it prints
 * "c-hello: FAILED: ..." and powers off with 1. Its last line on success is
 * "c-hello: all checks passed".
 *
 * It runs in ring 0 and as a paravirtual ring-3 guest: it executes no privileged instruction.
 */
#include <stddef.h>
#include <stdint.h>

#include "pvabi.h"

/* ---- the gate ---------------------------------------------------------------------------- */

static uint32_t gate_kind;
static uint64_t gate_param;

static struct pvabi_ret call6(uint32_t id, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3,
                              uint64_t a4)
{
    return pvabi_gate_call(gate_kind, gate_param, id, a0, a1, a2, a3, a4, 0);
}

static struct pvabi_ret call0(uint32_t id)
{
    return call6(id, 0, 0, 0, 0, 0);
}

static struct pvabi_ret call1(uint32_t id, uint64_t a0)
{
    return call6(id, a0, 0, 0, 0, 0);
}

static struct pvabi_ret call2(uint32_t id, uint64_t a0, uint64_t a1)
{
    return call6(id, a0, a1, 0, 0, 0);
}

/* Identity mapping: a pointer's value is its guest-physical address. */
static uint64_t gpa(const volatile void *p)
{
    return (uint64_t)(uintptr_t)p;
}

/* ---- console ----------------------------------------------------------------------------- */

static size_t str_len(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    return n;
}

/* Writes all of buf, retrying partial writes (CONS-1); gives up after repeated no progress. */
static int64_t write_all(const char *buf, size_t len)
{
    unsigned stalls = 0;
    while (len > 0) {
        size_t chunk = len < PVABI_CONSOLE_MAX_TRANSFER ? len : PVABI_CONSOLE_MAX_TRANSFER;
        struct pvabi_ret r = call2(PVABI_CALL_CONSOLE_WRITE, gpa(buf), chunk);
        if (r.status != PVABI_STATUS_SUCCESS) {
            return r.status;
        }
        if (r.value > chunk) {
            return PVABI_STATUS_FAILED;
        }
        if (r.value == 0 && ++stalls > 16) {
            return PVABI_STATUS_BUSY;
        }
        buf += r.value;
        len -= r.value;
    }
    return PVABI_STATUS_SUCCESS;
}

static void puts_(const char *s)
{
    (void)write_all(s, str_len(s));
}

static void put_u64(uint64_t v)
{
    char buf[21];
    size_t i = sizeof(buf);
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    (void)write_all(buf + i, sizeof(buf) - i);
}

static void put_i64(int64_t v)
{
    if (v < 0) {
        puts_("-");
        put_u64((uint64_t)0 - (uint64_t)v);
    } else {
        put_u64((uint64_t)v);
    }
}

/* ---- failure ----------------------------------------------------------------------------- */

static void power_off(uint64_t code)
{
    (void)call2(PVABI_CALL_POWER_SHUTDOWN, PVABI_SHUTDOWN_POWEROFF, code);
    for (;;) {
        __asm__ __volatile__("pause");
    }
}

static void fail(const char *what, int64_t status)
{
    puts_("c-hello: FAILED: ");
    puts_(what);
    puts_(" (status ");
    put_i64(status);
    puts_(")\n");
    power_off(1);
}

/* Fails unless the call succeeded; returns its value. */
static uint64_t check(const char *what, struct pvabi_ret r)
{
    if (r.status != PVABI_STATUS_SUCCESS) {
        fail(what, r.status);
    }
    return r.value;
}

/* ---- discovery --------------------------------------------------------------------------- */

/* Uses the boot info when it is valid (DISC-2..DISC-4), else the CPUID leaves (DISC-5..8). */
static void discover(uint64_t boot_info_gpa)
{
    const volatile struct pvabi_boot_info *bi =
        (const volatile struct pvabi_boot_info *)(uintptr_t)boot_info_gpa;
    if (bi != NULL && boot_info_gpa % PVABI_BOOT_INFO_ALIGN == 0 &&
        bi->magic == PVABI_BOOT_INFO_MAGIC && bi->size >= PVABI_BOOT_INFO_SIZE) {
        gate_kind = bi->gate_kind;
        gate_param = bi->gate_param;
        return;
    }
    uint32_t base = pvabi_cpuid_find_base();
    if (base == 0) {
        for (;;) { /* no host: nothing to talk to */
            __asm__ __volatile__("pause");
        }
    }
    uint32_t a, b, c, d;
    pvabi_cpuid(base + PVABI_CPUID_LEAF_GATE, &a, &b, &c, &d);
    gate_kind = b;
    gate_param = ((uint64_t)d << 32) | c;
}

/* ---- CLOCK ------------------------------------------------------------------------------- */

static struct pvabi_clock_page clock_page __attribute__((aligned(PVABI_CLOCK_PAGE_ALIGN)));

static uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* System time from the clock page (pvclock seqlock, CLK-2..CLK-4); 0 if never written. */
static uint64_t clock_page_ns(void)
{
    const volatile struct pvabi_clock_page *p = &clock_page;
    for (unsigned tries = 0; tries < 1000000; tries++) {
        uint32_t v1 = __atomic_load_n(&clock_page.version, __ATOMIC_ACQUIRE);
        if (v1 & 1) {
            continue;
        }
        uint64_t tsc_timestamp = p->tsc_timestamp;
        uint64_t system_time = p->system_time;
        uint32_t mul = p->tsc_to_system_mul;
        int8_t shift = p->tsc_shift;
        uint64_t tsc = rdtsc();
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&clock_page.version, __ATOMIC_RELAXED) != v1) {
            continue;
        }
        if (v1 == 0) {
            return 0;
        }
        uint64_t delta = tsc - tsc_timestamp;
        if (shift < 0) {
            delta >>= -shift;
        } else {
            delta <<= shift;
        }
        return system_time + (uint64_t)(((unsigned __int128)delta * mul) >> 32);
    }
    return 0;
}

/* ---- EVENT ------------------------------------------------------------------------------- */

static struct pvabi_event_page event_page __attribute__((aligned(PVABI_PAGE_SIZE)));

static int port_pending(uint32_t port)
{
    uint64_t w = __atomic_load_n(&event_page.pending[port / 64], __ATOMIC_ACQUIRE);
    return (w >> (port % 64)) & 1;
}

/* ---- STORE ------------------------------------------------------------------------------- */

static const char store_key[] = "c-hello/greeting";
static const char store_value[] = "hello from C";
static char store_buf[64];

/* ---- main -------------------------------------------------------------------------------- */

void c_main(uint64_t boot_info_gpa)
{
    discover(boot_info_gpa);

    /* CONSOLE and BASE */
    uint64_t version = check("BASE.GET_ABI_VERSION", call0(PVABI_CALL_BASE_GET_ABI_VERSION));
    uint64_t vcpu = check("BASE.GET_VCPU_ID", call0(PVABI_CALL_BASE_GET_VCPU_ID));
    puts_("c-hello: hello from C on pvabi ");
    put_u64(version >> 16);
    puts_(".");
    put_u64(version & 0xffff);
    puts_(", vCPU ");
    put_u64(vcpu);
    puts_("\n");
    if ((version >> 16) != PVABI_ABI_VERSION_MAJOR) {
        fail("incompatible ABI major version", PVABI_STATUS_NOT_SUPPORTED);
    }

    /* CLOCK: the page, then the host's own reading */
    check("CLOCK.REGISTER_PAGE", call1(PVABI_CALL_CLOCK_REGISTER_PAGE, gpa(&clock_page)));
    uint64_t t_page0 = clock_page_ns();
    uint64_t t_host = check("CLOCK.GET_TIME", call0(PVABI_CALL_CLOCK_GET_TIME));
    uint64_t t_page1 = clock_page_ns();
    if (t_page0 == 0 || t_page1 == 0) {
        fail("clock page never written or never consistent", PVABI_STATUS_BAD_STATE);
    }
    if (t_page1 < t_page0) {
        fail("clock page time went backwards", PVABI_STATUS_FAILED);
    }
    puts_("c-hello: clock page ");
    put_u64(t_page1);
    puts_(" ns, CLOCK.GET_TIME ");
    put_u64(t_host);
    puts_(" ns\n");

    /* EVENT: poll mode, a port bound to this vCPU, a send to self, the pending bit */
    check("EVENT.REGISTER_PAGE", call1(PVABI_CALL_EVENT_REGISTER_PAGE, gpa(&event_page)));
    check("EVENT.SET_UPCALL(NONE)",
          call2(PVABI_CALL_EVENT_SET_UPCALL, PVABI_UPCALL_MODE_NONE, 0));
    uint64_t port = check("EVENT.ALLOC", call0(PVABI_CALL_EVENT_ALLOC));
    if (port == 0 || port >= PVABI_EVENT_NUM_PORTS) {
        fail("EVENT.ALLOC returned a port out of range", PVABI_STATUS_FAILED);
    }
    /* EVENT.ALLOC binds the port to the calling vCPU (EVT-3): binding it there again is
     * ALREADY (EVT-4). */
    struct pvabi_ret bind = call2(PVABI_CALL_EVENT_BIND_VCPU, port, vcpu);
    if (bind.status != PVABI_STATUS_ALREADY) {
        fail("EVENT.BIND_VCPU to the allocating vCPU (expected ALREADY)", bind.status);
    }
    if (port_pending((uint32_t)port)) {
        fail("port pending before any send", PVABI_STATUS_FAILED);
    }
    check("EVENT.SEND", call1(PVABI_CALL_EVENT_SEND, port));
    for (int i = 0; i < 100 && !port_pending((uint32_t)port); i++) {
        uint64_t now = check("CLOCK.GET_TIME", call0(PVABI_CALL_CLOCK_GET_TIME));
        struct pvabi_ret r = call1(PVABI_CALL_VCPU_BLOCK, now + 10000000);
        if (r.status != PVABI_STATUS_SUCCESS && r.status != PVABI_STATUS_TIMED_OUT) {
            fail("VCPU.BLOCK", r.status);
        }
    }
    if (!port_pending((uint32_t)port)) {
        fail("sent port never became pending", PVABI_STATUS_TIMED_OUT);
    }
    uint64_t bit = (uint64_t)1 << (port % 64);
    uint64_t was = __atomic_fetch_and(&event_page.pending[port / 64], ~bit, __ATOMIC_ACQ_REL);
    if (!(was & bit) || port_pending((uint32_t)port)) {
        fail("acknowledging the port", PVABI_STATUS_FAILED);
    }
    check("EVENT.CLOSE", call1(PVABI_CALL_EVENT_CLOSE, port));
    puts_("c-hello: port ");
    put_u64(port);
    puts_(" was pending after EVENT.SEND\n");

    /* STORE: write a key and read it back */
    size_t klen = sizeof(store_key) - 1, vlen = sizeof(store_value) - 1;
    check("STORE.WRITE", call6(PVABI_CALL_STORE_WRITE, gpa(store_key), klen, gpa(store_value),
                               vlen, PVABI_STORE_NO_TXN));
    uint64_t n = check("STORE.READ", call6(PVABI_CALL_STORE_READ, gpa(store_key), klen,
                                           gpa(store_buf), sizeof(store_buf),
                                           PVABI_STORE_NO_TXN));
    if (n != vlen) {
        fail("STORE.READ length differs from what was written", PVABI_STATUS_FAILED);
    }
    for (size_t i = 0; i < vlen; i++) {
        if (store_buf[i] != store_value[i]) {
            fail("STORE.READ value differs from what was written", PVABI_STATUS_FAILED);
        }
    }
    puts_("c-hello: store ");
    puts_(store_key);
    puts_(" = ");
    (void)write_all(store_buf, n);
    puts_("\n");

    /* POWER */
    puts_("c-hello: all checks passed\n");
    power_off(0);
}

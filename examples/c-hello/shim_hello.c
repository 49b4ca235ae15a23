/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * c-hello-shim: the c-hello checks through the shim's C ABI (guest/include/pvabi_shim.h and
 * libpvabi_guest_capi.a) instead of raw gate calls, plus what the library adds: upcalls (an
 * IDT vector in ring 0, the callback entry in paravirtual ring 3), masking, a second vCPU
 * (with two or more), a multicall and the memory map. Prints "c-hello-shim: all checks passed" and powers off with 0, or prints
 * "c-hello-shim: FAILED: ..." and powers off with 1.
 */
#include <stddef.h>
#include <stdint.h>

#include "pvabi.h"
#include "pvabi_shim.h"

#define UPCALL_VECTOR 0x40
#define WAIT_STEP_NS 10000000ull
#define WAIT_STEPS 500

static void puts_(const char *s)
{
    (void)pvabi_console_puts(s);
}

static void put_u64(uint64_t v)
{
    char buf[21];
    size_t i = sizeof(buf);
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    (void)pvabi_console_write(buf + i, sizeof(buf) - i);
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

static void fail(const char *what, int64_t status)
{
    puts_("c-hello-shim: FAILED: ");
    puts_(what);
    puts_(" (status ");
    put_i64(status);
    puts_(")\n");
    (void)pvabi_power_off(1);
    for (;;) {
        __asm__ __volatile__("pause");
    }
}

/* Fails on a negative status; returns the non-negative result. */
static int64_t check(const char *what, int64_t r)
{
    if (r < 0) {
        fail(what, r);
    }
    return r;
}

static struct pvabi_clock_page clock_page __attribute__((aligned(PVABI_CLOCK_PAGE_ALIGN)));
static struct pvabi_event_page event_page __attribute__((aligned(PVABI_PAGE_SIZE)));
static struct pvabi_multicall_entry batch[2] __attribute__((aligned(8)));
static struct pvabi_mem_map_entry mem_map[8];
static uint64_t idt[512] __attribute__((aligned(16)));

/* Bit p: port p was delivered by an upcall (ports below 64). */
static uint64_t got_ports;

static void on_port(uint32_t port, uint32_t vcpu)
{
    (void)vcpu;
    if (port < 64) {
        __atomic_fetch_or(&got_ports, (uint64_t)1 << port, __ATOMIC_SEQ_CST);
    }
}

/* Ring 0: an IDT whose only present gate is the upcall vector, on IST 1. */
static void load_idt(void)
{
    uint64_t h = pvabi_upcall_vector_entry_address();
    uint16_t cs;
    __asm__ __volatile__("mov %%cs, %0" : "=r"(cs));
    idt[UPCALL_VECTOR * 2] = (h & 0xffff) | ((uint64_t)cs << 16) | (1ull << 32) |
                             (0x8e00ull << 32) | (((h >> 16) & 0xffff) << 48);
    idt[UPCALL_VECTOR * 2 + 1] = h >> 32;
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) ptr = {sizeof(idt) - 1, (uint64_t)(uintptr_t)idt};
    __asm__ __volatile__("lidt %0" : : "m"(ptr) : "memory");
}

static uint64_t now_ns(void)
{
    uint64_t t = 0;
    check("pvabi_clock_get_time", pvabi_clock_get_time(&t));
    return t;
}

/* Blocks until the upcall handler saw `port`, with a bounded number of short blocks. */
static void wait_for_port(uint32_t port)
{
    for (int i = 0; i < WAIT_STEPS; i++) {
        if (__atomic_load_n(&got_ports, __ATOMIC_SEQ_CST) & ((uint64_t)1 << port)) {
            return;
        }
        int64_t r = pvabi_vcpu_block(now_ns() + WAIT_STEP_NS);
        if (r < 0 && r != PVABI_STATUS_TIMED_OUT) {
            fail("pvabi_vcpu_block", r);
        }
    }
    fail("no upcall for the port", PVABI_STATUS_TIMED_OUT);
}

/* vCPU 1: sends on the port vCPU 0 gave it, then returns (the shim's return trap stops it). */
static uint8_t ap_stack[16384] __attribute__((aligned(16)));
/* 1 (a reserved status no call returns) until vCPU 1 stores the status of its send. */
static int64_t ap_status = 1;

static void ap_main(uint64_t port, uint64_t vcpu)
{
    (void)vcpu;
    __atomic_store_n(&ap_status, pvabi_event_send((uint32_t)port), __ATOMIC_SEQ_CST);
}

static void second_vcpu(void)
{
    int64_t port = check("pvabi_event_alloc", pvabi_event_alloc());
    if (port >= 64) {
        fail("second port above 63", PVABI_STATUS_FAILED);
    }
    check("pvabi_vcpu_start",
          pvabi_vcpu_start(1, ap_main, ap_stack, sizeof(ap_stack), (uint64_t)port));
    wait_for_port((uint32_t)port);
    /* The port can be seen pending before vCPU 1 has stored the call's status: wait for it. */
    int64_t st = __atomic_load_n(&ap_status, __ATOMIC_SEQ_CST);
    for (int i = 0; st == 1; i++) {
        if (i == WAIT_STEPS) {
            fail("vCPU 1 did not store its EVENT.SEND status", PVABI_STATUS_TIMED_OUT);
        }
        int64_t r = pvabi_vcpu_block(now_ns() + WAIT_STEP_NS);
        if (r < 0 && r != PVABI_STATUS_TIMED_OUT) {
            fail("pvabi_vcpu_block", r);
        }
        st = __atomic_load_n(&ap_status, __ATOMIC_SEQ_CST);
    }
    if (st != 0) {
        fail("vCPU 1: pvabi_event_send", st);
    }
    for (int i = 0; pvabi_vcpu_status(1) != PVABI_VCPU_STATE_STOPPED; i++) {
        if (i == WAIT_STEPS) {
            fail("vCPU 1 did not stop after returning", PVABI_STATUS_TIMED_OUT);
        }
        int64_t r = pvabi_vcpu_block(now_ns() + WAIT_STEP_NS);
        if (r < 0 && r != PVABI_STATUS_TIMED_OUT) {
            fail("pvabi_vcpu_block", r);
        }
    }
    puts_("c-hello-shim: vCPU 1 sent port ");
    put_u64((uint64_t)port);
    puts_(" and stopped\n");
}

static const char key[] = "c-hello-shim/greeting";
static const char val[] = "hello through the shim";
static char buf[64];

void c_main(uint64_t boot_info_gpa)
{
    if (pvabi_init(boot_info_gpa) != 0) {
        for (;;) { /* no host, no console */
            __asm__ __volatile__("pause");
        }
    }
    if (pvabi_init(boot_info_gpa) != PVABI_STATUS_ALREADY) {
        fail("second pvabi_init is not ALREADY", PVABI_STATUS_FAILED);
    }

    /* BASE and CONSOLE */
    int64_t version = check("pvabi_abi_version", pvabi_abi_version());
    int64_t vcpu = check("pvabi_vcpu_id", pvabi_vcpu_id());
    int64_t mode = check("pvabi_info_exec_mode", pvabi_info_exec_mode());
    puts_("c-hello-shim: hello from C through the shim on pvabi ");
    put_u64((uint64_t)version >> 16);
    puts_(".");
    put_u64((uint64_t)version & 0xffff);
    puts_(mode == PVABI_EXEC_MODE_RING0 ? ", ring 0" : ", paravirtual ring 3");
    puts_("\n");
    if (check("pvabi_probe_service(STORE)", pvabi_probe_service(PVABI_SERVICE_STORE)) == 0) {
        fail("STORE not present", PVABI_STATUS_NOT_SUPPORTED);
    }

    /* CLOCK */
    check("pvabi_clock_register_page", pvabi_clock_register_page(&clock_page));
    uint64_t t0 = 0, t1 = 0, wall = 0;
    check("pvabi_clock_read_ns", pvabi_clock_read_ns(&clock_page, &t0));
    check("pvabi_clock_read_ns", pvabi_clock_read_ns(&clock_page, &t1));
    check("pvabi_clock_get_wallclock", pvabi_clock_get_wallclock(&wall));
    if (t0 == 0 || t1 < t0) {
        fail("clock page time zero or going backwards", PVABI_STATUS_FAILED);
    }
    if (pvabi_clock_read_ns(&clock_page, NULL) != PVABI_STATUS_INVALID_PARAM) {
        fail("null out-parameter accepted", PVABI_STATUS_FAILED);
    }
    puts_("c-hello-shim: clock page ");
    put_u64(t1);
    puts_(" ns\n");

    /* EVENT: upcalls */
    check("pvabi_event_register_page", pvabi_event_register_page(&event_page));
    check("pvabi_upcall_install", pvabi_upcall_install(on_port));
    if (mode == PVABI_EXEC_MODE_RING0) {
        load_idt();
        check("pvabi_event_set_upcall_vector", pvabi_event_set_upcall_vector(UPCALL_VECTOR));
        __asm__ __volatile__("sti");
    } else {
        check("pvabi_event_set_upcall_callback", pvabi_event_set_upcall_callback());
    }
    int64_t port = check("pvabi_event_alloc", pvabi_event_alloc());
    if (port >= 64) {
        fail("first port above 63", PVABI_STATUS_FAILED);
    }
    if (pvabi_event_bind_vcpu((uint32_t)port, (uint32_t)vcpu) != PVABI_STATUS_ALREADY) {
        fail("rebinding to the allocating vCPU is not ALREADY", PVABI_STATUS_FAILED);
    }
    check("pvabi_event_send", pvabi_event_send((uint32_t)port));
    wait_for_port((uint32_t)port);
    puts_("c-hello-shim: upcall for port ");
    put_u64((uint64_t)port);
    puts_("\n");

    /* EVENT: a masked port stays pending and is not delivered */
    __atomic_store_n(&got_ports, 0, __ATOMIC_SEQ_CST);
    check("pvabi_event_mask", pvabi_event_mask((uint32_t)port));
    check("pvabi_event_send", pvabi_event_send((uint32_t)port));
    if (check("pvabi_event_is_pending", pvabi_event_is_pending((uint32_t)port)) != 1) {
        fail("masked port not pending after send", PVABI_STATUS_FAILED);
    }
    if (__atomic_load_n(&got_ports, __ATOMIC_SEQ_CST) != 0) {
        fail("masked port delivered", PVABI_STATUS_FAILED);
    }
    if (check("pvabi_event_clear_pending", pvabi_event_clear_pending((uint32_t)port)) != 1) {
        fail("clearing the pending bit", PVABI_STATUS_FAILED);
    }
    check("pvabi_event_unmask", pvabi_event_unmask((uint32_t)port));
    check("pvabi_event_close", pvabi_event_close((uint32_t)port));
    puts_("c-hello-shim: masked port stayed pending\n");

    /* VCPU: a second vCPU, when there is one */
    if (check("pvabi_info_vcpu_count", pvabi_info_vcpu_count()) >= 2) {
        second_vcpu();
    }

    /* STORE */
    size_t klen = sizeof(key) - 1, vlen = sizeof(val) - 1;
    check("pvabi_store_write", pvabi_store_write(key, klen, val, vlen, PVABI_STORE_NO_TXN));
    if (check("pvabi_store_read_len", pvabi_store_read_len(key, klen, PVABI_STORE_NO_TXN)) !=
        (int64_t)vlen) {
        fail("pvabi_store_read_len", PVABI_STATUS_FAILED);
    }
    int64_t n = check("pvabi_store_read",
                      pvabi_store_read(key, klen, buf, sizeof(buf), PVABI_STORE_NO_TXN));
    if (n != (int64_t)vlen) {
        fail("pvabi_store_read length", PVABI_STATUS_FAILED);
    }
    for (size_t i = 0; i < vlen; i++) {
        if (buf[i] != val[i]) {
            fail("pvabi_store_read value", PVABI_STATUS_FAILED);
        }
    }
    puts_("c-hello-shim: store ");
    puts_(key);
    puts_(" = ");
    (void)pvabi_console_write(buf, (size_t)n);
    puts_("\n");
    check("pvabi_store_remove", pvabi_store_remove(key, klen, PVABI_STORE_NO_TXN));
    int64_t gone = pvabi_store_read(key, klen, buf, sizeof(buf), PVABI_STORE_NO_TXN);
    if (gone != PVABI_STATUS_NOT_FOUND) {
        fail("read after remove is not NOT_FOUND", gone);
    }

    /* MULTICALL and MEMORY */
    batch[0].call_id = PVABI_CALL_BASE_GET_VCPU_COUNT;
    batch[1].call_id = PVABI_CALL_CLOCK_GET_TIME;
    if (check("pvabi_multicall", pvabi_multicall(batch, 2)) != 2 || batch[0].status != 0 ||
        (int64_t)batch[0].value != pvabi_info_vcpu_count() || batch[1].status != 0 ||
        batch[1].value == 0) {
        fail("multicall results", PVABI_STATUS_FAILED);
    }
    batch[0].call_id = PVABI_CALL_STORE_WRITE;
    if (pvabi_multicall(batch, 1) != PVABI_STATUS_INVALID_PARAM) {
        fail("multicall accepted a call with guest addresses", PVABI_STATUS_FAILED);
    }
    int64_t total = check("pvabi_memory_get_map", pvabi_memory_get_map(mem_map, 8));
    if (total == 0 || mem_map[0].length == 0) {
        fail("empty memory map", PVABI_STATUS_FAILED);
    }

    /* POWER */
    puts_("c-hello-shim: all checks passed\n");
    (void)pvabi_power_off(0);
    fail("pvabi_power_off returned", PVABI_STATUS_FAILED);
}

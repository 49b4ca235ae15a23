/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * pvabi_shim.h: the C ABI of the pvabi guest shim (Rust crate pvabi-guest, module capi), built
 * as the static library libpvabi_guest_capi.a by guest/capi:
 *     cargo build --release --manifest-path guest/capi/Cargo.toml \
 *         --target x86_64-unknown-linux-gnu
 * (a bare-metal kernel adds CARGO_ENCODED_RUSTFLAGS -Crelocation-model=static and
 * -Cno-redzone=yes; examples/c-hello/Makefile shows the whole build).
 *
 * The prototypes mirror guest/src/capi.rs, whose Rust documentation is the full reference
 * (# Errors, # Safety); a test (backends/kvm/tests/c_hello.rs) fails when a function, a
 * parameter type or a return type here differs from the Rust definition.
 *
 * Conventions:
 *  - Every function returns int64_t: a negative value is a PVABI_STATUS_* code (the host's, or
 *    one the shim chose before calling the host); zero or a positive value is success, and
 *    where documented the positive value is the result (a port, a length, a count). 64-bit
 *    results (times, feature bits) are written through a uint64_t * out-parameter.
 *  - pvabi_init() discovers the host once; before it succeeded every other call returns
 *    PVABI_STATUS_BAD_STATE without calling the host.
 *  - The kernel runs identity mapped (pointer = guest-physical address). A buffer outside the
 *    RAM of the boot memory map is PVABI_STATUS_INVALID_ADDRESS; a null pointer with a nonzero
 *    length, or a shared area that is not aligned as the ABI requires (clock page 32 bytes,
 *    steal-time record 64, event page 4096, others their type's alignment), is
 *    PVABI_STATUS_INVALID_PARAM. Shared areas are declared with
 *    __attribute__((aligned(...))) and accessed with atomics while registered.
 *  - Upcalls: ring 0 points an IDT gate (IST 1 under pvabi-kvm) at
 *    pvabi_upcall_vector_entry_address() and calls pvabi_event_set_upcall_vector(); a
 *    paravirtual ring-3 kernel calls pvabi_event_set_upcall_callback(). Both need
 *    pvabi_event_register_page() and pvabi_upcall_install() first.
 *  - The library needs memcpy, memmove, memset, memcmp and bcmp from the kernel.
 */
#ifndef PVABI_SHIM_H
#define PVABI_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include "pvabi.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Entry point of a vCPU started with pvabi_vcpu_start(): entry(arg, vcpu_id). */
typedef void (*pvabi_vcpu_entry_fn)(uint64_t arg, uint64_t vcpu_id);

/** Upcall handler: called once per pending, unmasked port, its pending bit already cleared. */
typedef void (*pvabi_port_handler_fn)(uint32_t port, uint32_t vcpu);

/**
 * Discovers the host (boot info at boot_info_gpa, 0 = none, then the CPUID scan) and keeps the
 * handle for every other function (spec chapter "Discovery").
 */
int64_t pvabi_init(uint64_t boot_info_gpa);

/** Whether pvabi_init() has succeeded: 1 or 0. */
int64_t pvabi_is_ready(void);

/** The number of vCPUs discovery found (1..=PVABI_MAX_VCPUS), or BAD_STATE before pvabi_init(). */
int64_t pvabi_info_vcpu_count(void);

/**
 * The execution mode from the boot info (PVABI_EXEC_MODE_*); NOT_FOUND when discovery used
 * CPUID only; BAD_STATE before pvabi_init().
 */
int64_t pvabi_info_exec_mode(void);

/** Writes the feature bits discovery found (PVABI_FEATURE_*) to *out. */
int64_t pvabi_info_features(uint64_t *out);

/**
 * The function count BASE.PROBE_SERVICE reported for service svc at discovery (0 = absent);
 * BAD_STATE before pvabi_init().
 */
int64_t pvabi_info_service_functions(uint32_t svc);

/**
 * Copies the boot command line (DISC-11) into buf (at most len bytes, no NUL added); returns
 * the bytes copied (0 without one).
 */
int64_t pvabi_boot_cmdline(void *buf, size_t len);

/** BASE.GET_ABI_VERSION (BASE-1): major << 16 | minor. */
int64_t pvabi_abi_version(void);

/** BASE.GET_BACKEND_ID (BASE-3): PVABI_BACKEND_*. */
int64_t pvabi_backend_id(void);

/** BASE.GET_BACKEND_VERSION (BASE-4) into *out. */
int64_t pvabi_backend_version(uint64_t *out);

/** BASE.PROBE_SERVICE (BASE-5): the service's function count, 0 when absent. */
int64_t pvabi_probe_service(uint32_t svc);

/** BASE.GET_FEATURES (BASE-7) into *out. */
int64_t pvabi_get_features(uint64_t *out);

/** BASE.GET_VCPU_ID (BASE-8): the calling vCPU's id. */
int64_t pvabi_vcpu_id(void);

/** BASE.GET_VCPU_COUNT (BASE-9). */
int64_t pvabi_vcpu_count(void);

/**
 * Makes a call whose arguments name no guest memory (the calls pvabi_guest calls scalar: BASE
 * queries, EVENT.SEND, CLOCK.GET_TIME, ...); the value goes to *value_out when it is not null.
 */
int64_t pvabi_call_scalar(uint32_t call_id,
                          uint64_t a0,
                          uint64_t a1,
                          uint64_t a2,
                          uint64_t a3,
                          uint64_t a4,
                          uint64_t a5,
                          uint64_t *value_out);

/** Writes all len bytes at buf to the console (CONSOLE.WRITE in chunks, CONS-1); returns len. */
int64_t pvabi_console_write(const void *buf, size_t len);

/** Writes the NUL-terminated string s to the console; returns its length. */
int64_t pvabi_console_puts(const char *s);

/** CONSOLE.WRITE_BYTE (CONS-3). */
int64_t pvabi_console_write_byte(uint8_t b);

/**
 * CONSOLE.READ (CONS-4) of at most len (and PVABI_CONSOLE_MAX_TRANSFER) bytes into buf;
 * returns the bytes read (0 when there is no input).
 */
int64_t pvabi_console_read(void *buf, size_t len);

/** CLOCK.REGISTER_PAGE (CLK-1) of page for the calling vCPU. */
int64_t pvabi_clock_register_page(struct pvabi_clock_page *page);

/** CLOCK.UNREGISTER_PAGE (CLK-5) for the calling vCPU. */
int64_t pvabi_clock_unregister_page(void);

/**
 * Reads system time in ns from a registered clock page (seqlock protocol, RDTSC) into *out.
 * Needs no handle.
 */
int64_t pvabi_clock_read_ns(const struct pvabi_clock_page *page, uint64_t *out);

/** CLOCK.GET_TIME (CLK-7): system time in ns, from the host, into *out. */
int64_t pvabi_clock_get_time(uint64_t *out);

/** CLOCK.GET_WALLCLOCK (CLK-6): ns since the UNIX epoch at system time 0, into *out. */
int64_t pvabi_clock_get_wallclock(uint64_t *out);

/** CLOCK.SET_TIMER (CLK-8): raise port at system time deadline_ns (one-shot). */
int64_t pvabi_timer_set(uint64_t deadline_ns, uint32_t port);

/** CLOCK.SET_TIMER with deadline 0: cancels the timer on port. */
int64_t pvabi_timer_cancel(uint32_t port);

/** VCPU.REGISTER_STEAL_TIME (VCPU-11) of rec for the calling vCPU. */
int64_t pvabi_steal_time_register(struct pvabi_steal_time *rec);

/** VCPU.YIELD (VCPU-2). */
int64_t pvabi_vcpu_yield(void);

/**
 * VCPU.BLOCK (VCPU-3) until an event, a kick or system time deadline_ns
 * (PVABI_VCPU_BLOCK_FOREVER, 0, for none). Returns 0 when woken, PVABI_STATUS_TIMED_OUT when
 * the deadline passed, or another host status.
 */
int64_t pvabi_vcpu_block(uint64_t deadline_ns);

/** VCPU.KICK (VCPU-5): wake vcpu if it is blocked. */
int64_t pvabi_vcpu_kick(uint32_t vcpu);

/**
 * VCPU.START (VCPU-6): starts vcpu at entry(arg, vcpu) on the stack [stack, stack +
 * stack_len), which the new vCPU owns from then on. The stack gets the shim's return trap as
 * return address, so a returning entry stops the vCPU (VCPU.STOP, or power-off with 0 for the
 * last running vCPU).
 */
int64_t pvabi_vcpu_start(uint32_t vcpu,
                         pvabi_vcpu_entry_fn entry,
                         void *stack,
                         size_t stack_len,
                         uint64_t arg);

/**
 * VCPU.STOP (VCPU-9): stops the calling vCPU. Returns only if the host refused, with its
 * status.
 */
int64_t pvabi_vcpu_stop(void);

/** VCPU.GET_STATUS (VCPU-10): PVABI_VCPU_STATE_* of vcpu. */
int64_t pvabi_vcpu_status(uint32_t vcpu);

/**
 * EVENT.REGISTER_PAGE (EVT-1): zeroes page and registers it; the shim keeps it for the
 * pending-bit and upcall functions below.
 */
int64_t pvabi_event_register_page(struct pvabi_event_page *page);

/** EVENT.ALLOC (EVT-3): returns a new port (1..PVABI_EVENT_NUM_PORTS-1). */
int64_t pvabi_event_alloc(void);

/** EVENT.BIND_VCPU (EVT-4): deliver port to vcpu. */
int64_t pvabi_event_bind_vcpu(uint32_t port, uint32_t vcpu);

/** EVENT.CLOSE (EVT-5). */
int64_t pvabi_event_close(uint32_t port);

/** EVENT.SEND (EVT-6). */
int64_t pvabi_event_send(uint32_t port);

/** EVENT.MASK (EVT-8). */
int64_t pvabi_event_mask(uint32_t port);

/** EVENT.UNMASK (EVT-9): a pending port is delivered on unmask. */
int64_t pvabi_event_unmask(uint32_t port);

/** Whether port is pending in the registered event page: 1 or 0. */
int64_t pvabi_event_is_pending(uint32_t port);

/** Clears port's pending bit (acknowledge, EVT-7); returns 1 if it was set, 0 if not. */
int64_t pvabi_event_clear_pending(uint32_t port);

/** EVENT.SET_UPCALL(NONE) (EVT-10): no upcalls for the calling vCPU; it polls. */
int64_t pvabi_event_set_upcall_none(void);

/**
 * EVENT.SET_UPCALL(VECTOR, vector) (EVT-10) for the calling vCPU (ring 0): point the IDT gate
 * of vector at pvabi_upcall_vector_entry_address() first.
 */
int64_t pvabi_event_set_upcall_vector(uint8_t vector);

/**
 * EVENT.SET_UPCALL(CALLBACK) (EVT-10, EVT-12) for the calling vCPU (paravirtual ring 3), with
 * the shim's callback entry as the target.
 */
int64_t pvabi_event_set_upcall_callback(void);

/**
 * Installs handler for upcalls (replacing any earlier one): the shim's vector and callback
 * entries scan the registered event page and call handler(port, vcpu) once per pending,
 * unmasked port, clearing its pending bit first. Call it once before enabling upcalls.
 */
int64_t pvabi_upcall_install(pvabi_port_handler_fn handler);

/**
 * Scans vCPU vcpu's pending events and calls the installed handler per port (for kernels that
 * poll); returns the number handled.
 */
int64_t pvabi_upcall_dispatch_pending(uint32_t vcpu);

/**
 * The address of the shim's interrupt entry (pvabi_upcall_vector_entry), for the IDT gate of
 * the upcall vector (ring 0).
 */
uint64_t pvabi_upcall_vector_entry_address(void);

/**
 * MEMORY.GET_MAP (MEM-1) into entries (room for count); returns the host's total number of
 * entries (the first min(total, count) were written).
 */
int64_t pvabi_memory_get_map(struct pvabi_mem_map_entry *entries, size_t count);

/** MEMORY.BALLOON_RELEASE (MEM-4): gives the count pages at pages to the host. */
int64_t pvabi_balloon_release(void *pages, uint64_t count);

/** MEMORY.BALLOON_RECLAIM (MEM-6): takes the count pages at pages back (contents unspecified). */
int64_t pvabi_balloon_reclaim(void *pages, uint64_t count);

/** MEMORY.BALLOON_QUERY (MEM-8): pages currently released. */
int64_t pvabi_balloon_query(void);

/**
 * GRANT.SETUP_TABLE (GNT-1): registers the count entries at table (the kernel fills entries
 * with atomic stores, flags last).
 */
int64_t pvabi_grant_setup_table(struct pvabi_grant_entry *table, uint32_t count);

/** GRANT.QUERY (GNT-3): the most entries the host accepts. */
int64_t pvabi_grant_query(void);

/**
 * STORE.READ (STORE-3) of the path_len-byte path at path into buf (room for buf_len), in
 * transaction txn_id (PVABI_STORE_NO_TXN for none); returns the value's length.
 */
int64_t pvabi_store_read(const void *path,
                         size_t path_len,
                         void *buf,
                         size_t buf_len,
                         uint64_t txn_id);

/** The length of the value at path (STORE.READ with an empty buffer). */
int64_t pvabi_store_read_len(const void *path, size_t path_len, uint64_t txn_id);

/** STORE.WRITE (STORE-5) of value_len bytes at value to path. */
int64_t pvabi_store_write(const void *path,
                          size_t path_len,
                          const void *value_ptr,
                          size_t value_len,
                          uint64_t txn_id);

/**
 * STORE.LIST (STORE-7) of path's children into buf as NUL-terminated names; returns the bytes
 * written.
 */
int64_t pvabi_store_list(const void *path,
                         size_t path_len,
                         void *buf,
                         size_t buf_len,
                         uint64_t txn_id);

/** STORE.REMOVE (STORE-8) of path and everything below it. */
int64_t pvabi_store_remove(const void *path, size_t path_len, uint64_t txn_id);

/**
 * STORE.WATCH (STORE-10): raise port when path or anything below it changes; returns the watch
 * id.
 */
int64_t pvabi_store_watch(const void *path, size_t path_len, uint32_t port);

/** STORE.UNWATCH (STORE-12). */
int64_t pvabi_store_unwatch(uint32_t watch_id);

/**
 * STORE.WATCH_NEXT (STORE-13) into buf: a struct pvabi_watch_event followed by the path;
 * returns the bytes written, 0 when the queue is empty.
 */
int64_t pvabi_store_watch_next(void *buf, size_t buf_len);

/** STORE.TXN_START (STORE-15): returns the transaction id (never 0). */
int64_t pvabi_store_txn_start(void);

/**
 * STORE.TXN_COMMIT (STORE-16): PVABI_STATUS_CONFLICT if a concurrent change won (nothing was
 * applied).
 */
int64_t pvabi_store_txn_commit(uint64_t txn_id);

/** STORE.TXN_ABORT (STORE-18). */
int64_t pvabi_store_txn_abort(uint64_t txn_id);

/**
 * POWER.SHUTDOWN (PWR-1) with reason (PVABI_SHUTDOWN_*) and exit_code. Returns only if the
 * host refused, with its status.
 */
int64_t pvabi_shutdown(uint32_t reason, uint64_t exit_code);

/**
 * Powers off with exit code exit_code (POWER.SHUTDOWN(POWEROFF)). Returns only if the host
 * refused, with its status.
 */
int64_t pvabi_power_off(uint64_t exit_code);

/** Reboots (POWER.SHUTDOWN(REBOOT)). Returns only if the host refused, with its status. */
int64_t pvabi_reboot(void);

/**
 * POWER.REGISTER_CRASH_BUFFER (PWR-4) of the len bytes at area (a struct pvabi_crash_header
 * then the message); the shim keeps it for pvabi_crash().
 */
int64_t pvabi_crash_register_buffer(void *area, size_t len);

/**
 * Writes a crash report (crash_code, rip, the msg_len bytes at msg, truncated to fit) into the
 * registered crash buffer, if any, and shuts down with reason CRASH. Returns only if the host
 * refused, with its status.
 */
int64_t pvabi_crash(uint64_t crash_code, uint64_t rip, const void *msg, size_t msg_len);

/**
 * MULTICALL.EXECUTE (MC-1) of the count entries at entries (the kernel fills call_id, flags
 * and args; the shim zeroes status and value, which the host fills); returns how many ran.
 */
int64_t pvabi_multicall(struct pvabi_multicall_entry *entries, size_t count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PVABI_SHIM_H */

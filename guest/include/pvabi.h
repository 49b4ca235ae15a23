/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * pvabi.h: the C view of the pvabi paravirtualization ABI, version 1.0.
 *
 * GENERATED from the `pvabi` crate by pvabi-cgen. Do not edit; regenerate with
 *     cargo run -p pvabi-cgen -- --write
 *
 * All multi-byte values in shared memory are little-endian (CONV-9). The layouts are
 * the x86_64 (LP64) ones; every size, alignment and field offset is asserted below.
 * Clause ids (CONV-1, CLK-1, ...) refer to the pvabi specification.
 */
#ifndef PVABI_H
#define PVABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
/* C++ spells the C11 keywords used below differently. */
#ifndef _Static_assert
#define _Static_assert static_assert
#endif
#ifndef _Alignof
#define _Alignof alignof
#endif
extern "C" {
#endif

/* ABI version (spec VER-1, VER-2) and general limits */
/** Major ABI version. */
#define PVABI_ABI_VERSION_MAJOR 1u
/** Minor ABI version. */
#define PVABI_ABI_VERSION_MINOR 0u
/** Register encoding: major << 16 | minor. */
#define PVABI_ABI_VERSION 0x00010000u
/** Guest page size in bytes (CONV-10). */
#define PVABI_PAGE_SIZE 4096ull
/** Most vCPUs one guest can have (VCPU-1). */
#define PVABI_MAX_VCPUS 16u

/* Service ids: bits 31..16 of a call id (CONV-2) */
#define PVABI_SERVICE_BASE 0x0000u
#define PVABI_SERVICE_CONSOLE 0x0001u
#define PVABI_SERVICE_CLOCK 0x0002u
#define PVABI_SERVICE_VCPU 0x0003u
#define PVABI_SERVICE_EVENT 0x0004u
#define PVABI_SERVICE_MEMORY 0x0005u
#define PVABI_SERVICE_GRANT 0x0006u
#define PVABI_SERVICE_STORE 0x0007u
#define PVABI_SERVICE_POWER 0x0008u
#define PVABI_SERVICE_MULTICALL 0x0009u
#define PVABI_SERVICE_HARNESS 0x7f00u
/** First vendor service id (CONV-3). */
#define PVABI_SERVICE_VENDOR_FIRST 0x8000u

/* Call ids: service << 16 | function (CONV-1) */
/** BASE.GET_ABI_VERSION (0 arguments). */
#define PVABI_CALL_BASE_GET_ABI_VERSION 0x00000000u
/** BASE.GET_BACKEND_ID (0 arguments). */
#define PVABI_CALL_BASE_GET_BACKEND_ID 0x00000001u
/** BASE.GET_BACKEND_VERSION (0 arguments). */
#define PVABI_CALL_BASE_GET_BACKEND_VERSION 0x00000002u
/** BASE.PROBE_SERVICE (1 argument). */
#define PVABI_CALL_BASE_PROBE_SERVICE 0x00000003u
/** BASE.GET_FEATURES (0 arguments). */
#define PVABI_CALL_BASE_GET_FEATURES 0x00000004u
/** BASE.GET_VCPU_ID (0 arguments). */
#define PVABI_CALL_BASE_GET_VCPU_ID 0x00000005u
/** BASE.GET_VCPU_COUNT (0 arguments). */
#define PVABI_CALL_BASE_GET_VCPU_COUNT 0x00000006u
/** BASE.RING_REGISTER (2 arguments). */
#define PVABI_CALL_BASE_RING_REGISTER 0x00000007u
/** BASE.RING_UNREGISTER (0 arguments). */
#define PVABI_CALL_BASE_RING_UNREGISTER 0x00000008u
/** CONSOLE.WRITE (2 arguments). */
#define PVABI_CALL_CONSOLE_WRITE 0x00010000u
/** CONSOLE.READ (2 arguments). */
#define PVABI_CALL_CONSOLE_READ 0x00010001u
/** CONSOLE.WRITE_BYTE (1 argument). */
#define PVABI_CALL_CONSOLE_WRITE_BYTE 0x00010002u
/** CLOCK.REGISTER_PAGE (1 argument). */
#define PVABI_CALL_CLOCK_REGISTER_PAGE 0x00020000u
/** CLOCK.UNREGISTER_PAGE (0 arguments). */
#define PVABI_CALL_CLOCK_UNREGISTER_PAGE 0x00020001u
/** CLOCK.GET_WALLCLOCK (0 arguments). */
#define PVABI_CALL_CLOCK_GET_WALLCLOCK 0x00020002u
/** CLOCK.GET_TIME (0 arguments). */
#define PVABI_CALL_CLOCK_GET_TIME 0x00020003u
/** CLOCK.SET_TIMER (2 arguments). */
#define PVABI_CALL_CLOCK_SET_TIMER 0x00020004u
/** VCPU.YIELD (0 arguments). */
#define PVABI_CALL_VCPU_YIELD 0x00030000u
/** VCPU.BLOCK (1 argument). */
#define PVABI_CALL_VCPU_BLOCK 0x00030001u
/** VCPU.KICK (1 argument). */
#define PVABI_CALL_VCPU_KICK 0x00030002u
/** VCPU.START (4 arguments). */
#define PVABI_CALL_VCPU_START 0x00030003u
/** VCPU.STOP (0 arguments; does not return on success). */
#define PVABI_CALL_VCPU_STOP 0x00030004u
/** VCPU.GET_STATUS (1 argument). */
#define PVABI_CALL_VCPU_GET_STATUS 0x00030005u
/** VCPU.REGISTER_STEAL_TIME (1 argument). */
#define PVABI_CALL_VCPU_REGISTER_STEAL_TIME 0x00030006u
/** VCPU.UPCALL_RETURN (0 arguments; does not return on success). */
#define PVABI_CALL_VCPU_UPCALL_RETURN 0x00030007u
/** EVENT.REGISTER_PAGE (1 argument). */
#define PVABI_CALL_EVENT_REGISTER_PAGE 0x00040000u
/** EVENT.SET_UPCALL (2 arguments). */
#define PVABI_CALL_EVENT_SET_UPCALL 0x00040001u
/** EVENT.ALLOC (0 arguments). */
#define PVABI_CALL_EVENT_ALLOC 0x00040002u
/** EVENT.BIND_VCPU (2 arguments). */
#define PVABI_CALL_EVENT_BIND_VCPU 0x00040003u
/** EVENT.CLOSE (1 argument). */
#define PVABI_CALL_EVENT_CLOSE 0x00040004u
/** EVENT.SEND (1 argument). */
#define PVABI_CALL_EVENT_SEND 0x00040005u
/** EVENT.MASK (1 argument). */
#define PVABI_CALL_EVENT_MASK 0x00040006u
/** EVENT.UNMASK (1 argument). */
#define PVABI_CALL_EVENT_UNMASK 0x00040007u
/** MEMORY.GET_MAP (2 arguments). */
#define PVABI_CALL_MEMORY_GET_MAP 0x00050000u
/** MEMORY.BALLOON_RELEASE (2 arguments). */
#define PVABI_CALL_MEMORY_BALLOON_RELEASE 0x00050001u
/** MEMORY.BALLOON_RECLAIM (2 arguments). */
#define PVABI_CALL_MEMORY_BALLOON_RECLAIM 0x00050002u
/** MEMORY.BALLOON_QUERY (0 arguments). */
#define PVABI_CALL_MEMORY_BALLOON_QUERY 0x00050003u
/** GRANT.SETUP_TABLE (2 arguments). */
#define PVABI_CALL_GRANT_SETUP_TABLE 0x00060000u
/** GRANT.QUERY (0 arguments). */
#define PVABI_CALL_GRANT_QUERY 0x00060001u
/** STORE.READ (5 arguments). */
#define PVABI_CALL_STORE_READ 0x00070000u
/** STORE.WRITE (5 arguments). */
#define PVABI_CALL_STORE_WRITE 0x00070001u
/** STORE.LIST (5 arguments). */
#define PVABI_CALL_STORE_LIST 0x00070002u
/** STORE.REMOVE (3 arguments). */
#define PVABI_CALL_STORE_REMOVE 0x00070003u
/** STORE.WATCH (3 arguments). */
#define PVABI_CALL_STORE_WATCH 0x00070004u
/** STORE.UNWATCH (1 argument). */
#define PVABI_CALL_STORE_UNWATCH 0x00070005u
/** STORE.WATCH_NEXT (2 arguments). */
#define PVABI_CALL_STORE_WATCH_NEXT 0x00070006u
/** STORE.TXN_START (0 arguments). */
#define PVABI_CALL_STORE_TXN_START 0x00070007u
/** STORE.TXN_COMMIT (1 argument). */
#define PVABI_CALL_STORE_TXN_COMMIT 0x00070008u
/** STORE.TXN_ABORT (1 argument). */
#define PVABI_CALL_STORE_TXN_ABORT 0x00070009u
/** POWER.SHUTDOWN (2 arguments; does not return on success). */
#define PVABI_CALL_POWER_SHUTDOWN 0x00080000u
/** POWER.REGISTER_CRASH_BUFFER (2 arguments). */
#define PVABI_CALL_POWER_REGISTER_CRASH_BUFFER 0x00080001u
/** MULTICALL.EXECUTE (2 arguments). */
#define PVABI_CALL_MULTICALL_EXECUTE 0x00090000u
/** HARNESS.REPORT (2 arguments). */
#define PVABI_CALL_HARNESS_REPORT 0x7f000000u
/** HARNESS.INJECT_EVENT (1 argument). */
#define PVABI_CALL_HARNESS_INJECT_EVENT 0x7f000001u
/** HARNESS.STORE_HOST_WRITE (5 arguments). */
#define PVABI_CALL_HARNESS_STORE_HOST_WRITE 0x7f000002u
/** HARNESS.STORE_HOST_READ (4 arguments). */
#define PVABI_CALL_HARNESS_STORE_HOST_READ 0x7f000003u
/** HARNESS.CONSOLE_READBACK (2 arguments). */
#define PVABI_CALL_HARNESS_CONSOLE_READBACK 0x7f000004u
/** HARNESS.CONSOLE_INPUT (2 arguments). */
#define PVABI_CALL_HARNESS_CONSOLE_INPUT 0x7f000005u
/** HARNESS.CLOCK_ADVANCE (1 argument). */
#define PVABI_CALL_HARNESS_CLOCK_ADVANCE 0x7f000006u
/** HARNESS.CLOCK_READ (0 arguments). */
#define PVABI_CALL_HARNESS_CLOCK_READ 0x7f000007u
/** HARNESS.GRANT_ACCESS (3 arguments). */
#define PVABI_CALL_HARNESS_GRANT_ACCESS 0x7f000008u
/** HARNESS.BALLOON_CHECK (1 argument). */
#define PVABI_CALL_HARNESS_BALLOON_CHECK 0x7f000009u

/* Status codes, sign-extended in RAX (CONV-5, CONV-6) */
#define PVABI_STATUS_SUCCESS 0
#define PVABI_STATUS_NOT_SUPPORTED (-1)
#define PVABI_STATUS_INVALID_PARAM (-2)
#define PVABI_STATUS_INVALID_ADDRESS (-3)
#define PVABI_STATUS_DENIED (-4)
#define PVABI_STATUS_NO_SPACE (-5)
#define PVABI_STATUS_BUSY (-6)
#define PVABI_STATUS_ALREADY (-7)
#define PVABI_STATUS_NOT_FOUND (-8)
#define PVABI_STATUS_TIMED_OUT (-9)
#define PVABI_STATUS_CONFLICT (-10)
#define PVABI_STATUS_BAD_STATE (-11)
#define PVABI_STATUS_BUFFER_TOO_SMALL (-12)
#define PVABI_STATUS_FAILED (-13)

/* CPUID discovery (DISC-5..DISC-8) */
/** First leaf searched for the signature. */
#define PVABI_CPUID_BASE_FIRST 0x40000000u
/** Last leaf searched for the signature. */
#define PVABI_CPUID_BASE_LAST 0x4000ff00u
/** Step between candidate leaves. */
#define PVABI_CPUID_BASE_STEP 0x00000100u
/** "pvab" as EBX of the signature leaf. */
#define PVABI_CPUID_SIGNATURE_EBX 0x62617670u
/** "ipva" as ECX of the signature leaf. */
#define PVABI_CPUID_SIGNATURE_ECX 0x61767069u
/** "bipv" as EDX of the signature leaf. */
#define PVABI_CPUID_SIGNATURE_EDX 0x76706962u
/** Offset of the version/gate leaf from the signature leaf. */
#define PVABI_CPUID_LEAF_GATE 1u
/** Offset of the features/vCPU-count leaf from the signature leaf. */
#define PVABI_CPUID_LEAF_FEATURES 2u

/* Feature bits (DISC-9) */
#define PVABI_FEATURE_CLOCK_PAGE 0x0000000000000001ull
#define PVABI_FEATURE_TIMER 0x0000000000000002ull
#define PVABI_FEATURE_STEAL_TIME 0x0000000000000004ull
#define PVABI_FEATURE_UPCALL_VECTOR 0x0000000000000008ull
#define PVABI_FEATURE_UPCALL_CALLBACK 0x0000000000000010ull
#define PVABI_FEATURE_BALLOON 0x0000000000000020ull
#define PVABI_FEATURE_GRANT 0x0000000000000040ull
#define PVABI_FEATURE_STORE_TXN 0x0000000000000080ull
#define PVABI_FEATURE_MULTICALL 0x0000000000000100ull
#define PVABI_FEATURE_RING_GATE 0x0000000000000200ull
#define PVABI_FEATURE_CRASH_BUFFER 0x0000000000000400ull
#define PVABI_FEATURE_HARNESS 0x8000000000000000ull

/* Gate kinds and gate parameters */
#define PVABI_GATE_NONE 0u
#define PVABI_GATE_IOPORT 1u
#define PVABI_GATE_MMIO 2u
#define PVABI_GATE_VMCALL 3u
#define PVABI_GATE_VMMCALL 4u
#define PVABI_GATE_INPROCESS 5u
/** Bytes of the `out dx, eax` that triggers the port gate (GATE-2). */
#define PVABI_IOPORT_GATE_WIDTH 4u
/** Default port of the port gate (GATE-3). */
#define PVABI_DEFAULT_IOPORT 0x0510u
/** Default guest-physical address of the MMIO trigger word (GATE-5). */
#define PVABI_DEFAULT_MMIO_GATE 0x00000000fedff000ull
/** Port hosts ignore writes to: a bare exit (GATE-8). */
#define PVABI_NULL_IOPORT 0x0511u

/* Execution modes (DISC-12) and backend ids (BASE-3) */
#define PVABI_EXEC_MODE_RING0 0u
#define PVABI_EXEC_MODE_PV_RING3 1u
#define PVABI_EXEC_MODE_INPROCESS 2u
#define PVABI_BACKEND_MOCK 1u
#define PVABI_BACKEND_KVM 2u
#define PVABI_BACKEND_XEN 3u
#define PVABI_BACKEND_VENDOR_FIRST 0x80000000u

/* Boot-info handoff (DISC-2..DISC-4) */
/** "PVBI" little-endian. */
#define PVABI_BOOT_INFO_MAGIC 0x49425650u
#define PVABI_BOOT_INFO_SIZE 128u
#define PVABI_BOOT_INFO_ALIGN 8ull

/* CONSOLE (chapter 5) */
/** Longest CONSOLE.WRITE/READ (CONS-2). */
#define PVABI_CONSOLE_MAX_TRANSFER 4096ull

/* CLOCK (chapter 6) */
#define PVABI_CLOCK_PAGE_SIZE 32u
/** Required alignment of the page's guest-physical address (CLK-1). */
#define PVABI_CLOCK_PAGE_ALIGN 32ull
#define PVABI_CLOCK_FLAG_TSC_STABLE 0x01u
/** CLOCK.SET_TIMER deadline that cancels the timer (CLK-8). */
#define PVABI_CLOCK_TIMER_CANCEL 0ull

/* VCPU (chapter 7) */
#define PVABI_VCPU_STATE_STOPPED 0u
#define PVABI_VCPU_STATE_RUNNING 1u
#define PVABI_VCPU_STATE_START_PENDING 2u
#define PVABI_VCPU_STATE_BLOCKED 3u
/** VCPU.BLOCK deadline meaning no deadline (VCPU-3). */
#define PVABI_VCPU_BLOCK_FOREVER 0ull
#define PVABI_STEAL_TIME_SIZE 64u
#define PVABI_STEAL_TIME_ALIGN 64ull

/* EVENT (chapter 8) */
/** Valid ports are 1..PVABI_EVENT_NUM_PORTS-1 (EVT-2). */
#define PVABI_EVENT_NUM_PORTS 1024u
#define PVABI_EVENT_BITMAP_WORDS 16u
#define PVABI_UPCALL_MODE_NONE 0u
#define PVABI_UPCALL_MODE_VECTOR 1u
#define PVABI_UPCALL_MODE_CALLBACK 2u
#define PVABI_EVENT_MIN_UPCALL_VECTOR 32ull
/** Bytes below the interrupted RSP a callback upcall leaves alone (EVT-12). */
#define PVABI_EVENT_RED_ZONE 128ull
#define PVABI_EVENT_PAGE_PENDING_OFFSET 0u
#define PVABI_EVENT_PAGE_MASK_OFFSET 128u
#define PVABI_EVENT_PAGE_VCPU_OFFSET 256u
#define PVABI_EVENT_PAGE_VCPU_STRIDE 192u
#define PVABI_VCPU_EVENT_INFO_SELECTOR_OFFSET 0u
#define PVABI_VCPU_EVENT_INFO_UPCALL_PENDING_OFFSET 8u
#define PVABI_VCPU_EVENT_INFO_UPCALL_MASK_OFFSET 12u
#define PVABI_VCPU_EVENT_INFO_FRAME_OFFSET 64u

/* MEMORY (chapter 9) */
#define PVABI_MEM_KIND_RAM 1u
#define PVABI_MEM_KIND_RESERVED 2u
#define PVABI_MEM_KIND_LOADER 3u
#define PVABI_MEM_KIND_MMIO 4u
#define PVABI_MEM_MAP_ENTRY_SIZE 24u
#define PVABI_MEMORY_MAX_BALLOON_PAGES_PER_CALL 1048576ull

/* GRANT (chapter 10) */
#define PVABI_GRANT_ENTRY_SIZE 16u
#define PVABI_GRANT_FLAG_VALID 0x0001u
#define PVABI_GRANT_FLAG_READONLY 0x0002u
/** Any other set bit makes an entry invalid (GNT-4). */
#define PVABI_GRANT_FLAGS_KNOWN 0x0003u
#define PVABI_GRANT_DOMID_HOST 0u
#define PVABI_GRANT_MAX_ENTRIES 4096ull

/* STORE (chapter 11) */
#define PVABI_STORE_MAX_PATH 256ull
#define PVABI_STORE_MAX_VALUE 4096ull
#define PVABI_STORE_MAX_ENTRIES 1024u
#define PVABI_STORE_MAX_WATCHES 64u
#define PVABI_STORE_MAX_TRANSACTIONS 16u
#define PVABI_STORE_MAX_WATCH_EVENTS 256u
/** The txn argument meaning no transaction (STORE-15). */
#define PVABI_STORE_NO_TXN 0ull
#define PVABI_STORE_ACCESS_NONE 0u
#define PVABI_STORE_ACCESS_READ 1u
#define PVABI_STORE_ACCESS_READ_WRITE 3u
#define PVABI_WATCH_EVENT_SIZE 16u

/* POWER (chapter 12) */
#define PVABI_SHUTDOWN_POWEROFF 0u
#define PVABI_SHUTDOWN_REBOOT 1u
#define PVABI_SHUTDOWN_CRASH 2u
/** "PVCR" little-endian. */
#define PVABI_CRASH_HEADER_MAGIC 0x52435650u
#define PVABI_CRASH_HEADER_SIZE 32u
#define PVABI_CRASH_MAX_BUFFER 4096ull

/* MULTICALL (chapter 13) */
#define PVABI_MULTICALL_ENTRY_SIZE 72u
#define PVABI_MULTICALL_ENTRY_ALIGN 8ull
#define PVABI_MULTICALL_FLAG_STOP_ON_ERROR 0x00000001u
#define PVABI_MULTICALL_MAX_ENTRIES 256ull

/* Shared-ring gate (RING-*) */
/** "PVRG" little-endian. */
#define PVABI_RING_HEADER_MAGIC 0x47525650u
#define PVABI_RING_HEADER_SIZE 64u
#define PVABI_RING_MIN_ORDER 0u
#define PVABI_RING_MAX_ORDER 8u
#define PVABI_RING_HEADER_REQ_PROD_OFFSET 8u
#define PVABI_RING_HEADER_REQ_CONS_OFFSET 12u
#define PVABI_RING_HEADER_CMP_PROD_OFFSET 16u
#define PVABI_RING_HEADER_CMP_CONS_OFFSET 20u
#define PVABI_RING_HEADER_HOST_POLLING_OFFSET 24u
#define PVABI_RING_REQUEST_SIZE 64u
#define PVABI_RING_COMPLETION_SIZE 24u

/* HARNESS (appendix A, certification only) */
#define PVABI_OUTCOME_PASSED 0u
#define PVABI_OUTCOME_FAILED 1u
#define PVABI_OUTCOME_SKIPPED 2u
#define PVABI_OUTCOME_END 3u
/** "PVRP" little-endian. */
#define PVABI_REPORT_HEADER_MAGIC 0x50525650u
#define PVABI_REPORT_HEADER_SIZE 24u
#define PVABI_REPORT_MAX_RECORD 4096ull
/** HARNESS.GRANT_ACCESS third argument: read, don't write (HAR-10). */
#define PVABI_HARNESS_GRANT_ACCESS_READ 0xffffffffffffffffull

/* Building and splitting call ids (CONV-1) */
/** The call id of `function` of `service`. */
#define PVABI_CALL_ID(service, function) \
    ((((uint32_t)(service)) << 16) | ((uint32_t)(function) & 0xffffu))
/** The service id of a call id. */
#define PVABI_CALL_SERVICE(call_id) ((uint32_t)(call_id) >> 16)
/** The function number of a call id. */
#define PVABI_CALL_FUNCTION(call_id) ((uint32_t)(call_id) & 0xffffu)
_Static_assert(PVABI_ABI_VERSION == ((PVABI_ABI_VERSION_MAJOR << 16) | PVABI_ABI_VERSION_MINOR), "ABI version encoding");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_BASE, 0) == PVABI_CALL_BASE_GET_ABI_VERSION, "PVABI_CALL_BASE_GET_ABI_VERSION");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_BASE, 1) == PVABI_CALL_BASE_GET_BACKEND_ID, "PVABI_CALL_BASE_GET_BACKEND_ID");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_BASE, 2) == PVABI_CALL_BASE_GET_BACKEND_VERSION, "PVABI_CALL_BASE_GET_BACKEND_VERSION");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_BASE, 3) == PVABI_CALL_BASE_PROBE_SERVICE, "PVABI_CALL_BASE_PROBE_SERVICE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_BASE, 4) == PVABI_CALL_BASE_GET_FEATURES, "PVABI_CALL_BASE_GET_FEATURES");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_BASE, 5) == PVABI_CALL_BASE_GET_VCPU_ID, "PVABI_CALL_BASE_GET_VCPU_ID");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_BASE, 6) == PVABI_CALL_BASE_GET_VCPU_COUNT, "PVABI_CALL_BASE_GET_VCPU_COUNT");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_BASE, 7) == PVABI_CALL_BASE_RING_REGISTER, "PVABI_CALL_BASE_RING_REGISTER");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_BASE, 8) == PVABI_CALL_BASE_RING_UNREGISTER, "PVABI_CALL_BASE_RING_UNREGISTER");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_CONSOLE, 0) == PVABI_CALL_CONSOLE_WRITE, "PVABI_CALL_CONSOLE_WRITE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_CONSOLE, 1) == PVABI_CALL_CONSOLE_READ, "PVABI_CALL_CONSOLE_READ");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_CONSOLE, 2) == PVABI_CALL_CONSOLE_WRITE_BYTE, "PVABI_CALL_CONSOLE_WRITE_BYTE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_CLOCK, 0) == PVABI_CALL_CLOCK_REGISTER_PAGE, "PVABI_CALL_CLOCK_REGISTER_PAGE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_CLOCK, 1) == PVABI_CALL_CLOCK_UNREGISTER_PAGE, "PVABI_CALL_CLOCK_UNREGISTER_PAGE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_CLOCK, 2) == PVABI_CALL_CLOCK_GET_WALLCLOCK, "PVABI_CALL_CLOCK_GET_WALLCLOCK");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_CLOCK, 3) == PVABI_CALL_CLOCK_GET_TIME, "PVABI_CALL_CLOCK_GET_TIME");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_CLOCK, 4) == PVABI_CALL_CLOCK_SET_TIMER, "PVABI_CALL_CLOCK_SET_TIMER");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_VCPU, 0) == PVABI_CALL_VCPU_YIELD, "PVABI_CALL_VCPU_YIELD");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_VCPU, 1) == PVABI_CALL_VCPU_BLOCK, "PVABI_CALL_VCPU_BLOCK");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_VCPU, 2) == PVABI_CALL_VCPU_KICK, "PVABI_CALL_VCPU_KICK");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_VCPU, 3) == PVABI_CALL_VCPU_START, "PVABI_CALL_VCPU_START");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_VCPU, 4) == PVABI_CALL_VCPU_STOP, "PVABI_CALL_VCPU_STOP");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_VCPU, 5) == PVABI_CALL_VCPU_GET_STATUS, "PVABI_CALL_VCPU_GET_STATUS");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_VCPU, 6) == PVABI_CALL_VCPU_REGISTER_STEAL_TIME, "PVABI_CALL_VCPU_REGISTER_STEAL_TIME");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_VCPU, 7) == PVABI_CALL_VCPU_UPCALL_RETURN, "PVABI_CALL_VCPU_UPCALL_RETURN");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_EVENT, 0) == PVABI_CALL_EVENT_REGISTER_PAGE, "PVABI_CALL_EVENT_REGISTER_PAGE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_EVENT, 1) == PVABI_CALL_EVENT_SET_UPCALL, "PVABI_CALL_EVENT_SET_UPCALL");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_EVENT, 2) == PVABI_CALL_EVENT_ALLOC, "PVABI_CALL_EVENT_ALLOC");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_EVENT, 3) == PVABI_CALL_EVENT_BIND_VCPU, "PVABI_CALL_EVENT_BIND_VCPU");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_EVENT, 4) == PVABI_CALL_EVENT_CLOSE, "PVABI_CALL_EVENT_CLOSE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_EVENT, 5) == PVABI_CALL_EVENT_SEND, "PVABI_CALL_EVENT_SEND");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_EVENT, 6) == PVABI_CALL_EVENT_MASK, "PVABI_CALL_EVENT_MASK");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_EVENT, 7) == PVABI_CALL_EVENT_UNMASK, "PVABI_CALL_EVENT_UNMASK");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_MEMORY, 0) == PVABI_CALL_MEMORY_GET_MAP, "PVABI_CALL_MEMORY_GET_MAP");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_MEMORY, 1) == PVABI_CALL_MEMORY_BALLOON_RELEASE, "PVABI_CALL_MEMORY_BALLOON_RELEASE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_MEMORY, 2) == PVABI_CALL_MEMORY_BALLOON_RECLAIM, "PVABI_CALL_MEMORY_BALLOON_RECLAIM");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_MEMORY, 3) == PVABI_CALL_MEMORY_BALLOON_QUERY, "PVABI_CALL_MEMORY_BALLOON_QUERY");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_GRANT, 0) == PVABI_CALL_GRANT_SETUP_TABLE, "PVABI_CALL_GRANT_SETUP_TABLE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_GRANT, 1) == PVABI_CALL_GRANT_QUERY, "PVABI_CALL_GRANT_QUERY");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 0) == PVABI_CALL_STORE_READ, "PVABI_CALL_STORE_READ");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 1) == PVABI_CALL_STORE_WRITE, "PVABI_CALL_STORE_WRITE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 2) == PVABI_CALL_STORE_LIST, "PVABI_CALL_STORE_LIST");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 3) == PVABI_CALL_STORE_REMOVE, "PVABI_CALL_STORE_REMOVE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 4) == PVABI_CALL_STORE_WATCH, "PVABI_CALL_STORE_WATCH");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 5) == PVABI_CALL_STORE_UNWATCH, "PVABI_CALL_STORE_UNWATCH");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 6) == PVABI_CALL_STORE_WATCH_NEXT, "PVABI_CALL_STORE_WATCH_NEXT");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 7) == PVABI_CALL_STORE_TXN_START, "PVABI_CALL_STORE_TXN_START");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 8) == PVABI_CALL_STORE_TXN_COMMIT, "PVABI_CALL_STORE_TXN_COMMIT");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_STORE, 9) == PVABI_CALL_STORE_TXN_ABORT, "PVABI_CALL_STORE_TXN_ABORT");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_POWER, 0) == PVABI_CALL_POWER_SHUTDOWN, "PVABI_CALL_POWER_SHUTDOWN");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_POWER, 1) == PVABI_CALL_POWER_REGISTER_CRASH_BUFFER, "PVABI_CALL_POWER_REGISTER_CRASH_BUFFER");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_MULTICALL, 0) == PVABI_CALL_MULTICALL_EXECUTE, "PVABI_CALL_MULTICALL_EXECUTE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 0) == PVABI_CALL_HARNESS_REPORT, "PVABI_CALL_HARNESS_REPORT");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 1) == PVABI_CALL_HARNESS_INJECT_EVENT, "PVABI_CALL_HARNESS_INJECT_EVENT");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 2) == PVABI_CALL_HARNESS_STORE_HOST_WRITE, "PVABI_CALL_HARNESS_STORE_HOST_WRITE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 3) == PVABI_CALL_HARNESS_STORE_HOST_READ, "PVABI_CALL_HARNESS_STORE_HOST_READ");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 4) == PVABI_CALL_HARNESS_CONSOLE_READBACK, "PVABI_CALL_HARNESS_CONSOLE_READBACK");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 5) == PVABI_CALL_HARNESS_CONSOLE_INPUT, "PVABI_CALL_HARNESS_CONSOLE_INPUT");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 6) == PVABI_CALL_HARNESS_CLOCK_ADVANCE, "PVABI_CALL_HARNESS_CLOCK_ADVANCE");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 7) == PVABI_CALL_HARNESS_CLOCK_READ, "PVABI_CALL_HARNESS_CLOCK_READ");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 8) == PVABI_CALL_HARNESS_GRANT_ACCESS, "PVABI_CALL_HARNESS_GRANT_ACCESS");
_Static_assert(PVABI_CALL_ID(PVABI_SERVICE_HARNESS, 9) == PVABI_CALL_HARNESS_BALLOON_CHECK, "PVABI_CALL_HARNESS_BALLOON_CHECK");

/* Shared-memory layouts (pvabi::layout::LAYOUTS) */

/** Rust `BootInfo`: 128 bytes, 8-byte aligned. */
struct pvabi_boot_info {
    uint32_t magic;
    uint32_t abi_version;
    uint32_t size;
    uint32_t gate_kind;
    uint64_t gate_param;
    uint64_t features;
    uint32_t vcpu_count;
    uint32_t boot_vcpu;
    uint64_t mem_map_gpa;
    uint32_t mem_map_entries;
    uint32_t exec_mode;
    uint64_t cmdline_gpa;
    uint32_t cmdline_len;
    uint32_t backend_id;
    uint64_t mem_size;
    uint64_t _reserved[6];
};
_Static_assert(sizeof(struct pvabi_boot_info) == 128, "size of struct pvabi_boot_info");
_Static_assert(_Alignof(struct pvabi_boot_info) == 8, "alignment of struct pvabi_boot_info");
_Static_assert(offsetof(struct pvabi_boot_info, magic) == 0, "offset of pvabi_boot_info.magic");
_Static_assert(offsetof(struct pvabi_boot_info, abi_version) == 4, "offset of pvabi_boot_info.abi_version");
_Static_assert(offsetof(struct pvabi_boot_info, size) == 8, "offset of pvabi_boot_info.size");
_Static_assert(offsetof(struct pvabi_boot_info, gate_kind) == 12, "offset of pvabi_boot_info.gate_kind");
_Static_assert(offsetof(struct pvabi_boot_info, gate_param) == 16, "offset of pvabi_boot_info.gate_param");
_Static_assert(offsetof(struct pvabi_boot_info, features) == 24, "offset of pvabi_boot_info.features");
_Static_assert(offsetof(struct pvabi_boot_info, vcpu_count) == 32, "offset of pvabi_boot_info.vcpu_count");
_Static_assert(offsetof(struct pvabi_boot_info, boot_vcpu) == 36, "offset of pvabi_boot_info.boot_vcpu");
_Static_assert(offsetof(struct pvabi_boot_info, mem_map_gpa) == 40, "offset of pvabi_boot_info.mem_map_gpa");
_Static_assert(offsetof(struct pvabi_boot_info, mem_map_entries) == 48, "offset of pvabi_boot_info.mem_map_entries");
_Static_assert(offsetof(struct pvabi_boot_info, exec_mode) == 52, "offset of pvabi_boot_info.exec_mode");
_Static_assert(offsetof(struct pvabi_boot_info, cmdline_gpa) == 56, "offset of pvabi_boot_info.cmdline_gpa");
_Static_assert(offsetof(struct pvabi_boot_info, cmdline_len) == 64, "offset of pvabi_boot_info.cmdline_len");
_Static_assert(offsetof(struct pvabi_boot_info, backend_id) == 68, "offset of pvabi_boot_info.backend_id");
_Static_assert(offsetof(struct pvabi_boot_info, mem_size) == 72, "offset of pvabi_boot_info.mem_size");
_Static_assert(offsetof(struct pvabi_boot_info, _reserved) == 80, "offset of pvabi_boot_info._reserved");

/** Rust `MemMapEntry`: 24 bytes, 8-byte aligned. */
struct pvabi_mem_map_entry {
    uint64_t base;
    uint64_t length;
    uint32_t kind;
    uint32_t _reserved;
};
_Static_assert(sizeof(struct pvabi_mem_map_entry) == 24, "size of struct pvabi_mem_map_entry");
_Static_assert(_Alignof(struct pvabi_mem_map_entry) == 8, "alignment of struct pvabi_mem_map_entry");
_Static_assert(offsetof(struct pvabi_mem_map_entry, base) == 0, "offset of pvabi_mem_map_entry.base");
_Static_assert(offsetof(struct pvabi_mem_map_entry, length) == 8, "offset of pvabi_mem_map_entry.length");
_Static_assert(offsetof(struct pvabi_mem_map_entry, kind) == 16, "offset of pvabi_mem_map_entry.kind");
_Static_assert(offsetof(struct pvabi_mem_map_entry, _reserved) == 20, "offset of pvabi_mem_map_entry._reserved");

/** Rust `ClockPage`: 32 bytes, 8-byte aligned. */
struct pvabi_clock_page {
    uint32_t version;
    uint32_t _reserved0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags;
    uint8_t _reserved1[2];
};
_Static_assert(sizeof(struct pvabi_clock_page) == 32, "size of struct pvabi_clock_page");
_Static_assert(_Alignof(struct pvabi_clock_page) == 8, "alignment of struct pvabi_clock_page");
_Static_assert(offsetof(struct pvabi_clock_page, version) == 0, "offset of pvabi_clock_page.version");
_Static_assert(offsetof(struct pvabi_clock_page, _reserved0) == 4, "offset of pvabi_clock_page._reserved0");
_Static_assert(offsetof(struct pvabi_clock_page, tsc_timestamp) == 8, "offset of pvabi_clock_page.tsc_timestamp");
_Static_assert(offsetof(struct pvabi_clock_page, system_time) == 16, "offset of pvabi_clock_page.system_time");
_Static_assert(offsetof(struct pvabi_clock_page, tsc_to_system_mul) == 24, "offset of pvabi_clock_page.tsc_to_system_mul");
_Static_assert(offsetof(struct pvabi_clock_page, tsc_shift) == 28, "offset of pvabi_clock_page.tsc_shift");
_Static_assert(offsetof(struct pvabi_clock_page, flags) == 29, "offset of pvabi_clock_page.flags");
_Static_assert(offsetof(struct pvabi_clock_page, _reserved1) == 30, "offset of pvabi_clock_page._reserved1");

/** Rust `StealTime`: 64 bytes, 8-byte aligned. */
struct pvabi_steal_time {
    uint64_t steal;
    uint32_t version;
    uint32_t flags;
    uint8_t preempted;
    uint8_t _reserved0[3];
    uint32_t _reserved1[11];
};
_Static_assert(sizeof(struct pvabi_steal_time) == 64, "size of struct pvabi_steal_time");
_Static_assert(_Alignof(struct pvabi_steal_time) == 8, "alignment of struct pvabi_steal_time");
_Static_assert(offsetof(struct pvabi_steal_time, steal) == 0, "offset of pvabi_steal_time.steal");
_Static_assert(offsetof(struct pvabi_steal_time, version) == 8, "offset of pvabi_steal_time.version");
_Static_assert(offsetof(struct pvabi_steal_time, flags) == 12, "offset of pvabi_steal_time.flags");
_Static_assert(offsetof(struct pvabi_steal_time, preempted) == 16, "offset of pvabi_steal_time.preempted");
_Static_assert(offsetof(struct pvabi_steal_time, _reserved0) == 17, "offset of pvabi_steal_time._reserved0");
_Static_assert(offsetof(struct pvabi_steal_time, _reserved1) == 20, "offset of pvabi_steal_time._reserved1");

/** Rust `UpcallFrame`: 128 bytes, 8-byte aligned. */
struct pvabi_upcall_frame {
    uint64_t rip;
    uint64_t rsp;
    uint64_t rflags;
    uint64_t rax;
    uint64_t rcx;
    uint64_t rdx;
    uint64_t rsi;
    uint64_t rdi;
    uint64_t r8;
    uint64_t r9;
    uint64_t r10;
    uint64_t r11;
    uint64_t _reserved[4];
};
_Static_assert(sizeof(struct pvabi_upcall_frame) == 128, "size of struct pvabi_upcall_frame");
_Static_assert(_Alignof(struct pvabi_upcall_frame) == 8, "alignment of struct pvabi_upcall_frame");
_Static_assert(offsetof(struct pvabi_upcall_frame, rip) == 0, "offset of pvabi_upcall_frame.rip");
_Static_assert(offsetof(struct pvabi_upcall_frame, rsp) == 8, "offset of pvabi_upcall_frame.rsp");
_Static_assert(offsetof(struct pvabi_upcall_frame, rflags) == 16, "offset of pvabi_upcall_frame.rflags");
_Static_assert(offsetof(struct pvabi_upcall_frame, rax) == 24, "offset of pvabi_upcall_frame.rax");
_Static_assert(offsetof(struct pvabi_upcall_frame, rcx) == 32, "offset of pvabi_upcall_frame.rcx");
_Static_assert(offsetof(struct pvabi_upcall_frame, rdx) == 40, "offset of pvabi_upcall_frame.rdx");
_Static_assert(offsetof(struct pvabi_upcall_frame, rsi) == 48, "offset of pvabi_upcall_frame.rsi");
_Static_assert(offsetof(struct pvabi_upcall_frame, rdi) == 56, "offset of pvabi_upcall_frame.rdi");
_Static_assert(offsetof(struct pvabi_upcall_frame, r8) == 64, "offset of pvabi_upcall_frame.r8");
_Static_assert(offsetof(struct pvabi_upcall_frame, r9) == 72, "offset of pvabi_upcall_frame.r9");
_Static_assert(offsetof(struct pvabi_upcall_frame, r10) == 80, "offset of pvabi_upcall_frame.r10");
_Static_assert(offsetof(struct pvabi_upcall_frame, r11) == 88, "offset of pvabi_upcall_frame.r11");
_Static_assert(offsetof(struct pvabi_upcall_frame, _reserved) == 96, "offset of pvabi_upcall_frame._reserved");

/** Rust `VcpuEventInfo`: 192 bytes, 8-byte aligned. */
struct pvabi_vcpu_event_info {
    uint64_t selector;
    uint32_t upcall_pending;
    uint32_t upcall_mask;
    uint64_t _reserved[6];
    struct pvabi_upcall_frame frame;
};
_Static_assert(sizeof(struct pvabi_vcpu_event_info) == 192, "size of struct pvabi_vcpu_event_info");
_Static_assert(_Alignof(struct pvabi_vcpu_event_info) == 8, "alignment of struct pvabi_vcpu_event_info");
_Static_assert(offsetof(struct pvabi_vcpu_event_info, selector) == 0, "offset of pvabi_vcpu_event_info.selector");
_Static_assert(offsetof(struct pvabi_vcpu_event_info, upcall_pending) == 8, "offset of pvabi_vcpu_event_info.upcall_pending");
_Static_assert(offsetof(struct pvabi_vcpu_event_info, upcall_mask) == 12, "offset of pvabi_vcpu_event_info.upcall_mask");
_Static_assert(offsetof(struct pvabi_vcpu_event_info, _reserved) == 16, "offset of pvabi_vcpu_event_info._reserved");
_Static_assert(offsetof(struct pvabi_vcpu_event_info, frame) == 64, "offset of pvabi_vcpu_event_info.frame");

/** Rust `EventPage`: 4096 bytes, 8-byte aligned. */
struct pvabi_event_page {
    uint64_t pending[16];
    uint64_t mask[16];
    struct pvabi_vcpu_event_info vcpu[16];
    uint64_t _reserved[96];
};
_Static_assert(sizeof(struct pvabi_event_page) == 4096, "size of struct pvabi_event_page");
_Static_assert(_Alignof(struct pvabi_event_page) == 8, "alignment of struct pvabi_event_page");
_Static_assert(offsetof(struct pvabi_event_page, pending) == 0, "offset of pvabi_event_page.pending");
_Static_assert(offsetof(struct pvabi_event_page, mask) == 128, "offset of pvabi_event_page.mask");
_Static_assert(offsetof(struct pvabi_event_page, vcpu) == 256, "offset of pvabi_event_page.vcpu");
_Static_assert(offsetof(struct pvabi_event_page, _reserved) == 3328, "offset of pvabi_event_page._reserved");

/** Rust `GrantEntry`: 16 bytes, 8-byte aligned. */
struct pvabi_grant_entry {
    uint16_t flags;
    uint16_t _reserved;
    uint32_t domid;
    uint64_t gfn;
};
_Static_assert(sizeof(struct pvabi_grant_entry) == 16, "size of struct pvabi_grant_entry");
_Static_assert(_Alignof(struct pvabi_grant_entry) == 8, "alignment of struct pvabi_grant_entry");
_Static_assert(offsetof(struct pvabi_grant_entry, flags) == 0, "offset of pvabi_grant_entry.flags");
_Static_assert(offsetof(struct pvabi_grant_entry, _reserved) == 2, "offset of pvabi_grant_entry._reserved");
_Static_assert(offsetof(struct pvabi_grant_entry, domid) == 4, "offset of pvabi_grant_entry.domid");
_Static_assert(offsetof(struct pvabi_grant_entry, gfn) == 8, "offset of pvabi_grant_entry.gfn");

/** Rust `WatchEvent`: 16 bytes, 4-byte aligned. */
struct pvabi_watch_event {
    uint32_t watch_id;
    uint32_t path_len;
    uint32_t dropped;
    uint32_t _reserved;
};
_Static_assert(sizeof(struct pvabi_watch_event) == 16, "size of struct pvabi_watch_event");
_Static_assert(_Alignof(struct pvabi_watch_event) == 4, "alignment of struct pvabi_watch_event");
_Static_assert(offsetof(struct pvabi_watch_event, watch_id) == 0, "offset of pvabi_watch_event.watch_id");
_Static_assert(offsetof(struct pvabi_watch_event, path_len) == 4, "offset of pvabi_watch_event.path_len");
_Static_assert(offsetof(struct pvabi_watch_event, dropped) == 8, "offset of pvabi_watch_event.dropped");
_Static_assert(offsetof(struct pvabi_watch_event, _reserved) == 12, "offset of pvabi_watch_event._reserved");

/** Rust `CrashHeader`: 32 bytes, 8-byte aligned. */
struct pvabi_crash_header {
    uint32_t magic;
    uint32_t message_len;
    uint64_t code;
    uint64_t rip;
    uint64_t _reserved;
};
_Static_assert(sizeof(struct pvabi_crash_header) == 32, "size of struct pvabi_crash_header");
_Static_assert(_Alignof(struct pvabi_crash_header) == 8, "alignment of struct pvabi_crash_header");
_Static_assert(offsetof(struct pvabi_crash_header, magic) == 0, "offset of pvabi_crash_header.magic");
_Static_assert(offsetof(struct pvabi_crash_header, message_len) == 4, "offset of pvabi_crash_header.message_len");
_Static_assert(offsetof(struct pvabi_crash_header, code) == 8, "offset of pvabi_crash_header.code");
_Static_assert(offsetof(struct pvabi_crash_header, rip) == 16, "offset of pvabi_crash_header.rip");
_Static_assert(offsetof(struct pvabi_crash_header, _reserved) == 24, "offset of pvabi_crash_header._reserved");

/** Rust `MulticallEntry`: 72 bytes, 8-byte aligned. */
struct pvabi_multicall_entry {
    uint32_t call_id;
    uint32_t flags;
    uint64_t args[6];
    int64_t status;
    uint64_t value;
};
_Static_assert(sizeof(struct pvabi_multicall_entry) == 72, "size of struct pvabi_multicall_entry");
_Static_assert(_Alignof(struct pvabi_multicall_entry) == 8, "alignment of struct pvabi_multicall_entry");
_Static_assert(offsetof(struct pvabi_multicall_entry, call_id) == 0, "offset of pvabi_multicall_entry.call_id");
_Static_assert(offsetof(struct pvabi_multicall_entry, flags) == 4, "offset of pvabi_multicall_entry.flags");
_Static_assert(offsetof(struct pvabi_multicall_entry, args) == 8, "offset of pvabi_multicall_entry.args");
_Static_assert(offsetof(struct pvabi_multicall_entry, status) == 56, "offset of pvabi_multicall_entry.status");
_Static_assert(offsetof(struct pvabi_multicall_entry, value) == 64, "offset of pvabi_multicall_entry.value");

/** Rust `RingHeader`: 64 bytes, 8-byte aligned. */
struct pvabi_ring_header {
    uint32_t magic;
    uint32_t order;
    uint32_t req_prod;
    uint32_t req_cons;
    uint32_t cmp_prod;
    uint32_t cmp_cons;
    uint32_t host_polling;
    uint32_t _reserved0;
    uint64_t _reserved1[4];
};
_Static_assert(sizeof(struct pvabi_ring_header) == 64, "size of struct pvabi_ring_header");
_Static_assert(_Alignof(struct pvabi_ring_header) == 8, "alignment of struct pvabi_ring_header");
_Static_assert(offsetof(struct pvabi_ring_header, magic) == 0, "offset of pvabi_ring_header.magic");
_Static_assert(offsetof(struct pvabi_ring_header, order) == 4, "offset of pvabi_ring_header.order");
_Static_assert(offsetof(struct pvabi_ring_header, req_prod) == 8, "offset of pvabi_ring_header.req_prod");
_Static_assert(offsetof(struct pvabi_ring_header, req_cons) == 12, "offset of pvabi_ring_header.req_cons");
_Static_assert(offsetof(struct pvabi_ring_header, cmp_prod) == 16, "offset of pvabi_ring_header.cmp_prod");
_Static_assert(offsetof(struct pvabi_ring_header, cmp_cons) == 20, "offset of pvabi_ring_header.cmp_cons");
_Static_assert(offsetof(struct pvabi_ring_header, host_polling) == 24, "offset of pvabi_ring_header.host_polling");
_Static_assert(offsetof(struct pvabi_ring_header, _reserved0) == 28, "offset of pvabi_ring_header._reserved0");
_Static_assert(offsetof(struct pvabi_ring_header, _reserved1) == 32, "offset of pvabi_ring_header._reserved1");

/** Rust `RingRequest`: 64 bytes, 8-byte aligned. */
struct pvabi_ring_request {
    uint32_t cookie;
    uint32_t call_id;
    uint64_t args[6];
    uint64_t _reserved;
};
_Static_assert(sizeof(struct pvabi_ring_request) == 64, "size of struct pvabi_ring_request");
_Static_assert(_Alignof(struct pvabi_ring_request) == 8, "alignment of struct pvabi_ring_request");
_Static_assert(offsetof(struct pvabi_ring_request, cookie) == 0, "offset of pvabi_ring_request.cookie");
_Static_assert(offsetof(struct pvabi_ring_request, call_id) == 4, "offset of pvabi_ring_request.call_id");
_Static_assert(offsetof(struct pvabi_ring_request, args) == 8, "offset of pvabi_ring_request.args");
_Static_assert(offsetof(struct pvabi_ring_request, _reserved) == 56, "offset of pvabi_ring_request._reserved");

/** Rust `RingCompletion`: 24 bytes, 8-byte aligned. */
struct pvabi_ring_completion {
    uint32_t cookie;
    uint32_t _reserved;
    int64_t status;
    uint64_t value;
};
_Static_assert(sizeof(struct pvabi_ring_completion) == 24, "size of struct pvabi_ring_completion");
_Static_assert(_Alignof(struct pvabi_ring_completion) == 8, "alignment of struct pvabi_ring_completion");
_Static_assert(offsetof(struct pvabi_ring_completion, cookie) == 0, "offset of pvabi_ring_completion.cookie");
_Static_assert(offsetof(struct pvabi_ring_completion, _reserved) == 4, "offset of pvabi_ring_completion._reserved");
_Static_assert(offsetof(struct pvabi_ring_completion, status) == 8, "offset of pvabi_ring_completion.status");
_Static_assert(offsetof(struct pvabi_ring_completion, value) == 16, "offset of pvabi_ring_completion.value");

/** Rust `ReportHeader`: 24 bytes, 4-byte aligned. */
struct pvabi_report_header {
    uint32_t magic;
    uint32_t outcome;
    uint32_t clauses_len;
    uint32_t name_len;
    uint32_t detail_len;
    uint32_t _reserved;
};
_Static_assert(sizeof(struct pvabi_report_header) == 24, "size of struct pvabi_report_header");
_Static_assert(_Alignof(struct pvabi_report_header) == 4, "alignment of struct pvabi_report_header");
_Static_assert(offsetof(struct pvabi_report_header, magic) == 0, "offset of pvabi_report_header.magic");
_Static_assert(offsetof(struct pvabi_report_header, outcome) == 4, "offset of pvabi_report_header.outcome");
_Static_assert(offsetof(struct pvabi_report_header, clauses_len) == 8, "offset of pvabi_report_header.clauses_len");
_Static_assert(offsetof(struct pvabi_report_header, name_len) == 12, "offset of pvabi_report_header.name_len");
_Static_assert(offsetof(struct pvabi_report_header, detail_len) == 16, "offset of pvabi_report_header.detail_len");
_Static_assert(offsetof(struct pvabi_report_header, _reserved) == 20, "offset of pvabi_report_header._reserved");

/*
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

/**
 * I/O-port gate (GATE-2): `out dx, eax` to `port`, which travels in RDX.
 */
static inline struct pvabi_ret pvabi_ioport_call(uint16_t port, uint32_t call_id,
        uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
    uint64_t rax = call_id;
    uint64_t rdi = a0;
    uint64_t rsi = a1;
    uint64_t rdx = port;
    register uint64_t r8 __asm__("r8") = a2;
    register uint64_t r9 __asm__("r9") = a3;
    register uint64_t r10 __asm__("r10") = a4;
    register uint64_t r11 __asm__("r11") = a5;
    struct pvabi_ret ret;
    /* The host preserves RSI, RDX and R8..R11 (CONV-8); they are still declared as written
     * so that a faulty host cannot corrupt the caller's state. */
    __asm__ __volatile__("outl %%eax, %%dx"
                         : "+a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r8), "+r"(r9),
                           "+r"(r10), "+r"(r11)
                         :
                         : "memory", "cc");
    ret.status = pvabi_status_from_reg(rax);
    ret.value = rdi;
    return ret;
}

/**
 * MMIO gate (GATE-4): a 32-bit store of the call id to the trigger word; `trigger`
 * is where the kernel has mapped the gate's guest-physical address (uncached). It
 * travels in RDX.
 */
static inline struct pvabi_ret pvabi_mmio_call(volatile uint32_t *trigger, uint32_t call_id,
        uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
    uint64_t rax = call_id;
    uint64_t rdi = a0;
    uint64_t rsi = a1;
    uint64_t rdx = (uint64_t)(uintptr_t)trigger;
    register uint64_t r8 __asm__("r8") = a2;
    register uint64_t r9 __asm__("r9") = a3;
    register uint64_t r10 __asm__("r10") = a4;
    register uint64_t r11 __asm__("r11") = a5;
    struct pvabi_ret ret;
    /* The host preserves RSI, RDX and R8..R11 (CONV-8); they are still declared as written
     * so that a faulty host cannot corrupt the caller's state. */
    __asm__ __volatile__("movl %%eax, (%%rdx)"
                         : "+a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r8), "+r"(r9),
                           "+r"(r10), "+r"(r11)
                         :
                         : "memory", "cc");
    ret.status = pvabi_status_from_reg(rax);
    ret.value = rdi;
    return ret;
}

/**
 * VMCALL gate (GATE-6), Intel. RDX is 0.
 */
static inline struct pvabi_ret pvabi_vmcall_call(uint32_t call_id,
        uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
    uint64_t rax = call_id;
    uint64_t rdi = a0;
    uint64_t rsi = a1;
    uint64_t rdx = 0;
    register uint64_t r8 __asm__("r8") = a2;
    register uint64_t r9 __asm__("r9") = a3;
    register uint64_t r10 __asm__("r10") = a4;
    register uint64_t r11 __asm__("r11") = a5;
    struct pvabi_ret ret;
    /* The host preserves RSI, RDX and R8..R11 (CONV-8); they are still declared as written
     * so that a faulty host cannot corrupt the caller's state. */
    __asm__ __volatile__("vmcall"
                         : "+a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r8), "+r"(r9),
                           "+r"(r10), "+r"(r11)
                         :
                         : "memory", "cc");
    ret.status = pvabi_status_from_reg(rax);
    ret.value = rdi;
    return ret;
}

/**
 * VMMCALL gate (GATE-6), AMD. RDX is 0.
 */
static inline struct pvabi_ret pvabi_vmmcall_call(uint32_t call_id,
        uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
    uint64_t rax = call_id;
    uint64_t rdi = a0;
    uint64_t rsi = a1;
    uint64_t rdx = 0;
    register uint64_t r8 __asm__("r8") = a2;
    register uint64_t r9 __asm__("r9") = a3;
    register uint64_t r10 __asm__("r10") = a4;
    register uint64_t r11 __asm__("r11") = a5;
    struct pvabi_ret ret;
    /* The host preserves RSI, RDX and R8..R11 (CONV-8); they are still declared as written
     * so that a faulty host cannot corrupt the caller's state. */
    __asm__ __volatile__("vmmcall"
                         : "+a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r8), "+r"(r9),
                           "+r"(r10), "+r"(r11)
                         :
                         : "memory", "cc");
    ret.status = pvabi_status_from_reg(rax);
    ret.value = rdi;
    return ret;
}

/**
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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PVABI_H */

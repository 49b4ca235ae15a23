//! Decoding gate registers into a typed [`Call`] and encoding the return pair (spec `CONV-*`).
//!
//! Decoding is purely structural: it identifies the call and names its argument registers.
//! Arguments keep their full 64-bit register value; range checks (a port below
//! `NUM_PORTS`, a vCPU id below the count, a byte below 256) are made by the service, so that
//! every out-of-range value gets the same status whichever gate it came through.
//! Registers a call does not read are ignored.

use pvabi::call;
use pvabi::{CallId, Regs, Ret, Status};

/// One decoded v1 call (HARNESS included). Argument names follow the function tables in
/// `pvabi::call`.
#[allow(missing_docs)] // Field names are the argument names of the spec's function table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// BASE.GET_ABI_VERSION (`BASE-1`).
    GetAbiVersion,
    /// BASE.GET_BACKEND_ID (`BASE-3`).
    GetBackendId,
    /// BASE.GET_BACKEND_VERSION (`BASE-4`).
    GetBackendVersion,
    /// BASE.PROBE_SERVICE (`BASE-5`).
    ProbeService { service: u64 },
    /// BASE.GET_FEATURES (`BASE-7`).
    GetFeatures,
    /// BASE.GET_VCPU_ID (`BASE-8`).
    GetVcpuId,
    /// BASE.GET_VCPU_COUNT (`BASE-9`).
    GetVcpuCount,
    /// BASE.RING_REGISTER (`RING-1`).
    RingRegister { ring_gpa: u64, order: u64 },
    /// BASE.RING_UNREGISTER (`RING-7`).
    RingUnregister,
    /// CONSOLE.WRITE (`CONS-1`).
    ConsoleWrite { buf_gpa: u64, len: u64 },
    /// CONSOLE.READ (`CONS-4`).
    ConsoleRead { buf_gpa: u64, len: u64 },
    /// CONSOLE.WRITE_BYTE (`CONS-3`).
    ConsoleWriteByte { byte: u64 },
    /// CLOCK.REGISTER_PAGE (`CLK-1`).
    ClockRegisterPage { page_gpa: u64 },
    /// CLOCK.UNREGISTER_PAGE (`CLK-5`).
    ClockUnregisterPage,
    /// CLOCK.GET_WALLCLOCK (`CLK-6`).
    ClockGetWallclock,
    /// CLOCK.GET_TIME (`CLK-7`).
    ClockGetTime,
    /// CLOCK.SET_TIMER (`CLK-8`).
    ClockSetTimer { deadline_ns: u64, port: u64 },
    /// VCPU.YIELD (`VCPU-2`).
    VcpuYield,
    /// VCPU.BLOCK (`VCPU-3`).
    VcpuBlock { deadline_ns: u64 },
    /// VCPU.KICK (`VCPU-5`).
    VcpuKick { vcpu: u64 },
    /// VCPU.START (`VCPU-6`).
    VcpuStart {
        vcpu: u64,
        entry: u64,
        stack: u64,
        arg: u64,
    },
    /// VCPU.STOP (`VCPU-9`).
    VcpuStop,
    /// VCPU.GET_STATUS (`VCPU-10`).
    VcpuGetStatus { vcpu: u64 },
    /// VCPU.REGISTER_STEAL_TIME (`VCPU-11`).
    VcpuRegisterStealTime { record_gpa: u64 },
    /// VCPU.UPCALL_RETURN (`EVT-14`).
    VcpuUpcallReturn,
    /// EVENT.REGISTER_PAGE (`EVT-1`).
    EventRegisterPage { page_gpa: u64 },
    /// EVENT.SET_UPCALL (`EVT-10`).
    EventSetUpcall { mode: u64, target: u64 },
    /// EVENT.ALLOC (`EVT-3`).
    EventAlloc,
    /// EVENT.BIND_VCPU (`EVT-4`).
    EventBindVcpu { port: u64, vcpu: u64 },
    /// EVENT.CLOSE (`EVT-5`).
    EventClose { port: u64 },
    /// EVENT.SEND (`EVT-6`).
    EventSend { port: u64 },
    /// EVENT.MASK (`EVT-8`).
    EventMask { port: u64 },
    /// EVENT.UNMASK (`EVT-9`).
    EventUnmask { port: u64 },
    /// MEMORY.GET_MAP (`MEM-1`).
    MemoryGetMap { buf_gpa: u64, max_entries: u64 },
    /// MEMORY.BALLOON_RELEASE (`MEM-4`).
    BalloonRelease { gpa: u64, pages: u64 },
    /// MEMORY.BALLOON_RECLAIM (`MEM-6`).
    BalloonReclaim { gpa: u64, pages: u64 },
    /// MEMORY.BALLOON_QUERY (`MEM-8`).
    BalloonQuery,
    /// GRANT.SETUP_TABLE (`GNT-1`).
    GrantSetupTable { table_gpa: u64, entries: u64 },
    /// GRANT.QUERY (`GNT-3`).
    GrantQuery,
    /// STORE.READ (`STORE-3`).
    StoreRead {
        path_gpa: u64,
        path_len: u64,
        buf_gpa: u64,
        buf_len: u64,
        txn: u64,
    },
    /// STORE.WRITE (`STORE-5`).
    StoreWrite {
        path_gpa: u64,
        path_len: u64,
        val_gpa: u64,
        val_len: u64,
        txn: u64,
    },
    /// STORE.LIST (`STORE-7`).
    StoreList {
        path_gpa: u64,
        path_len: u64,
        buf_gpa: u64,
        buf_len: u64,
        txn: u64,
    },
    /// STORE.REMOVE (`STORE-8`).
    StoreRemove {
        path_gpa: u64,
        path_len: u64,
        txn: u64,
    },
    /// STORE.WATCH (`STORE-10`).
    StoreWatch {
        path_gpa: u64,
        path_len: u64,
        port: u64,
    },
    /// STORE.UNWATCH (`STORE-12`).
    StoreUnwatch { watch_id: u64 },
    /// STORE.WATCH_NEXT (`STORE-13`).
    StoreWatchNext { buf_gpa: u64, buf_len: u64 },
    /// STORE.TXN_START (`STORE-15`).
    StoreTxnStart,
    /// STORE.TXN_COMMIT (`STORE-16`).
    StoreTxnCommit { txn: u64 },
    /// STORE.TXN_ABORT (`STORE-18`).
    StoreTxnAbort { txn: u64 },
    /// POWER.SHUTDOWN (`PWR-1`).
    PowerShutdown { reason: u64, code: u64 },
    /// POWER.REGISTER_CRASH_BUFFER (`PWR-4`).
    PowerRegisterCrashBuffer { buf_gpa: u64, len: u64 },
    /// MULTICALL.EXECUTE (`MC-1`).
    MulticallExecute { array_gpa: u64, count: u64 },
    /// HARNESS.REPORT (`HAR-2`).
    HarnessReport { record_gpa: u64, len: u64 },
    /// HARNESS.INJECT_EVENT (`HAR-3`).
    HarnessInjectEvent { port: u64 },
    /// HARNESS.STORE_HOST_WRITE (`HAR-4`).
    HarnessStoreHostWrite {
        path_gpa: u64,
        path_len: u64,
        val_gpa: u64,
        val_len: u64,
        access: u64,
    },
    /// HARNESS.STORE_HOST_READ (`HAR-5`).
    HarnessStoreHostRead {
        path_gpa: u64,
        path_len: u64,
        buf_gpa: u64,
        buf_len: u64,
    },
    /// HARNESS.CONSOLE_READBACK (`HAR-6`).
    HarnessConsoleReadback { buf_gpa: u64, len: u64 },
    /// HARNESS.CONSOLE_INPUT (`HAR-7`).
    HarnessConsoleInput { buf_gpa: u64, len: u64 },
    /// HARNESS.CLOCK_ADVANCE (`HAR-8`).
    HarnessClockAdvance { ns: u64 },
    /// HARNESS.CLOCK_READ (`HAR-9`).
    HarnessClockRead,
    /// HARNESS.GRANT_ACCESS (`HAR-10`).
    HarnessGrantAccess {
        grant_ref: u64,
        offset: u64,
        write: u64,
    },
    /// HARNESS.BALLOON_CHECK (`HAR-11`).
    HarnessBalloonCheck { gpa: u64 },
}

impl Call {
    /// Decodes the entry registers of a call.
    ///
    /// # Errors
    ///
    /// [`Status::NOT_SUPPORTED`] when RAX bits 63..32 are set or the call id is not a v1 call
    /// (`CONV-4`, `CONV-7`). Whether HARNESS is offered is decided by the dispatcher, not here.
    pub fn decode(regs: &Regs) -> Result<Call, Status> {
        let id = CallId::from_reg(regs.rax).ok_or(Status::NOT_SUPPORTED)?;
        let [a0, a1, a2, a3, a4, _a5] = regs.args;
        Ok(match id {
            call::BASE_GET_ABI_VERSION => Call::GetAbiVersion,
            call::BASE_GET_BACKEND_ID => Call::GetBackendId,
            call::BASE_GET_BACKEND_VERSION => Call::GetBackendVersion,
            call::BASE_PROBE_SERVICE => Call::ProbeService { service: a0 },
            call::BASE_GET_FEATURES => Call::GetFeatures,
            call::BASE_GET_VCPU_ID => Call::GetVcpuId,
            call::BASE_GET_VCPU_COUNT => Call::GetVcpuCount,
            call::BASE_RING_REGISTER => Call::RingRegister {
                ring_gpa: a0,
                order: a1,
            },
            call::BASE_RING_UNREGISTER => Call::RingUnregister,
            call::CONSOLE_WRITE => Call::ConsoleWrite {
                buf_gpa: a0,
                len: a1,
            },
            call::CONSOLE_READ => Call::ConsoleRead {
                buf_gpa: a0,
                len: a1,
            },
            call::CONSOLE_WRITE_BYTE => Call::ConsoleWriteByte { byte: a0 },
            call::CLOCK_REGISTER_PAGE => Call::ClockRegisterPage { page_gpa: a0 },
            call::CLOCK_UNREGISTER_PAGE => Call::ClockUnregisterPage,
            call::CLOCK_GET_WALLCLOCK => Call::ClockGetWallclock,
            call::CLOCK_GET_TIME => Call::ClockGetTime,
            call::CLOCK_SET_TIMER => Call::ClockSetTimer {
                deadline_ns: a0,
                port: a1,
            },
            call::VCPU_YIELD => Call::VcpuYield,
            call::VCPU_BLOCK => Call::VcpuBlock { deadline_ns: a0 },
            call::VCPU_KICK => Call::VcpuKick { vcpu: a0 },
            call::VCPU_START => Call::VcpuStart {
                vcpu: a0,
                entry: a1,
                stack: a2,
                arg: a3,
            },
            call::VCPU_STOP => Call::VcpuStop,
            call::VCPU_GET_STATUS => Call::VcpuGetStatus { vcpu: a0 },
            call::VCPU_REGISTER_STEAL_TIME => Call::VcpuRegisterStealTime { record_gpa: a0 },
            call::VCPU_UPCALL_RETURN => Call::VcpuUpcallReturn,
            call::EVENT_REGISTER_PAGE => Call::EventRegisterPage { page_gpa: a0 },
            call::EVENT_SET_UPCALL => Call::EventSetUpcall {
                mode: a0,
                target: a1,
            },
            call::EVENT_ALLOC => Call::EventAlloc,
            call::EVENT_BIND_VCPU => Call::EventBindVcpu { port: a0, vcpu: a1 },
            call::EVENT_CLOSE => Call::EventClose { port: a0 },
            call::EVENT_SEND => Call::EventSend { port: a0 },
            call::EVENT_MASK => Call::EventMask { port: a0 },
            call::EVENT_UNMASK => Call::EventUnmask { port: a0 },
            call::MEMORY_GET_MAP => Call::MemoryGetMap {
                buf_gpa: a0,
                max_entries: a1,
            },
            call::MEMORY_BALLOON_RELEASE => Call::BalloonRelease { gpa: a0, pages: a1 },
            call::MEMORY_BALLOON_RECLAIM => Call::BalloonReclaim { gpa: a0, pages: a1 },
            call::MEMORY_BALLOON_QUERY => Call::BalloonQuery,
            call::GRANT_SETUP_TABLE => Call::GrantSetupTable {
                table_gpa: a0,
                entries: a1,
            },
            call::GRANT_QUERY => Call::GrantQuery,
            call::STORE_READ => Call::StoreRead {
                path_gpa: a0,
                path_len: a1,
                buf_gpa: a2,
                buf_len: a3,
                txn: a4,
            },
            call::STORE_WRITE => Call::StoreWrite {
                path_gpa: a0,
                path_len: a1,
                val_gpa: a2,
                val_len: a3,
                txn: a4,
            },
            call::STORE_LIST => Call::StoreList {
                path_gpa: a0,
                path_len: a1,
                buf_gpa: a2,
                buf_len: a3,
                txn: a4,
            },
            call::STORE_REMOVE => Call::StoreRemove {
                path_gpa: a0,
                path_len: a1,
                txn: a2,
            },
            call::STORE_WATCH => Call::StoreWatch {
                path_gpa: a0,
                path_len: a1,
                port: a2,
            },
            call::STORE_UNWATCH => Call::StoreUnwatch { watch_id: a0 },
            call::STORE_WATCH_NEXT => Call::StoreWatchNext {
                buf_gpa: a0,
                buf_len: a1,
            },
            call::STORE_TXN_START => Call::StoreTxnStart,
            call::STORE_TXN_COMMIT => Call::StoreTxnCommit { txn: a0 },
            call::STORE_TXN_ABORT => Call::StoreTxnAbort { txn: a0 },
            call::POWER_SHUTDOWN => Call::PowerShutdown {
                reason: a0,
                code: a1,
            },
            call::POWER_REGISTER_CRASH_BUFFER => Call::PowerRegisterCrashBuffer {
                buf_gpa: a0,
                len: a1,
            },
            call::MULTICALL_EXECUTE => Call::MulticallExecute {
                array_gpa: a0,
                count: a1,
            },
            call::HARNESS_REPORT => Call::HarnessReport {
                record_gpa: a0,
                len: a1,
            },
            call::HARNESS_INJECT_EVENT => Call::HarnessInjectEvent { port: a0 },
            call::HARNESS_STORE_HOST_WRITE => Call::HarnessStoreHostWrite {
                path_gpa: a0,
                path_len: a1,
                val_gpa: a2,
                val_len: a3,
                access: a4,
            },
            call::HARNESS_STORE_HOST_READ => Call::HarnessStoreHostRead {
                path_gpa: a0,
                path_len: a1,
                buf_gpa: a2,
                buf_len: a3,
            },
            call::HARNESS_CONSOLE_READBACK => Call::HarnessConsoleReadback {
                buf_gpa: a0,
                len: a1,
            },
            call::HARNESS_CONSOLE_INPUT => Call::HarnessConsoleInput {
                buf_gpa: a0,
                len: a1,
            },
            call::HARNESS_CLOCK_ADVANCE => Call::HarnessClockAdvance { ns: a0 },
            call::HARNESS_CLOCK_READ => Call::HarnessClockRead,
            call::HARNESS_GRANT_ACCESS => Call::HarnessGrantAccess {
                grant_ref: a0,
                offset: a1,
                write: a2,
            },
            call::HARNESS_BALLOON_CHECK => Call::HarnessBalloonCheck { gpa: a0 },
            _ => return Err(Status::NOT_SUPPORTED),
        })
    }

    /// Whether this is a call of the HARNESS service.
    pub const fn is_harness(&self) -> bool {
        matches!(
            self,
            Call::HarnessReport { .. }
                | Call::HarnessInjectEvent { .. }
                | Call::HarnessStoreHostWrite { .. }
                | Call::HarnessStoreHostRead { .. }
                | Call::HarnessConsoleReadback { .. }
                | Call::HarnessConsoleInput { .. }
                | Call::HarnessClockAdvance { .. }
                | Call::HarnessClockRead
                | Call::HarnessGrantAccess { .. }
                | Call::HarnessBalloonCheck { .. }
        )
    }

    /// Whether the call may appear in a multicall entry or a ring request (spec `MC-4`): not
    /// POWER.SHUTDOWN, VCPU.STOP, VCPU.UPCALL_RETURN, VCPU.BLOCK or MULTICALL.EXECUTE.
    pub const fn allowed_in_batch(&self) -> bool {
        !matches!(
            self,
            Call::PowerShutdown { .. }
                | Call::VcpuStop
                | Call::VcpuUpcallReturn
                | Call::VcpuBlock { .. }
                | Call::MulticallExecute { .. }
        )
    }
}

/// Encodes a return pair into the (RAX, RDI) register values (spec `CONV-5`, `CONV-6`).
pub const fn encode_ret(ret: Ret) -> (u64, u64) {
    (ret.status.to_reg(), ret.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_decodes_and_nothing_else_does() {
        for info in pvabi::call::CALLS {
            let regs = Regs::new(info.id, [1, 2, 3, 4, 5, 6]);
            assert!(Call::decode(&regs).is_ok(), "{}", info.name);
        }
        // Unknown function of a known service, unknown service, high bits.
        for rax in [
            0x0001_0003u64,
            0x0100_0000,
            0x7F00_000A,
            0x8000_0000,
            1 << 32,
            u64::MAX,
        ] {
            let regs = Regs { rax, args: [0; 6] };
            assert_eq!(Call::decode(&regs), Err(Status::NOT_SUPPORTED), "{rax:#x}");
        }
        let regs = Regs::new(call::STORE_READ, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            Call::decode(&regs),
            Ok(Call::StoreRead {
                path_gpa: 1,
                path_len: 2,
                buf_gpa: 3,
                buf_len: 4,
                txn: 5
            })
        );
        assert_eq!(encode_ret(Ret::err(Status::DENIED)), (u64::MAX - 3, 0));
    }

    #[test]
    fn decode_never_panics_on_any_id() {
        for svc in 0u64..0x12 {
            for f in 0u64..0x20 {
                let _ = Call::decode(&Regs {
                    rax: svc << 16 | f,
                    args: [u64::MAX; 6],
                });
            }
        }
    }
}

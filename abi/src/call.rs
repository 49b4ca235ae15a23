//! Call ids: service id + function number (spec chapter "Calling convention", clauses
//! `CONV-1`..`CONV-4`, and the function tables of each service chapter).
//!
//! A call id is a 32-bit value: bits 31..16 are the service id, bits 15..0 the function number
//! (an SMCCC-like split with room for 65 536 services of 65 536 functions each). Service ids
//! `0x8000..=0xFFFF` are for vendor extensions; pvabi never assigns them.

/// A service id: the high 16 bits of a call id (spec `CONV-2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct ServiceId(pub u16);

impl ServiceId {
    /// BASE: version, probing, features, identity, the ring gate (chapter 4).
    pub const BASE: ServiceId = ServiceId(0x0000);
    /// CONSOLE: byte stream to and from the host (chapter 5).
    pub const CONSOLE: ServiceId = ServiceId(0x0001);
    /// CLOCK: pvclock page, wall clock, one-shot timer (chapter 6).
    pub const CLOCK: ServiceId = ServiceId(0x0002);
    /// VCPU: yield, block, kick, start/stop, steal time, upcall return (chapter 7).
    pub const VCPU: ServiceId = ServiceId(0x0003);
    /// EVENT: event channels and upcalls (chapter 8).
    pub const EVENT: ServiceId = ServiceId(0x0004);
    /// MEMORY: memory map and balloon (chapter 9).
    pub const MEMORY: ServiceId = ServiceId(0x0005);
    /// GRANT: grant table (chapter 10).
    pub const GRANT: ServiceId = ServiceId(0x0006);
    /// STORE: hierarchical configuration store (chapter 11).
    pub const STORE: ServiceId = ServiceId(0x0007);
    /// POWER: shutdown and crash report (chapter 12).
    pub const POWER: ServiceId = ServiceId(0x0008);
    /// MULTICALL: batches of calls (chapter 13).
    pub const MULTICALL: ServiceId = ServiceId(0x0009);
    /// HARNESS: present only while certifying (appendix A).
    pub const HARNESS: ServiceId = ServiceId(0x7F00);
    /// First service id of the vendor range (spec `CONV-3`).
    pub const VENDOR_FIRST: ServiceId = ServiceId(0x8000);

    /// Every standard v1 service (HARNESS excluded), in id order.
    pub const V1: [ServiceId; 10] = [
        Self::BASE,
        Self::CONSOLE,
        Self::CLOCK,
        Self::VCPU,
        Self::EVENT,
        Self::MEMORY,
        Self::GRANT,
        Self::STORE,
        Self::POWER,
        Self::MULTICALL,
    ];

    /// The spec's name of a known service, or `None`.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0000 => "BASE",
            0x0001 => "CONSOLE",
            0x0002 => "CLOCK",
            0x0003 => "VCPU",
            0x0004 => "EVENT",
            0x0005 => "MEMORY",
            0x0006 => "GRANT",
            0x0007 => "STORE",
            0x0008 => "POWER",
            0x0009 => "MULTICALL",
            0x7F00 => "HARNESS",
            _ => return None,
        })
    }
}

/// A call id: `service << 16 | function` (spec `CONV-1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct CallId(pub u32);

impl CallId {
    /// Builds a call id from its parts.
    pub const fn new(service: ServiceId, function: u16) -> Self {
        CallId(((service.0 as u32) << 16) | function as u32)
    }

    /// The service part.
    pub const fn service(self) -> ServiceId {
        ServiceId((self.0 >> 16) as u16)
    }

    /// The function part.
    pub const fn function(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// Decodes the call-id register (spec `CONV-4`): bits 63..32 must be zero; a value with
    /// any of them set is no valid call id and is answered with NOT_SUPPORTED.
    pub const fn from_reg(reg: u64) -> Option<CallId> {
        if reg >> 32 != 0 {
            None
        } else {
            Some(CallId(reg as u32))
        }
    }

    /// This id's entry in [`CALLS`], if it is a v1 call (HARNESS included).
    pub fn info(self) -> Option<&'static CallInfo> {
        CALLS.iter().find(|c| c.id.0 == self.0)
    }
}

/// One row of the function table: what the spec lists for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallInfo {
    /// The call id.
    pub id: CallId,
    /// `SERVICE.FUNCTION` as written in the spec, e.g. `"CONSOLE.WRITE"`.
    pub name: &'static str,
    /// How many argument registers the call reads (0..=6).
    pub args: u8,
    /// Whether the call may return to the caller (false for POWER.SHUTDOWN, VCPU.STOP,
    /// VCPU.UPCALL_RETURN on success).
    pub returns: bool,
}

macro_rules! calls {
    ($( $(#[$m:meta])* $konst:ident = ($svc:ident, $func:literal, $name:literal, $args:literal, $ret:literal); )*) => {
        $( $(#[$m])* pub const $konst: CallId = CallId::new(ServiceId::$svc, $func); )*
        /// The function table of every v1 call (HARNESS included), in id order.
        pub const CALLS: &[CallInfo] = &[
            $( CallInfo { id: $konst, name: $name, args: $args, returns: $ret }, )*
        ];
    };
}

calls! {
    /// BASE.GET_ABI_VERSION() -> version (`BASE-1`).
    BASE_GET_ABI_VERSION = (BASE, 0, "BASE.GET_ABI_VERSION", 0, true);
    /// BASE.GET_BACKEND_ID() -> backend id (`BASE-3`).
    BASE_GET_BACKEND_ID = (BASE, 1, "BASE.GET_BACKEND_ID", 0, true);
    /// BASE.GET_BACKEND_VERSION() -> backend-defined version (`BASE-4`).
    BASE_GET_BACKEND_VERSION = (BASE, 2, "BASE.GET_BACKEND_VERSION", 0, true);
    /// BASE.PROBE_SERVICE(service) -> function count, 0 when absent (`BASE-5`).
    BASE_PROBE_SERVICE = (BASE, 3, "BASE.PROBE_SERVICE", 1, true);
    /// BASE.GET_FEATURES() -> feature bits (`BASE-7`).
    BASE_GET_FEATURES = (BASE, 4, "BASE.GET_FEATURES", 0, true);
    /// BASE.GET_VCPU_ID() -> calling vCPU's id (`BASE-8`).
    BASE_GET_VCPU_ID = (BASE, 5, "BASE.GET_VCPU_ID", 0, true);
    /// BASE.GET_VCPU_COUNT() -> number of vCPUs (`BASE-9`).
    BASE_GET_VCPU_COUNT = (BASE, 6, "BASE.GET_VCPU_COUNT", 0, true);
    /// BASE.RING_REGISTER(ring_gpa, order) -> doorbell I/O port (`RING-1`).
    BASE_RING_REGISTER = (BASE, 7, "BASE.RING_REGISTER", 2, true);
    /// BASE.RING_UNREGISTER() (`RING-7`).
    BASE_RING_UNREGISTER = (BASE, 8, "BASE.RING_UNREGISTER", 0, true);

    /// CONSOLE.WRITE(buf_gpa, len) -> bytes written (`CONS-1`).
    CONSOLE_WRITE = (CONSOLE, 0, "CONSOLE.WRITE", 2, true);
    /// CONSOLE.READ(buf_gpa, len) -> bytes read (`CONS-4`).
    CONSOLE_READ = (CONSOLE, 1, "CONSOLE.READ", 2, true);
    /// CONSOLE.WRITE_BYTE(byte) (`CONS-3`).
    CONSOLE_WRITE_BYTE = (CONSOLE, 2, "CONSOLE.WRITE_BYTE", 1, true);

    /// CLOCK.REGISTER_PAGE(page_gpa) for the calling vCPU (`CLK-1`).
    CLOCK_REGISTER_PAGE = (CLOCK, 0, "CLOCK.REGISTER_PAGE", 1, true);
    /// CLOCK.UNREGISTER_PAGE() for the calling vCPU (`CLK-5`).
    CLOCK_UNREGISTER_PAGE = (CLOCK, 1, "CLOCK.UNREGISTER_PAGE", 0, true);
    /// CLOCK.GET_WALLCLOCK() -> ns since the UNIX epoch at system time 0 (`CLK-6`).
    CLOCK_GET_WALLCLOCK = (CLOCK, 2, "CLOCK.GET_WALLCLOCK", 0, true);
    /// CLOCK.GET_TIME() -> current system time in ns (`CLK-7`).
    CLOCK_GET_TIME = (CLOCK, 3, "CLOCK.GET_TIME", 0, true);
    /// CLOCK.SET_TIMER(deadline_ns, port): one-shot timer raising an event (`CLK-8`).
    CLOCK_SET_TIMER = (CLOCK, 4, "CLOCK.SET_TIMER", 2, true);

    /// VCPU.YIELD() (`VCPU-2`).
    VCPU_YIELD = (VCPU, 0, "VCPU.YIELD", 0, true);
    /// VCPU.BLOCK(deadline_ns): wait for an event or the deadline (`VCPU-3`).
    VCPU_BLOCK = (VCPU, 1, "VCPU.BLOCK", 1, true);
    /// VCPU.KICK(vcpu): wake a blocked vCPU (`VCPU-5`).
    VCPU_KICK = (VCPU, 2, "VCPU.KICK", 1, true);
    /// VCPU.START(vcpu, entry, stack, arg) (`VCPU-6`).
    VCPU_START = (VCPU, 3, "VCPU.START", 4, true);
    /// VCPU.STOP(): stop the calling vCPU (`VCPU-9`).
    VCPU_STOP = (VCPU, 4, "VCPU.STOP", 0, false);
    /// VCPU.GET_STATUS(vcpu) -> state (`VCPU-10`).
    VCPU_GET_STATUS = (VCPU, 5, "VCPU.GET_STATUS", 1, true);
    /// VCPU.REGISTER_STEAL_TIME(record_gpa) (`VCPU-11`).
    VCPU_REGISTER_STEAL_TIME = (VCPU, 6, "VCPU.REGISTER_STEAL_TIME", 1, true);
    /// VCPU.UPCALL_RETURN(): resume the context saved by a callback upcall (`EVT-14`).
    VCPU_UPCALL_RETURN = (VCPU, 7, "VCPU.UPCALL_RETURN", 0, false);

    /// EVENT.REGISTER_PAGE(page_gpa) (`EVT-1`).
    EVENT_REGISTER_PAGE = (EVENT, 0, "EVENT.REGISTER_PAGE", 1, true);
    /// EVENT.SET_UPCALL(mode, target) for the calling vCPU (`EVT-10`).
    EVENT_SET_UPCALL = (EVENT, 1, "EVENT.SET_UPCALL", 2, true);
    /// EVENT.ALLOC() -> port (`EVT-3`).
    EVENT_ALLOC = (EVENT, 2, "EVENT.ALLOC", 0, true);
    /// EVENT.BIND_VCPU(port, vcpu) (`EVT-4`).
    EVENT_BIND_VCPU = (EVENT, 3, "EVENT.BIND_VCPU", 2, true);
    /// EVENT.CLOSE(port) (`EVT-5`).
    EVENT_CLOSE = (EVENT, 4, "EVENT.CLOSE", 1, true);
    /// EVENT.SEND(port) (`EVT-6`).
    EVENT_SEND = (EVENT, 5, "EVENT.SEND", 1, true);
    /// EVENT.MASK(port) (`EVT-8`).
    EVENT_MASK = (EVENT, 6, "EVENT.MASK", 1, true);
    /// EVENT.UNMASK(port) (`EVT-9`).
    EVENT_UNMASK = (EVENT, 7, "EVENT.UNMASK", 1, true);

    /// MEMORY.GET_MAP(buf_gpa, max_entries) -> total entries (`MEM-1`).
    MEMORY_GET_MAP = (MEMORY, 0, "MEMORY.GET_MAP", 2, true);
    /// MEMORY.BALLOON_RELEASE(gpa, pages) (`MEM-4`).
    MEMORY_BALLOON_RELEASE = (MEMORY, 1, "MEMORY.BALLOON_RELEASE", 2, true);
    /// MEMORY.BALLOON_RECLAIM(gpa, pages) (`MEM-6`).
    MEMORY_BALLOON_RECLAIM = (MEMORY, 2, "MEMORY.BALLOON_RECLAIM", 2, true);
    /// MEMORY.BALLOON_QUERY() -> pages currently released (`MEM-8`).
    MEMORY_BALLOON_QUERY = (MEMORY, 3, "MEMORY.BALLOON_QUERY", 0, true);

    /// GRANT.SETUP_TABLE(table_gpa, entries) (`GNT-1`).
    GRANT_SETUP_TABLE = (GRANT, 0, "GRANT.SETUP_TABLE", 2, true);
    /// GRANT.QUERY() -> maximum entries the host accepts (`GNT-3`).
    GRANT_QUERY = (GRANT, 1, "GRANT.QUERY", 0, true);

    /// STORE.READ(path_gpa, path_len, buf_gpa, buf_len, txn) -> value length (`STORE-3`).
    STORE_READ = (STORE, 0, "STORE.READ", 5, true);
    /// STORE.WRITE(path_gpa, path_len, val_gpa, val_len, txn) (`STORE-5`).
    STORE_WRITE = (STORE, 1, "STORE.WRITE", 5, true);
    /// STORE.LIST(path_gpa, path_len, buf_gpa, buf_len, txn) -> bytes of names (`STORE-7`).
    STORE_LIST = (STORE, 2, "STORE.LIST", 5, true);
    /// STORE.REMOVE(path_gpa, path_len, txn) (`STORE-8`).
    STORE_REMOVE = (STORE, 3, "STORE.REMOVE", 3, true);
    /// STORE.WATCH(path_gpa, path_len, port) -> watch id (`STORE-10`).
    STORE_WATCH = (STORE, 4, "STORE.WATCH", 3, true);
    /// STORE.UNWATCH(watch_id) (`STORE-12`).
    STORE_UNWATCH = (STORE, 5, "STORE.UNWATCH", 1, true);
    /// STORE.WATCH_NEXT(buf_gpa, buf_len) -> bytes of the next watch event (`STORE-13`).
    STORE_WATCH_NEXT = (STORE, 6, "STORE.WATCH_NEXT", 2, true);
    /// STORE.TXN_START() -> transaction id (`STORE-15`).
    STORE_TXN_START = (STORE, 7, "STORE.TXN_START", 0, true);
    /// STORE.TXN_COMMIT(txn) (`STORE-16`).
    STORE_TXN_COMMIT = (STORE, 8, "STORE.TXN_COMMIT", 1, true);
    /// STORE.TXN_ABORT(txn) (`STORE-18`).
    STORE_TXN_ABORT = (STORE, 9, "STORE.TXN_ABORT", 1, true);

    /// POWER.SHUTDOWN(reason, code) (`PWR-1`).
    POWER_SHUTDOWN = (POWER, 0, "POWER.SHUTDOWN", 2, false);
    /// POWER.REGISTER_CRASH_BUFFER(buf_gpa, len) (`PWR-4`).
    POWER_REGISTER_CRASH_BUFFER = (POWER, 1, "POWER.REGISTER_CRASH_BUFFER", 2, true);

    /// MULTICALL.EXECUTE(array_gpa, count) -> entries executed (`MC-1`).
    MULTICALL_EXECUTE = (MULTICALL, 0, "MULTICALL.EXECUTE", 2, true);

    /// HARNESS.REPORT(record_gpa, len): one conformance result record (`HAR-2`).
    HARNESS_REPORT = (HARNESS, 0, "HARNESS.REPORT", 2, true);
    /// HARNESS.INJECT_EVENT(port): the host raises the port (`HAR-3`).
    HARNESS_INJECT_EVENT = (HARNESS, 1, "HARNESS.INJECT_EVENT", 1, true);
    /// HARNESS.STORE_HOST_WRITE(path_gpa, path_len, val_gpa, val_len, guest_access) (`HAR-4`).
    HARNESS_STORE_HOST_WRITE = (HARNESS, 2, "HARNESS.STORE_HOST_WRITE", 5, true);
    /// HARNESS.STORE_HOST_READ(path_gpa, path_len, buf_gpa, buf_len) -> length (`HAR-5`).
    HARNESS_STORE_HOST_READ = (HARNESS, 3, "HARNESS.STORE_HOST_READ", 4, true);
    /// HARNESS.CONSOLE_READBACK(buf_gpa, len) -> bytes of recent console output (`HAR-6`).
    HARNESS_CONSOLE_READBACK = (HARNESS, 4, "HARNESS.CONSOLE_READBACK", 2, true);
    /// HARNESS.CONSOLE_INPUT(buf_gpa, len): queue bytes as console input (`HAR-7`).
    HARNESS_CONSOLE_INPUT = (HARNESS, 5, "HARNESS.CONSOLE_INPUT", 2, true);
    /// HARNESS.CLOCK_ADVANCE(ns): advance a virtual clock; NOT_SUPPORTED on a real one (`HAR-8`).
    HARNESS_CLOCK_ADVANCE = (HARNESS, 6, "HARNESS.CLOCK_ADVANCE", 1, true);
    /// HARNESS.CLOCK_READ() -> the host's system time in ns (`HAR-9`).
    HARNESS_CLOCK_READ = (HARNESS, 7, "HARNESS.CLOCK_READ", 0, true);
    /// HARNESS.GRANT_ACCESS(grant_ref, offset, write_byte_or_u64max) -> byte read (`HAR-10`).
    HARNESS_GRANT_ACCESS = (HARNESS, 8, "HARNESS.GRANT_ACCESS", 3, true);
    /// HARNESS.BALLOON_CHECK(gpa) -> 1 when the host's bookkeeping has the page released (`HAR-11`).
    HARNESS_BALLOON_CHECK = (HARNESS, 9, "HARNESS.BALLOON_CHECK", 1, true);
}

/// Number of functions of a service in ABI v1 (what BASE.PROBE_SERVICE returns, `BASE-5`).
pub fn function_count(service: ServiceId) -> u16 {
    let mut n: u16 = 0;
    for c in CALLS {
        if c.id.service() == service {
            n = n.saturating_add(1);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_dense_per_service() {
        for w in CALLS.windows(2) {
            if let [a, b] = w {
                assert!(a.id < b.id, "{} !< {}", a.name, b.name);
                if a.id.service() == b.id.service() {
                    assert_eq!(a.id.function() + 1, b.id.function(), "gap after {}", a.name);
                }
            }
        }
        for c in CALLS {
            let svc = c.id.service().name().expect("named service");
            assert!(c.name.starts_with(svc), "{}", c.name);
            assert!(c.args <= 6);
            assert_eq!(c.id.info().map(|i| i.name), Some(c.name));
        }
    }

    #[test]
    fn register_decoding_rejects_high_bits() {
        assert_eq!(CallId::from_reg(0x0001_0002), Some(CallId(0x0001_0002)));
        assert_eq!(CallId::from_reg(1 << 32), None);
        assert_eq!(function_count(ServiceId::CONSOLE), 3);
        assert_eq!(function_count(ServiceId(0x1234)), 0);
    }
}

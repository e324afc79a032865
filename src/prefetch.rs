//! Software prefetches: the request path asks for memory it will read soon (a user's entry, a
//! lease) and does other work (MD5 rounds, the password and device checks) while it arrives.
//! Among 100,000 users these are rarely in the CPU's cache; without prefetching, a request
//! among them cost 7–10 % more CPU than one among 1,000 (docs/PERFORMANCE.md, "Prefetching").

/// The line size of the CPUs the daemon runs on (x86-64 and most arm64 cores).
const LINE: usize = 64;

/// Asks for the cache lines of `bytes` bytes at `start`, without waiting for them.
pub(crate) fn bytes(start: *const u8, bytes: usize) {
    let end = start as usize + bytes.max(1);
    let mut at = start as usize & !(LINE - 1);
    while at < end {
        line(at as *const u8);
        at += LINE;
    }
}

/// Asks for the cache lines of `*value`.
pub(crate) fn value<T>(value: &T) {
    bytes((value as *const T).cast(), std::mem::size_of::<T>());
}

/// A prefetch: a hint that reads nothing, so any address will do, even one freed since.
#[inline]
fn line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE, which the instruction needs, is part of every x86-64 CPU; a prefetch of an
    // invalid address is ignored, not faulted on.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

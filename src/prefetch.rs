//! Software prefetches: the request path asks for memory it will read soon (a user's entry, a
//! lease) and does other work (MD5 rounds, the password and device checks) while it arrives.
//! Among 100,000 users these are rarely in the CPU's cache; without prefetching, a request
//! among them cost ~9 % more CPU than one among 1,000 (docs/PERFORMANCE.md, "Prefetching the
//! entry and the lease"). x86-64 only: elsewhere these do nothing.

/// The cache line size of x86-64 CPUs.
const LINE: usize = 64;

/// Asks for the cache lines of the `len` bytes at `start`, without waiting for them.
pub(crate) fn bytes(start: *const u8, len: usize) {
    // From the start of the line `start` is in (wrapping: the address may lie before the
    // allocation, which a prefetch does not mind).
    let mut at = start.wrapping_sub(start as usize % LINE);
    let end = start.wrapping_add(len.max(1));
    while at < end {
        line(at);
        at = at.wrapping_add(LINE);
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

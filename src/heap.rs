//! What jemalloc, the process allocator (built under the standard names, so also the one
//! behind `System` and every C library), tells about one allocation.

use std::ffi::c_void;
use std::sync::OnceLock;

/// `inspect_extent_util_stats_verbose_t`: what `experimental.utilization.query` answers.
#[repr(C)]
#[derive(Default)]
struct Utilization {
    /// The slab of this size class that jemalloc fills next.
    slabcur: usize,
    /// Free regions in the allocation's slab, of `nregs`.
    nfree: usize,
    nregs: usize,
    /// Bytes of the allocation's slab.
    size: usize,
    bin_nfree: usize,
    bin_nregs: usize,
}

/// Whether the allocation at `ptr` is a small one in a slab at least half free that jemalloc
/// does not fill next. A copy made now lands in a fuller slab; once such a slab's last
/// allocation is moved or freed it goes back to the system. False when jemalloc cannot say.
///
/// # Safety
/// `ptr` points into a live allocation of jemalloc's (jemalloc looks it up in its own map,
/// which covers only its own memory).
pub unsafe fn in_sparse_slab(ptr: *const u8) -> bool {
    static MIB: OnceLock<Option<[usize; 3]>> = OnceLock::new();
    let Some(mib) = MIB.get_or_init(|| {
        let mut mib = [0usize; 3];
        let mut len = mib.len();
        // SAFETY: a NUL-terminated name; `mib` holds `len` entries.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctlnametomib(
                c"experimental.utilization.query".as_ptr(),
                mib.as_mut_ptr(),
                &mut len,
            )
        };
        (rc == 0 && len == mib.len()).then_some(mib)
    }) else {
        return false;
    };
    let mut util = Utilization::default();
    let mut util_len = size_of::<Utilization>();
    let mut query = ptr;
    // SAFETY: the output is a `Utilization` of the length given, the input one pointer into
    // jemalloc's memory (the caller's promise).
    let rc = unsafe {
        tikv_jemalloc_sys::mallctlbymib(
            mib.as_ptr(),
            mib.len(),
            (&raw mut util).cast::<c_void>(),
            &mut util_len,
            (&raw mut query).cast::<c_void>(),
            size_of::<*const u8>(),
        )
    };
    let addr = ptr as usize;
    let in_slabcur = util.slabcur != 0 && (util.slabcur..util.slabcur + util.size).contains(&addr);
    rc == 0 && util.nregs > 1 && util.nfree * 2 >= util.nregs && !in_slabcur
}

#[cfg(test)]
mod tests {
    use super::in_sparse_slab;

    fn sparse(boxes: &[Box<[u8; 200]>]) -> usize {
        // SAFETY: live boxes, allocated by jemalloc (the process allocator under the standard
        // names, behind `System` too).
        boxes
            .iter()
            .filter(|b| unsafe { in_sparse_slab(b.as_ptr()) })
            .count()
    }

    /// Allocations made in a row fill their slabs; of those, the ones left after nine in ten
    /// were freed sit in slabs mostly free.
    #[test]
    fn survivors_of_freed_neighbours_are_in_sparse_slabs() {
        let all: Vec<Box<[u8; 200]>> = (0..20_000).map(|_| Box::new([1; 200])).collect();
        let dense = sparse(&all);
        assert!(
            dense < all.len() / 10,
            "{dense} of {} in sparse slabs",
            all.len()
        );
        let kept: Vec<_> = all.into_iter().step_by(10).collect();
        let now = sparse(&kept);
        assert!(
            now > kept.len() * 9 / 10,
            "{now} of {} in sparse slabs",
            kept.len()
        );
    }
}

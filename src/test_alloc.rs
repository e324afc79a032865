//! The unit tests' allocator: the system's, checking that every block is freed with the size
//! it was allocated with. jemalloc, the daemon's, relies on that size and glibc's malloc does
//! not look at it, so a wrong size in code that frees by hand (`ipam::leases`) would pass the
//! tests and corrupt the daemon's heap; here it aborts the test run.

use std::alloc::{GlobalAlloc, Layout, System};

#[global_allocator]
static ALLOCATOR: SizeChecked = SizeChecked;

struct SizeChecked;

/// The room before a block for its size: at least a word, and a multiple of its alignment.
fn header(layout: Layout) -> usize {
    layout.align().max(16)
}

/// What is asked of the system for a block of `layout`.
fn outer(layout: Layout) -> Option<Layout> {
    let size = layout.size().checked_add(header(layout))?;
    Layout::from_size_align(size, header(layout)).ok()
}

impl SizeChecked {
    /// Writes the block's size before it. `base` is null or an allocation of `outer(layout)`.
    unsafe fn block(base: *mut u8, layout: Layout) -> *mut u8 {
        if base.is_null() {
            return base;
        }
        // SAFETY: the header is inside the allocation, and the block after it aligned to
        // `header(layout)` (≥ 16), so the word before it is aligned too.
        unsafe {
            let block = base.add(header(layout));
            block.cast::<usize>().sub(1).write(layout.size());
            block
        }
    }
}

// SAFETY: every block is a system allocation of `outer(layout)` shifted by `header(layout)`,
// freed the same way; the size check reads the word `alloc` wrote.
unsafe impl GlobalAlloc for SizeChecked {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(outer) = outer(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `outer` has a non-zero size.
        unsafe { Self::block(System.alloc(outer), layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(outer) = outer(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: as in `alloc`.
        unsafe { Self::block(System.alloc_zeroed(outer), layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: `block` came from `alloc` (the caller's promise), which wrote this word.
        let size = unsafe { block.cast::<usize>().sub(1).read() };
        if size != layout.size() {
            // An allocator must not unwind: say why, and stop.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"test allocator: a block freed with another size than it was allocated with\n",
            );
            std::process::abort();
        }
        let outer = outer(layout).expect("it was allocated with this layout");
        // SAFETY: the system allocation `alloc` made for this block.
        unsafe { System.dealloc(block.sub(header(layout)), outer) }
    }
}

//! sled's segment cleaning, as patched in `vendor/sled` (RAVPND-PATCH.md). Once a database had as
//! many free segments as used ones, and the free ones above its last used one, sled 0.34.7
//! relocated one segment per flusher tick for ever, writing ~1 MB/s on an idle ravpnd; and up to
//! ~16,000 of the pages its cleaner rewrote stayed decoded in memory, beyond the configured cache.
//! This builds such a database (bulk batches in two trees, then most of one removed, as an import
//! and its clean-up leave a store), writes a little after reopening it, as a first connection's
//! lease does, and checks that the writing stops, that the heap is smaller than before the
//! clean-up, and that every record is still there.
//!
//! Alone in its test binary: it reads the process's own I/O count and counts its heap.

#![cfg(target_os = "linux")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The system's allocator, counting the bytes in use: what sled keeps decoded shows there.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated and not yet freed, in the whole process.
static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// `block` as the system's allocator returned it, `size` bytes counted if it is one.
fn counted(block: *mut u8, size: usize) -> *mut u8 {
    if !block.is_null() {
        IN_USE.fetch_add(size, Relaxed);
    }
    block
}

// SAFETY: every call goes to the system's allocator unchanged; only the count is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promises, passed on.
        counted(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        counted(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`.
        unsafe { System.dealloc(block, layout) };
        IN_USE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let moved = counted(unsafe { System.realloc(block, layout, size) }, size);
        if !moved.is_null() {
            IN_USE.fetch_sub(layout.size(), Relaxed);
        }
        moved
    }
}

/// Bytes this process has handed to write calls so far.
fn written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .expect("/proc/self/io")
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a wchar line")
}

/// A short tick so that the flusher's work shows within a second, not within minutes; a
/// 1-MiB page cache, ravpnd's. A database just dropped may hold its file's lock for a moment
/// (sled's background writes finishing), so a locked file is tried again for up to 5 s.
fn open(dir: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let config = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(10))
            .cache_capacity(1 << 20);
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50))
            }
            opened => return opened.expect("open"),
        }
    }
}

const N: u32 = 150_000;
const CHUNK: u32 = 1_000;

fn key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

/// Keys 0..N of `tree` in batches of CHUNK, each batch flushed, as an import writes its files.
fn in_batches(db: &sled::Db, tree: &sled::Tree, mut each: impl FnMut(&mut sled::Batch, u32)) {
    for chunk in 0..N / CHUNK {
        let mut batch = sled::Batch::default();
        for i in chunk * CHUNK..(chunk + 1) * CHUNK {
            each(&mut batch, i);
        }
        tree.apply_batch(batch).unwrap();
        db.flush().unwrap();
    }
}

#[test]
fn after_its_clean_up_a_database_is_quiet_and_no_larger() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = open(dir.path());
        let (kept, other) = (
            db.open_tree("kept").unwrap(),
            db.open_tree("other").unwrap(),
        );
        for tree in [&other, &kept] {
            in_batches(&db, tree, |b, i| b.insert(&key(i), vec![5u8; 100]));
        }
        // Nine records in ten of the first tree go: most of its segments become free.
        in_batches(&db, &other, |b, i| {
            if i % 10 != 0 {
                b.remove(&key(i))
            }
        });
    }
    let db = open(dir.path());
    let kept = db.open_tree("kept").unwrap();
    let heap_before = IN_USE.load(Relaxed);
    for i in 0..1_000 {
        kept.insert(key(i * 7), vec![9u8; 30]).unwrap();
        db.flush().unwrap();
    }

    // The clean-up the writes start takes a few ticks; unpatched, the relocation never ends
    // (~25 MB every half second with this tick). Quiet: five 200-ms windows in a row with
    // under 64 KiB each. And the clean-up must have happened, or this tested nothing.
    let (start, deadline) = (written(), Instant::now() + Duration::from_secs(30));
    let (mut quiet_windows, mut last) = (0, 0);
    while quiet_windows < 5 && Instant::now() < deadline {
        let before = written();
        std::thread::sleep(Duration::from_millis(200));
        last = written() - before;
        quiet_windows = if last < 64 << 10 {
            quiet_windows + 1
        } else {
            0
        };
    }
    assert_eq!(
        quiet_windows, 5,
        "sled kept rewriting an idle database ({last} bytes in the last 200 ms)"
    );
    let cleaned = written() - start;
    assert!(
        cleaned > 1 << 20,
        "no clean-up to watch ({cleaned} bytes written): the setup no longer frees enough segments"
    );
    // The clean-up frees ~4 MB of its own; without the page-out after a rewrite the cleaned
    // pages stayed decoded: 1.7–13.4 MB more than before the writes (19 runs), against
    // 3.5–4.4 MB less with it (23 runs).
    let heap_after = IN_USE.load(Relaxed);
    assert!(
        heap_after < heap_before,
        "sled holds {heap_after} bytes after its clean-up, {heap_before} before it"
    );

    drop(kept);
    drop(db);
    let db = open(dir.path());
    let (kept, other) = (
        db.open_tree("kept").unwrap(),
        db.open_tree("other").unwrap(),
    );
    assert_eq!(kept.len(), N as usize);
    for i in 0..N {
        let v = kept.get(key(i)).unwrap().expect("kept");
        let rewritten = i % 7 == 0 && i / 7 < 1_000;
        assert_eq!(
            &v[..],
            if rewritten {
                &[9u8; 30][..]
            } else {
                &[5u8; 100][..]
            }
        );
    }
    assert_eq!(other.len(), (N / 10) as usize);
    for i in (0..N).step_by(10) {
        assert_eq!(
            &other.get(key(i)).unwrap().expect("other")[..],
            &[5u8; 100][..]
        );
    }
}

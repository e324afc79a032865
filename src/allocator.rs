//! The daemon's allocator: jemalloc with its options (the benches that run the request path
//! in process include this file too, so that they measure what the daemon runs).

/// jemalloc instead of glibc's malloc: with 100,000 users in the store the daemon used 411 MiB
/// under glibc (which kept, fragmented across its arenas, most of what an import freed) and
/// 270 MiB under jemalloc, at 1.1x the throughput (docs/PERFORMANCE.md, "The allocator").
/// It also returns argon2's 19 MiB blocks after use, as glibc did only with a fixed mmap
/// threshold. It is built under the standard names (`malloc`, `calloc`, ...; Cargo.toml): with
/// prefixed names the optimizer no longer turns "allocate, then write zeros" into `calloc`, and
/// a release build wrote sled's 20 MiB of never-used metric buckets at start.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (the `MALLOC_CONF` environment variable
/// adds to them). `background_thread`: unused memory is returned to the system by jemalloc's
/// own thread even when the daemon is idle, not only on the next allocations.
/// `dirty_decay_ms` 1 s instead of 10: what a burst of first connections frees (sled's page
/// rewrites) is returned within a second. `narenas` 1 instead of four per CPU: the request
/// path allocates little (thread caches serve it), and one arena does not strand freed memory
/// in the slabs of others. With 10,000 of 100,000 users connected VmRSS is 53–56 MiB (60–70
/// with jemalloc's defaults), with 20,000 62–64 (68–75), at no throughput the benchmarks can
/// tell (docs/PERFORMANCE.md, "The allocator"). `tcache_max` 1 KiB instead of 32: an idle
/// thread's cache is never trimmed, and after a burst of first connections the caches of the
/// daemon's 16 threads held ~9 MiB of freed sled pages and buffers; the request path's own
/// allocations are smaller (all 100,000 users active: 75–76 MiB instead of 82–85, throughput
/// the same; docs/PERFORMANCE.md, "Three more cuts"). `lg_tcache_nslots_mul` -1 instead of 1:
/// a thread caches half a slab's worth of each size instead of two (within jemalloc's 20–200
/// per size; after that burst 59–61 MiB instead of 62–63, CPU per request the same; "A user
/// in two cache lines").
#[export_name = "malloc_conf"]
static MALLOC_CONF: MallocConf = MallocConf(
    c"background_thread:true,dirty_decay_ms:1000,narenas:1,tcache_max:1024,lg_tcache_nslots_mul:-1"
        .as_ptr(),
);

/// `const char *malloc_conf` as jemalloc declares it.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: it points to an immutable C string literal.
unsafe impl Sync for MallocConf {}

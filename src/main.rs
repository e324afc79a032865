use std::process::ExitCode;

use clap::Parser;

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
/// own thread after `dirty_decay_ms` (10 s) even when the daemon is idle, not only on the
/// next allocations.
#[export_name = "malloc_conf"]
static MALLOC_CONF: MallocConf = MallocConf(c"background_thread:true".as_ptr());

/// `const char *malloc_conf` as jemalloc declares it.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: it points to an immutable C string literal.
unsafe impl Sync for MallocConf {}

fn main() -> ExitCode {
    let cli = ravpnd::cli::Cli::parse();
    match ravpnd::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

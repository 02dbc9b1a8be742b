//! The agent's allocator and its settings. A library must not choose the
//! allocator of every binary that links it (fuzz targets and tests would get it
//! too), so the agent's binary declares it (`src/main.rs`), and so do the
//! benches that measure the agent's work, to keep their figures comparable:
//!
//! ```text
//! kwpipe_components::agent_allocator!();
//! ```
//!
//! Rows are allocated value by value on a source's thread and freed on a sink's.
//! glibc's malloc spent a quarter of an export's CPU on that (`malloc_consolidate`,
//! frees across arenas); with mimalloc a kwdb-poll export takes half the CPU and
//! the Kafka path a third less (benches/README.md).

use std::ffi::c_int;

pub use mimalloc::MiMalloc;

/// mimalloc v3's option numbers (`mi_option_e` in its `include/mimalloc.h`);
/// libmimalloc-sys's own constants still follow v2's numbering.
pub const ARENA_EAGER_COMMIT: c_int = 4;
pub const PURGE_DELAY: c_int = 15;

/// Settings for an agent that must stay small on an edge node: arenas committed
/// as they are used (eagerly committed, each touched region stayed resident),
/// freed pages given back after 10 ms instead of 1 s. Idle RSS 20.3 -> 13.1 MB and
/// peak 92 -> 43 MB in `scripts/resources`. An explicit `MIMALLOC_*` variable
/// still wins.
const SETTINGS: [(c_int, &std::ffi::CStr, std::ffi::c_long); 2] = [
    (ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT", 0),
    (PURGE_DELAY, c"MIMALLOC_PURGE_DELAY", 10),
];

/// Applies `SETTINGS`; registered as a constructor next to the allocator.
///
/// The arena's commit mode is fixed when the first allocation reserves it, which
/// happens before `main`. mimalloc reads its options in a constructor of priority
/// 101; one in plain `.init_array` runs after it and before Rust's runtime
/// allocates anything, so declare it there beside the `#[global_allocator]`.
pub extern "C" fn configure() {
    for (option, env, value) in SETTINGS {
        // SAFETY: getenv with a NUL-terminated name, before any thread exists;
        // mi_option_set takes any option number and value.
        unsafe {
            if libc::getenv(env.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, value);
            }
        }
    }
}

/// The value mimalloc uses for one of its options.
pub fn option(option: c_int) -> i64 {
    // SAFETY: a read of mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_get(option) as i64 }
}

/// Whether `ptr` lies in mimalloc's heap, i.e. the global allocator is this one.
pub fn owns(ptr: *const u8) -> bool {
    // SAFETY: only compares the address with mimalloc's regions.
    unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
}

/// Declares the agent's allocator, mimalloc, with [`configure`] registered as a
/// constructor beside it: the one declaration the agent's binary and the benches
/// that measure its work use (a library must not choose every binary's allocator).
#[macro_export]
macro_rules! agent_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::MiMalloc = $crate::allocator::MiMalloc;

        // mimalloc's options must be set before the first allocation: a
        // constructor, run after mimalloc's own (priority 101) and before Rust's
        // runtime starts.
        #[cfg(target_os = "linux")]
        #[used]
        #[link_section = ".init_array"]
        static CONFIGURE_ALLOCATOR: extern "C" fn() = $crate::allocator::configure;
    };
}

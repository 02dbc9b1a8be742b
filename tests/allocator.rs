//! Binaries that link the components run on mimalloc with the agent's settings
//! (components/src/allocator.rs), which take effect only if its constructor is
//! linked in and runs before the first allocation.

use components::allocator::{option, owns, ARENA_EAGER_COMMIT, PURGE_DELAY};

#[test]
fn allocations_come_from_mimalloc_with_the_agents_settings() {
    let value = Box::new([7u8; 100]);
    assert!(owns(value.as_ptr()), "a Box was not allocated by mimalloc");
    if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
        assert_eq!(option(ARENA_EAGER_COMMIT), 0);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        assert_eq!(option(PURGE_DELAY), 10);
    }
}

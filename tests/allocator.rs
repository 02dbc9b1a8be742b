//! The agent's binary runs on mimalloc with the agent's settings
//! (components/src/allocator.rs, declared in src/main.rs), which take effect only
//! if its constructor is linked in and runs before the first allocation. Asked of
//! the built `kwpipe` itself: the test binary has the system allocator.

use std::process::Command;

/// `kwpipe allocator-info` (a hidden command), with the environment's
/// `MIMALLOC_*` variables replaced by `env`: its `name: value` lines.
fn allocator_info(env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kwpipe"));
    command.arg("allocator-info");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MIMALLOC_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let out = command.output().expect("kwpipe runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_agent_allocates_from_mimalloc_with_its_settings() {
    assert_eq!(
        allocator_info(&[]),
        pairs(&[
            ("mimalloc", "true"),
            ("arena_eager_commit", "0"),
            ("purge_delay", "10"),
        ])
    );
}

#[test]
fn an_explicit_mimalloc_variable_still_wins() {
    assert_eq!(
        allocator_info(&[("MIMALLOC_PURGE_DELAY", "250")]),
        pairs(&[
            ("mimalloc", "true"),
            ("arena_eager_commit", "0"),
            ("purge_delay", "250"),
        ])
    );
}

/// The library leaves the choice to each binary: this test binary declares no
/// allocator, so it runs on the system's.
#[test]
fn a_binary_that_links_the_library_keeps_its_own_allocator() {
    let value = Box::new([7u8; 100]);
    assert!(!kwpipe_components::allocator::owns(value.as_ptr()));
}

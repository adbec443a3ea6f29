//! Support for the end-to-end tests in this directory: locating the workspace's built binaries,
//! running them with a deadline ([`process`]), and hand-made checkpoints ([`checkpoint`]).
//!
//! The tests run the real `qins-*` binaries of the workspace. `tools/test.sh` builds them first
//! (`cargo build --workspace`); a test that cannot find one fails saying so.

use std::path::PathBuf;

pub mod checkpoint;
pub mod process;

/// The path of workspace binary `name` in the same target directory as the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

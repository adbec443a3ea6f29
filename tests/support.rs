//! Support for the end-to-end tests in this directory: locating the workspace's binaries, built
//! for the running tests ([`bin`]), running them with a deadline ([`process`]), and hand-made
//! checkpoints ([`checkpoint`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod checkpoint;
pub mod process;

/// The path of workspace binary `name` (`qins-convert`, `qins-inspect`, ...), current with the
/// sources: the first call in a test process builds the workspace's binaries (see [`built`]),
/// so that `cargo test -p qins-e2e` alone can never run binaries older than the code.
pub fn bin(name: &str) -> PathBuf {
    let path = built().join(name);
    assert!(
        path.is_file(),
        "{} not found after building the workspace's binaries",
        path.display()
    );
    path
}

/// Builds the workspace's binaries once per test process, with the profile and into the target
/// directory of the running test, and returns the directory that holds them
/// (`target/<profile>`).
///
/// Why a nested `cargo build`: cargo sets `CARGO_BIN_EXE_<name>` (and builds the binary first)
/// only for the binaries of the test's own package, and these tests run the binaries of five
/// other packages; artifact dependencies, which would let this package depend on them, are
/// unstable. So the first test to ask runs `cargo build --workspace --bins --examples` once,
/// guarded by a `OnceLock` (the other tests of the process wait for it). Cargo rebuilds what
/// changed and does nothing when all is fresh, and takes its own lock on the target directory,
/// so concurrent test processes are safe.
///
/// - **Profile**: a test built by `cargo test` lives in `target/debug/deps` and was built with
///   the `test` profile, which this workspace gives `opt-level = 1`; `cargo test --release`
///   (or `--profile NAME`) puts it in `target/release` (`target/NAME`). The same profile is
///   passed on, so the binaries are those `cargo test --workspace` builds.
/// - **`--examples`**: selecting a target that needs the dev-dependencies makes cargo resolve
///   features with them, as `cargo test --workspace` and `cargo build --all-targets` (what
///   `tools/test.sh` runs) do; with `--bins` alone the libraries would be built a second time
///   with other features. The examples are two small programs.
/// - **`--locked`**: the nested build never rewrites `Cargo.lock` (the cargo running the tests
///   has already brought it up to date, or refused to).
pub fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        // target/<profile dir>/deps/<test>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps");
        let target = dir.parent().expect("target/<profile>");
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "test",
            Some(name) => name,
            None => panic!("{}: no profile directory", dir.display()),
        };
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let out = Command::new(&cargo)
            .arg("build")
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target)
            .args([
                "--workspace",
                "--bins",
                "--examples",
                "--locked",
                "--quiet",
                "--profile",
                profile,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
        assert!(
            out.status.success(),
            "building the workspace's binaries for the end-to-end tests failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        dir.to_path_buf()
    })
}

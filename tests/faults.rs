//! Faults while writing: a full file system, a killed process, a read-only target directory,
//! and an input that fails half-way. In every case the target path afterwards is either absent
//! or complete and valid (an existing target is left byte for byte as it was), never partial;
//! and when the process could clean up (every case but a signal that kills it), nothing else is
//! left beside it.
//!
//! Mechanisms (the tests run the real binaries):
//! - **full file system**: a 1 MiB tmpfs mounted for the test (`mount -t tmpfs`, which needs
//!   root: without it these tests do not run, see [`not_run`], and the next mechanism remains),
//!   and `ulimit -f` in `sh` before `exec`: with SIGXFSZ ignored the tool gets `EFBIG` and
//!   fails cleanly; with the default action it is killed by the signal, like SIGKILL;
//! - **killed**: SIGKILL once the tool's temporary output (`.NAME.XXXXXX.tmp` for
//!   `qins-convert`, `.NAME.tmp-XXXXXX/` for `qins-export`) holds data, on inputs of ~200 MB so
//!   that the write takes long enough; a killed process cannot remove its temporary output, so
//!   it may remain (named so that it is recognisable and safe to delete), but the target is
//!   untouched;
//! - **read-only directory**: mode 0555, the tool run as `nobody` with `setpriv` when the test
//!   runs as root (root ignores permissions), else as the current user; and, as root, a tmpfs
//!   remounted read-only (`EROFS`, which binds root too).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qins_e2e::process::{run, wait, Ran, DEADLINE};
use qins_e2e::{bin, checkpoint};
use qins_format::{Dtype, Storage};
use qins_synth::{generate, SynthConfig, SynthDtype};
use qins_write::{Plan, TensorSpec, Writer};

const SIGKILL: i32 = 9;
const SIGXFSZ: i32 = 25;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The names in `dir`, hidden ones included.
fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Every file under `dir` with its bytes, relative paths sorted: to compare a directory before
/// and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Parses and verifies the file at `path` with the library: it is complete and valid.
fn assert_valid_qins(path: &Path) {
    let file = qins_read::open(path).unwrap_or_else(|e| panic!("{e}"));
    let q = file
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    q.verify()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Whether `name` is a temporary file of the writer for target `target_name`:
/// `.TARGET.XXXXXX.tmp` (the pattern documented for users to clean up after a killed run).
fn is_convert_temp(name: &str, target_name: &str) -> bool {
    name.strip_prefix(&format!(".{target_name}."))
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|mid| !mid.is_empty() && !mid.contains('/'))
}

/// Whether `name` is a staging directory of `qins-export` for target `target_name`.
fn is_export_temp(name: &str, target_name: &str) -> bool {
    name.starts_with(&format!(".{target_name}.tmp-"))
}

/// A scratch directory that every user can enter (so that a tool run as `nobody` can read its
/// inputs), with the small synthetic checkpoint and its `.qins` already made.
struct Scratch {
    tmp: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = Scratch { tmp };
        // ~4.5 MiB of BF16: a `.qins` of ~3.3 MiB, an export of ~4.5 MiB.
        generate(&SynthConfig::small(SynthDtype::Bf16), &s.model()).unwrap();
        let r = convert(&s.model(), &s.qins(), &[]);
        assert_eq!(r.code(), 0, "{}", r.err());
        s
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The small checkpoint.
    fn model(&self) -> PathBuf {
        self.path().join("model")
    }

    /// Its `.qins`.
    fn qins(&self) -> PathBuf {
        self.path().join("model.qins")
    }

    /// A new empty directory.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.path().join(name);
        std::fs::create_dir(&d).unwrap();
        d
    }
}

fn convert(src: &Path, out: &Path, extra: &[&str]) -> Ran {
    run(
        Command::new(bin("qins-convert"))
            .arg(src)
            .arg(out)
            .arg("--quiet")
            .args(extra),
        DEADLINE,
    )
}

fn export(input: &Path, out: &Path, extra: &[&str]) -> Ran {
    run(
        Command::new(bin("qins-export"))
            .arg(input)
            .arg(out)
            .arg("--quiet")
            .args(extra),
        DEADLINE,
    )
}

/// `sh -c 'ulimit -f BLOCKS; exec TOOL ARGS'`, with SIGXFSZ ignored (so the tool gets EFBIG)
/// or at its default (so the tool is killed). The limit is far below the output whether the
/// shell counts blocks of 512 or 1024 bytes.
fn limited(tool: &str, paths: [&Path; 2], extra: &[&str], blocks: u32, ignore_xfsz: bool) -> Ran {
    let trap = if ignore_xfsz { "trap '' XFSZ; " } else { "" };
    run(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{trap}ulimit -f \"$0\" && exec \"$@\""))
            .arg(blocks.to_string())
            .arg(bin(tool))
            .args(paths)
            .args(extra)
            .arg("--quiet"),
        DEADLINE,
    )
}

/// Whether the tests run as root: then permissions do not bind them, and mounting may work.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Called by a test that cannot run in this process (it needs root, or a tmpfs mount that a
/// sandbox refuses), which then returns. Under CI (`CI=true`), where the tests run as root and
/// may mount, it fails the test instead: there a test must run or fail, never pass unrun.
/// Elsewhere it says so on stderr, past the test harness's capture, so that the run shows it.
#[track_caller]
fn not_run(test: &str, why: &str) {
    if std::env::var_os("CI").is_some_and(|v| v == "true") {
        panic!(
            "{test} cannot run: {why}; under CI=true it must run: run the tests as root, where \
             a tmpfs can be mounted"
        );
    }
    // Written to the stderr handle, not with `eprintln!`, which the harness captures (and
    // shows only for a failed test).
    let _ = writeln!(
        std::io::stderr(),
        "NOT RUN: {test}: {why}. It needs root and a tmpfs mount; under CI=true it fails instead."
    );
}

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `1m`), or says why it cannot (the mount needs root, or
    /// a sandbox may refuse it).
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().unwrap();
        let r = run(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0755"),
                    "tmpfs",
                ])
                .arg(dir.path()),
            DEADLINE,
        );
        if r.status.success() {
            Ok(Tmpfs { dir })
        } else {
            Err(format!("cannot mount a tmpfs here ({})", r.err().trim()))
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes the file system read-only (`EROFS` for every write, root's too).
    fn remount_read_only(&self) {
        let r = run(
            Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(self.path()),
            DEADLINE,
        );
        assert!(r.status.success(), "remount read-only: {}", r.err());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// A full file system.

#[test]
fn convert_into_a_full_tmpfs() {
    let s = Scratch::new();
    let fs = match Tmpfs::mount("1m") {
        Ok(fs) => fs,
        Err(why) => {
            let why = format!("{why}; convert_past_the_file_size_limit still covers a full disk");
            return not_run("convert_into_a_full_tmpfs", &why);
        }
    };
    let out = fs.path().join("model.qins");
    let target = out.display().to_string();

    // Nothing there before: nothing there after, not even a temporary file.
    let r = convert(&s.model(), &out, &[]);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&[&target, "No space left on device"]);
    assert!(listing(fs.path()).is_empty(), "{:?}", listing(fs.path()));

    // An existing target, replaced with --force: left as it was.
    let old = b"an older model.qins".repeat(1000);
    std::fs::write(&out, &old).unwrap();
    let r = convert(&s.model(), &out, &["--force"]);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&[&target, "No space left on device"]);
    assert_eq!(
        listing(fs.path()),
        BTreeSet::from(["model.qins".to_string()])
    );
    assert_eq!(std::fs::read(&out).unwrap(), old);
}

#[test]
fn export_into_a_full_tmpfs() {
    let s = Scratch::new();
    let fs = match Tmpfs::mount("1m") {
        Ok(fs) => fs,
        Err(why) => {
            let why = format!("{why}; export_past_the_file_size_limit still covers a full disk");
            return not_run("export_into_a_full_tmpfs", &why);
        }
    };
    let out = fs.path().join("exported");

    let r = export(&s.qins(), &out, &[]);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&["No space left on device"]);
    assert!(listing(fs.path()).is_empty(), "{:?}", listing(fs.path()));

    // An existing export, replaced with --force: left as it was.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("config.json"), b"{\"old\":true}").unwrap();
    let before = snapshot(&out);
    let r = export(&s.qins(), &out, &["--force"]);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&["No space left on device"]);
    assert_eq!(listing(fs.path()), BTreeSet::from(["exported".to_string()]));
    assert_eq!(snapshot(&out), before);
}

#[test]
fn convert_past_the_file_size_limit() {
    let s = Scratch::new();
    let dir = s.dir("out");
    let out = dir.join("model.qins");
    let target = out.display().to_string();

    // SIGXFSZ ignored: the write fails with EFBIG, the tool cleans up and says so.
    let r = limited("qins-convert", [&s.model(), &out], &[], 64, true);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&[&target, "File too large"]);
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));

    let old = std::fs::read(s.qins()).unwrap();
    std::fs::write(&out, &old).unwrap();
    let r = limited("qins-convert", [&s.model(), &out], &["--force"], 64, true);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&[&target, "File too large"]);
    assert_eq!(listing(&dir), BTreeSet::from(["model.qins".to_string()]));
    assert_eq!(std::fs::read(&out).unwrap(), old);

    // SIGXFSZ at its default: the tool is killed. The old target is intact; the temporary
    // file may remain, under its recognisable name.
    let r = limited("qins-convert", [&s.model(), &out], &["--force"], 64, false);
    assert_eq!(
        r.status.signal(),
        Some(SIGXFSZ),
        "{:?}: {}",
        r.status,
        r.err()
    );
    assert_eq!(std::fs::read(&out).unwrap(), old);
    for name in listing(&dir) {
        assert!(
            name == "model.qins" || is_convert_temp(&name, "model.qins"),
            "{name} left behind"
        );
    }
    std::fs::remove_file(&out).unwrap();
    let r = limited("qins-convert", [&s.model(), &out], &[], 64, false);
    assert_eq!(
        r.status.signal(),
        Some(SIGXFSZ),
        "{:?}: {}",
        r.status,
        r.err()
    );
    assert!(!out.exists());

    // The next run, without the limit, succeeds.
    let r = convert(&s.model(), &out, &[]);
    assert_eq!(r.code(), 0, "{}", r.err());
    assert_valid_qins(&out);
}

#[test]
fn export_past_the_file_size_limit() {
    let s = Scratch::new();
    let dir = s.dir("out");
    let out = dir.join("exported");

    let r = limited("qins-export", [&s.qins(), &out], &[], 64, true);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&["File too large"]);
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));

    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("config.json"), b"{\"old\":true}").unwrap();
    let before = snapshot(&out);
    let r = limited("qins-export", [&s.qins(), &out], &["--force"], 64, true);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&["File too large"]);
    assert_eq!(listing(&dir), BTreeSet::from(["exported".to_string()]));
    assert_eq!(snapshot(&out), before);

    let r = limited("qins-export", [&s.qins(), &out], &["--force"], 64, false);
    assert_eq!(
        r.status.signal(),
        Some(SIGXFSZ),
        "{:?}: {}",
        r.status,
        r.err()
    );
    assert_eq!(snapshot(&out), before);
    for name in listing(&dir) {
        assert!(
            name == "exported" || is_export_temp(&name, "exported"),
            "{name} left behind"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Killed mid-write.

/// Starts `cmd`, waits until `dir` holds a new entry (not there before the start) for which
/// `writing` says the tool is writing its output, and kills it with SIGKILL. Fails if the tool
/// ends first.
///
/// The only way to see another process's progress without a dependency is to look at the file
/// system, so this polls, sleeping 1 ms between looks: the shortest pause that does not spin a
/// core against the tool being watched. The loop is bounded by [`DEADLINE`].
fn kill_when(cmd: &mut Command, dir: &Path, writing: impl Fn(&Path) -> bool) {
    let before = listing(dir);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the tool");
    let start = Instant::now();
    loop {
        let seen = std::fs::read_dir(dir).unwrap().any(|e| {
            let e = e.unwrap();
            !before.contains(&*e.file_name().to_string_lossy()) && writing(&e.path())
        });
        if seen {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the tool ended ({status}) before it was seen writing in {}",
                dir.display()
            );
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the tool did not start writing within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = wait(child, DEADLINE);
    assert_eq!(status.signal(), Some(SIGKILL), "{status}");
}

/// Whether `path` is a regular file holding data (its blocks are allocated as it is written;
/// the writer's initial `set_len` allocates none).
fn holds_data(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.blocks() > 0)
}

#[test]
fn convert_killed_mid_write() {
    let s = Scratch::new();
    let big = s.path().join("big");
    checkpoint::large(&big, 200 << 20);
    let dir = s.dir("out");
    let out = dir.join("model.qins");
    let writing = |p: &Path| {
        let name = p.file_name().unwrap().to_string_lossy();
        is_convert_temp(&name, "model.qins") && holds_data(p)
    };

    // No target before: none after.
    kill_when(
        Command::new(bin("qins-convert")).arg(&big).arg(&out),
        &dir,
        writing,
    );
    assert!(!out.exists(), "a killed conversion left {}", out.display());

    // An existing target, being replaced: intact.
    let old = std::fs::read(s.qins()).unwrap();
    std::fs::write(&out, &old).unwrap();
    kill_when(
        Command::new(bin("qins-convert"))
            .arg(&big)
            .arg(&out)
            .arg("--force"),
        &dir,
        writing,
    );
    assert_eq!(std::fs::read(&out).unwrap(), old);

    // What remains is the target and the killed runs' temporary files, under the documented
    // name `.model.qins.XXXXXX.tmp`, safe to delete.
    let left = listing(&dir);
    let temps: Vec<_> = left
        .iter()
        .filter(|n| is_convert_temp(n, "model.qins"))
        .collect();
    assert_eq!(temps.len() + 1, left.len(), "{left:?}");
    assert!(left.contains("model.qins"), "{left:?}");

    // A later run is not disturbed by them.
    let r = convert(&s.model(), &out, &["--force"]);
    assert_eq!(r.code(), 0, "{}", r.err());
    assert_valid_qins(&out);
}

/// A `.qins` of ~200 MB (one raw BF16 tensor), written with the library: exporting it takes
/// long enough to be interrupted.
fn large_qins(dir: &Path) -> PathBuf {
    const COLS: u64 = 4096;
    let rows = (200u64 << 20) / (2 * COLS);
    let path = dir.join("large.qins");
    let mut plan = Plan::new();
    plan.tensors.push(TensorSpec::new(
        "w.weight",
        Dtype::BF16,
        vec![rows, COLS],
        Storage::Raw,
    ));
    let mut w = Writer::create(&path, plan, false).unwrap();
    let row: Vec<u8> = (0..COLS)
        .flat_map(|i| (0x3F80u16 + (i % 128) as u16).to_le_bytes())
        .collect();
    let block = row.repeat(512);
    let mut left = rows * COLS * 2;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        w.write_raw_part(&block[..n]).unwrap();
        left -= n as u64;
    }
    w.finish().unwrap();
    path
}

#[test]
fn export_killed_mid_write() {
    let s = Scratch::new();
    let input = large_qins(s.path());
    let dir = s.dir("out");
    let out = dir.join("exported");
    // The staging directory holds a file with data.
    let writing = |p: &Path| {
        let name = p.file_name().unwrap().to_string_lossy();
        is_export_temp(&name, "exported")
            && std::fs::read_dir(p).is_ok_and(|mut d| d.any(|e| holds_data(&e.unwrap().path())))
    };

    kill_when(
        Command::new(bin("qins-export")).arg(&input).arg(&out),
        &dir,
        writing,
    );
    assert!(!out.exists(), "a killed export left {}", out.display());

    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("config.json"), b"{\"old\":true}").unwrap();
    let before = snapshot(&out);
    kill_when(
        Command::new(bin("qins-export"))
            .arg(&input)
            .arg(&out)
            .arg("--force"),
        &dir,
        writing,
    );
    assert_eq!(snapshot(&out), before);
    for name in listing(&dir) {
        assert!(
            name == "exported" || is_export_temp(&name, "exported"),
            "{name} left behind"
        );
    }

    // A later run is not disturbed by the staging directories left behind.
    let r = export(&s.qins(), &out, &["--force"]);
    assert_eq!(r.code(), 0, "{}", r.err());
    assert!(out.join("model.safetensors").is_file());
}

// ---------------------------------------------------------------------------------------------
// A read-only target directory.

/// `tool` run so that file permissions bind it: as `nobody` through `setpriv` when the test
/// runs as root, else as the current user.
fn unprivileged(tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin(tool));
        c
    } else {
        Command::new(bin(tool))
    }
}

#[test]
fn read_only_directory() {
    let s = Scratch::new();
    let dir = s.dir("read-only");
    let out = dir.join("model.qins");
    let exported = dir.join("exported");
    let old = b"an older model.qins".to_vec();
    std::fs::write(&out, &old).unwrap();
    std::fs::create_dir(&exported).unwrap();
    std::fs::write(exported.join("config.json"), b"{\"old\":true}").unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let _writable_again = Writable(dir.clone());
    let before = snapshot(&dir);

    let fresh = dir.join("new.qins");
    let cases: Vec<(Command, &Path)> = vec![
        (
            {
                let mut c = unprivileged("qins-convert");
                c.arg(s.model()).arg(&fresh);
                c
            },
            &fresh,
        ),
        (
            {
                let mut c = unprivileged("qins-convert");
                c.arg(s.model()).arg(&out).arg("--force");
                c
            },
            &out,
        ),
        (
            {
                let mut c = unprivileged("qins-export");
                c.arg(s.qins()).arg(dir.join("new-export"));
                c
            },
            &dir,
        ),
        (
            {
                let mut c = unprivileged("qins-export");
                c.arg(s.qins()).arg(&exported).arg("--force");
                c
            },
            &dir,
        ),
    ];
    for (mut cmd, named) in cases {
        let r = run(cmd.arg("--quiet"), DEADLINE);
        assert_eq!(r.code(), 1, "{}: {}", r.what, r.err());
        r.one_line_error(&[&named.display().to_string(), "Permission denied"]);
        assert_eq!(snapshot(&dir), before, "{}", r.what);
        assert_eq!(
            listing(&dir),
            BTreeSet::from(["exported".to_string(), "model.qins".to_string()]),
            "{}",
            r.what
        );
    }
}

/// Makes a directory writable again when dropped, so that the scratch directory can be removed
/// even if a check failed.
struct Writable(PathBuf);

impl Drop for Writable {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn read_only_file_system() {
    let s = Scratch::new();
    let fs = match is_root().then(|| Tmpfs::mount("8m")) {
        Some(Ok(fs)) => fs,
        problem => {
            let why = match problem {
                Some(Err(why)) => why,
                _ => "not root, so no read-only mount".to_string(),
            };
            let why = format!("{why}; read_only_directory still covers permissions");
            return not_run("read_only_file_system", &why);
        }
    };
    let out = fs.path().join("model.qins");
    let exported = fs.path().join("exported");
    let old = std::fs::read(s.qins()).unwrap();
    std::fs::write(&out, &old).unwrap();
    std::fs::create_dir(&exported).unwrap();
    std::fs::write(exported.join("config.json"), b"{\"old\":true}").unwrap();
    fs.remount_read_only();
    let before = snapshot(fs.path());

    let fresh = fs.path().join("new.qins");
    let runs = [
        (convert(&s.model(), &fresh, &[]), fresh.clone()),
        (convert(&s.model(), &out, &["--force"]), out.clone()),
        (
            export(&s.qins(), &fs.path().join("new-export"), &[]),
            fs.path().to_path_buf(),
        ),
        (
            export(&s.qins(), &exported, &["--force"]),
            fs.path().to_path_buf(),
        ),
    ];
    for (r, named) in runs {
        assert_eq!(r.code(), 1, "{}: {}", r.what, r.err());
        r.one_line_error(&[&named.display().to_string(), "Read-only file system"]);
        assert_eq!(snapshot(fs.path()), before, "{}", r.what);
    }
}

// ---------------------------------------------------------------------------------------------
// An input that fails half-way through the output.

/// The last tensor that `qins-convert` encodes in the small checkpoint.
const NAN_TENSOR: &str = "model.layers.3.self_attn.v_proj.weight";

#[test]
fn failed_conversion_keeps_the_old_target() {
    let s = Scratch::new();
    // A NaN in the last tensor to encode (tensors are written sorted by name): the conversion
    // fails after most of the file is written.
    let nan = s.path().join("nan");
    let mut cfg = SynthConfig::small(SynthDtype::Bf16);
    cfg.inject_nan = Some((NAN_TENSOR.into(), 7));
    generate(&cfg, &nan).unwrap();
    let dir = s.dir("out");
    let out = dir.join("model.qins");
    let old = std::fs::read(s.qins()).unwrap();
    std::fs::write(&out, &old).unwrap();

    let r = convert(&nan, &out, &["--force"]);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&[NAN_TENSOR, "NaN"]);
    assert_eq!(listing(&dir), BTreeSet::from(["model.qins".to_string()]));
    assert_eq!(std::fs::read(&out).unwrap(), old);

    // A damaged input to qins-export, onto an existing export with --force: refused after the
    // staging directory was made; the old export is intact and nothing else is left.
    let exported = dir.join("exported");
    let r = export(&s.qins(), &exported, &[]);
    assert_eq!(r.code(), 0, "{}", r.err());
    let before = snapshot(&exported);
    let mut damaged = old.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    let bad = s.path().join("damaged.qins");
    std::fs::write(&bad, &damaged).unwrap();
    let r = export(&bad, &exported, &["--force"]);
    assert_eq!(r.code(), 1, "{}", r.err());
    r.one_line_error(&[&bad.display().to_string(), "checksum"]);
    assert_eq!(snapshot(&exported), before);
    assert_eq!(
        listing(&dir),
        BTreeSet::from(["exported".to_string(), "model.qins".to_string()])
    );
}

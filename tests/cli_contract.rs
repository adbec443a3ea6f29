//! The command-line contract of every tool (ARCHITECTURE.md, Cross-Cutting Concerns): exit 0 on
//! success, 1 on a refused input or a failed operation, 2 on a usage error; an error is one line
//! `error: ...` on stderr naming the file and the cause, and `--verbose` prints the whole chain.
//!
//! The main test runs every tool that reads `.qins` files on a corpus of damaged copies of a
//! small valid file made by `qins-convert`: truncations, bit flips, random bytes, trailing
//! bytes, an empty file, a directory, a FIFO, a missing path. No run may panic (exit 101), hang,
//! or disagree with the library's verdict on the same bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use qins_e2e::process::{run, Ran, DEADLINE};
use qins_e2e::{bin, checkpoint};
use qins_read::Qins;

/// A small valid `.qins` from `qins-convert` (alignment 64), written to `dir/valid.qins`.
fn valid_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let src = dir.join("tiny");
    checkpoint::tiny(&src);
    let out = dir.join("valid.qins");
    let r = run(
        Command::new(bin("qins-convert")).arg(&src).arg(&out).args([
            "--alignment",
            "64",
            "--quiet",
        ]),
        DEADLINE,
    );
    assert_eq!(r.code(), 0, "{}", r.err());
    let bytes = std::fs::read(&out).unwrap();
    let q = Qins::parse(&bytes).expect("the converted file parses");
    q.verify().expect("the converted file verifies");
    (out, bytes)
}

/// A deterministic generator (xorshift64*), so that the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// One input of the corpus.
enum Input {
    /// A file with these bytes.
    Bytes(Vec<u8>),
    /// A directory where the file should be.
    Directory,
    /// A FIFO with no writer: opening it for reading would wait forever.
    Fifo,
    /// Nothing at the path.
    Missing,
}

/// The corpus: `(label, input)`, every label unique.
fn corpus(valid: &[u8]) -> Vec<(String, Input)> {
    let n = valid.len();
    let header = u64::from_le_bytes(valid[32..40].try_into().unwrap()) as usize;
    let mut cases = vec![
        ("valid".to_string(), Input::Bytes(valid.to_vec())),
        ("empty".to_string(), Input::Bytes(Vec::new())),
        ("directory".to_string(), Input::Directory),
        ("fifo".to_string(), Input::Fifo),
        ("missing".to_string(), Input::Missing),
    ];
    // Truncations: every length up to 200, every 7th, and the last 64.
    let lengths: BTreeSet<usize> = (0..200.min(n))
        .chain((0..n).step_by(7))
        .chain(n.saturating_sub(64)..n)
        .collect();
    for len in lengths {
        cases.push((
            format!("truncated-{len}"),
            Input::Bytes(valid[..len].to_vec()),
        ));
    }
    // Bit flips: every byte of the header (each a different bit), then every 5th byte of the
    // data.
    let flips = (0..header).chain((header..n).step_by(5));
    for at in flips {
        let mut b = valid.to_vec();
        b[at] ^= 1 << (at % 8);
        cases.push((format!("flip-{at}"), Input::Bytes(b)));
    }
    // Trailing bytes.
    for extra in [&[0u8][..], &[0; 64], b"trailing garbage"] {
        let mut b = valid.to_vec();
        b.extend_from_slice(extra);
        cases.push((format!("trailing-{}", extra.len()), Input::Bytes(b)));
    }
    // Random bytes: of the valid file's length, short, and a valid preamble followed by noise.
    let mut rng = Rng(0x5EED_0FC0_FFEE);
    for k in 0..24 {
        let len = match k % 3 {
            0 => n,
            1 => (rng.next() % 300) as usize,
            _ => n,
        };
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if k % 3 == 2 {
            b[..96].copy_from_slice(&valid[..96]);
        }
        cases.push((format!("random-{k}"), Input::Bytes(b)));
    }
    cases
}

/// What the library says of these bytes: `(parses, verifies)`.
fn verdict(input: &Input) -> (bool, bool) {
    match input {
        Input::Bytes(b) => match Qins::parse(b) {
            Ok(q) => (true, q.verify().is_ok()),
            Err(_) => (false, false),
        },
        Input::Directory | Input::Fifo | Input::Missing => (false, false),
    }
}

/// One reading tool, as run on a corpus file.
struct Tool {
    name: &'static str,
    args: &'static [&'static str],
    /// Whether it reads every byte (verifies), or only parses.
    verifies: bool,
    /// Whether it takes an output directory after the file.
    exports: bool,
}

const TOOLS: &[Tool] = &[
    Tool {
        name: "qins-inspect",
        args: &[],
        verifies: false,
        exports: false,
    },
    Tool {
        name: "qins-inspect",
        args: &["--verify"],
        verifies: true,
        exports: false,
    },
    Tool {
        name: "qins-dump",
        args: &[],
        verifies: true,
        exports: false,
    },
    Tool {
        name: "qins-export",
        args: &["--quiet"],
        verifies: true,
        exports: true,
    },
];

/// Runs `tool` on `path` and checks the contract against the library's `verdict`.
fn check(tool: &Tool, path: &Path, out: &Path, verdict: (bool, bool)) -> Ran {
    let mut cmd = Command::new(bin(tool.name));
    cmd.args(tool.args).arg(path);
    if tool.exports {
        cmd.arg(out);
    }
    let r = run(&mut cmd, DEADLINE);
    let valid = verdict.0 && (verdict.1 || !tool.verifies);
    let code = r.code();
    assert_ne!(code, 101, "{}: panicked: {}", r.what, r.err());
    if valid {
        assert_eq!(
            code,
            0,
            "{}: a valid input was refused: {}",
            r.what,
            r.err()
        );
    } else {
        assert_eq!(code, 1, "{}: {}", r.what, r.err());
        r.one_line_error(&[&path.display().to_string()]);
        if tool.exports {
            assert!(
                !out.exists(),
                "{}: refused, yet {} exists",
                r.what,
                out.display()
            );
        }
    }
    r
}

#[test]
fn damaged_files_are_refused_with_one_line_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, valid) = valid_file(tmp.path());
    let files = tmp.path().join("corpus");
    let exports = tmp.path().join("exports");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::create_dir_all(&exports).unwrap();

    let cases: Vec<(PathBuf, (bool, bool), String)> = corpus(&valid)
        .into_iter()
        .map(|(label, input)| {
            let path = files.join(format!("{label}.qins"));
            match &input {
                Input::Bytes(b) => std::fs::write(&path, b).unwrap(),
                Input::Directory => std::fs::create_dir(&path).unwrap(),
                Input::Fifo => {
                    let r = run(Command::new("mkfifo").arg(&path), DEADLINE);
                    assert!(r.status.success(), "mkfifo: {}", r.err());
                }
                Input::Missing => {}
            }
            (path, verdict(&input), label)
        })
        .collect();
    let parse_ok = cases.iter().filter(|c| c.1 .0).count();
    let verify_ok = cases.iter().filter(|c| c.1 .1).count();
    eprintln!(
        "valid file {} bytes; {} inputs ({parse_ok} parse, {verify_ok} verify) x {} tools",
        valid.len(),
        cases.len(),
        TOOLS.len()
    );

    // Every (input, tool) pair, spread over the cores; each process is independent.
    let jobs: Vec<(usize, &Tool)> = (0..cases.len())
        .flat_map(|i| TOOLS.iter().map(move |t| (i, t)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    std::thread::scope(|s| {
        for k in 0..threads {
            let (jobs, cases, exports) = (&jobs, &cases, &exports);
            s.spawn(move || {
                for (j, &(i, tool)) in jobs.iter().enumerate().skip(k).step_by(threads) {
                    let (path, v, label) = &cases[i];
                    check(tool, path, &exports.join(format!("{label}-{j}")), *v);
                }
            });
        }
    });

    // The exports of valid inputs are there; nothing else is, not even a temporary directory.
    let left: BTreeSet<String> = std::fs::read_dir(&exports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.starts_with('.')),
        "temporary directories left behind: {left:?}"
    );
    assert_eq!(left.len(), verify_ok, "{left:?}");
}

/// Every tool: success 0, usage 2, `--help` and `--version` 0.
#[test]
fn exit_codes_of_every_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let (valid, _) = valid_file(tmp.path());
    let d = tmp.path();
    let ok = |args: &[&std::ffi::OsStr], name: &str| {
        let r = run(Command::new(bin(name)).args(args), DEADLINE);
        assert_eq!(r.code(), 0, "{}: {}", r.what, r.err());
        r
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let v = valid.clone().into_os_string();

    // Success.
    ok(
        &[&os("--preset"), &os("tiny"), d.join("synth").as_os_str()],
        "qins-synth",
    );
    ok(&[&v], "qins-inspect");
    ok(&[&v, &os("--verify"), &os("--json")], "qins-inspect");
    ok(&[&v, &os("--layout")], "qins-inspect");
    ok(&[&v], "qins-dump");
    ok(&[&v, d.join("exported").as_os_str()], "qins-export");
    ok(
        &[
            d.join("synth").as_os_str(),
            d.join("s.qins").as_os_str(),
            &os("-q"),
        ],
        "qins-convert",
    );
    for name in TOOL_NAMES {
        let r = ok(&[&os("--help")], name);
        assert!(!r.stdout.is_empty(), "{name} --help");
        ok(&[&os("--version")], name);
    }

    // Usage errors: no arguments, an unknown flag, too many arguments, bad values.
    let usage = |args: &[&str], name: &str| {
        let r = run(Command::new(bin(name)).args(args), DEADLINE);
        assert_eq!(r.code(), 2, "{}: {}{}", r.what, r.out(), r.err());
        assert!(!r.stderr.is_empty(), "{}: no message", r.what);
    };
    let f = valid.to_str().unwrap();
    for name in TOOL_NAMES {
        usage(&[], name);
        usage(&["--no-such-flag", f], name);
    }
    usage(&[f, "--full"], "qins-inspect");
    usage(&[f, "--json", "--layout"], "qins-inspect");
    usage(&[f, f], "qins-dump");
    usage(&[f, "out", "--dtype", "f64"], "qins-export");
    usage(&[f, "out", "--max-shard-size", "lots"], "qins-export");
    usage(&[f, "out.qins", "--alignment", "100"], "qins-convert");
    usage(&[f, "out.qins", "--codec", "zip"], "qins-convert");
    usage(
        &[f, "out.qins", "--max-shard-size", "5 parsecs"],
        "qins-convert",
    );
    usage(&["out", "--shards", "0"], "qins-synth");
    usage(&["out", "--preset", "huge"], "qins-synth");
}

const TOOL_NAMES: &[&str] = &[
    "qins-convert",
    "qins-inspect",
    "qins-dump",
    "qins-export",
    "qins-synth",
];

/// Refused inputs and failed operations of the tools that write: exit 1, one line naming the
/// file and the cause.
#[test]
fn refusals_exit_1_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (valid, _) = valid_file(tmp.path());
    let d = tmp.path();
    let fails = |name: &str, args: &[&Path], needles: &[&str]| {
        let r = run(Command::new(bin(name)).args(args), DEADLINE);
        assert_eq!(r.code(), 1, "{}: {}", r.what, r.err());
        r.one_line_error(needles)
    };
    let missing = d.join("no-such-model");
    let m = missing.display().to_string();
    fails(
        "qins-convert",
        &[&missing, &d.join("x.qins")],
        &[&m, "No such file"],
    );
    // A directory without weights.
    let empty = d.join("empty-model");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("config.json"), "{}").unwrap();
    let e = empty.display().to_string();
    fails(
        "qins-convert",
        &[&empty, &d.join("x.qins")],
        &[&e, "no safetensors"],
    );
    // An existing target without --force.
    let src = d.join("tiny");
    let v = valid.display().to_string();
    fails("qins-convert", &[&src, &valid], &[&v, "exists"]);
    // A corrupt safetensors file.
    let bad = d.join("bad-model");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(
        bad.join("model.safetensors"),
        b"\x10\0\0\0\0\0\0\0{not json}      ",
    )
    .unwrap();
    let b = bad.join("model.safetensors").display().to_string();
    fails("qins-convert", &[&bad, &d.join("x.qins")], &[&b]);
    assert!(!d.join("x.qins").exists());

    // qins-export: a non-empty target directory without --force, a target that is a file.
    let t = src.display().to_string();
    fails("qins-export", &[&valid, &src], &[&t, "not empty"]);
    fails("qins-export", &[&valid, &valid], &[&v, "not a directory"]);

    // qins-synth: a non-empty output directory, an output path that is a file.
    fails("qins-synth", &[&src], &[&t, "not empty"]);
    fails("qins-synth", &[&valid], &[&v, "not a directory"]);
}

/// With `--verbose`, a failure prints the outermost message on the `error:` line and each cause
/// on a `caused by:` line; without it, the same causes on one line.
#[test]
fn verbose_prints_the_error_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let (valid, bytes) = valid_file(tmp.path());
    let d = tmp.path();
    let truncated = d.join("truncated.qins");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();
    let missing = d.join("missing.qins");
    let p = |p: &Path| p.display().to_string();
    let under_file = valid.join("sub");
    let cases: Vec<(&str, Vec<String>, usize)> = vec![
        // (tool, arguments, causes under the outermost message)
        ("qins-inspect", vec![p(&truncated)], 1),
        ("qins-inspect", vec![p(&missing), "--verify".into()], 1),
        ("qins-export", vec![p(&truncated), p(&d.join("out"))], 1),
        ("qins-export", vec![p(&missing), p(&d.join("out"))], 1),
        ("qins-convert", vec![p(&missing), p(&d.join("x.qins"))], 1),
        ("qins-synth", vec![p(&under_file)], 1),
        ("qins-dump", vec![p(&truncated)], 0),
        ("qins-dump", vec![p(&missing)], 1),
    ];
    for (name, args, causes) in cases {
        let plain = run(Command::new(bin(name)).args(&args), DEADLINE);
        assert_eq!(plain.code(), 1, "{}: {}", plain.what, plain.err());
        let line = plain.one_line_error(&[&args[0]]);
        let verbose = run(
            Command::new(bin(name)).args(&args).arg("--verbose"),
            DEADLINE,
        );
        assert_eq!(verbose.code(), 1, "{}: {}", verbose.what, verbose.err());
        let err = verbose.err();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1 + causes, "{}: {err}", verbose.what);
        assert!(lines[0].starts_with("error: "), "{}: {err}", verbose.what);
        assert!(
            lines[1..].iter().all(|l| l.starts_with("caused by: ")),
            "{}: {err}",
            verbose.what
        );
        if name == "qins-dump" {
            // The one line names the file and the kind; the causes follow it.
            assert_eq!(lines[0], line, "{}", verbose.what);
        } else {
            // anyhow's chain: the one line is the messages joined by ": ".
            let joined = std::iter::once(&lines[0]["error: ".len()..])
                .chain(lines[1..].iter().map(|l| &l["caused by: ".len()..]))
                .collect::<Vec<_>>()
                .join(": ");
            assert_eq!(format!("error: {joined}"), line, "{}", verbose.what);
        }
    }
}

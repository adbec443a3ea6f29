//! Running a binary with a deadline: its exit status, stdout and stderr, or a test failure if it
//! runs too long.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A generous deadline for one run of a tool on a small input: far above any real run, so that
/// only a hang reaches it.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// What a finished run left.
#[derive(Debug)]
pub struct Ran {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it wrote on stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote on stderr.
    pub stderr: Vec<u8>,
    /// The command, for messages.
    pub what: String,
}

impl Ran {
    /// The exit code; fails the test if the process was killed by a signal.
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(c) => c,
            None => panic!("{}: killed by {:?}: {}", self.what, self.status, self.err()),
        }
    }

    /// Stderr as text (lossy).
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Stdout as text (lossy).
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Checks the error contract of every tool: stderr is exactly one non-empty line, starting
    /// `error: `, that contains each of `needles` (the file, the cause); returns the line.
    pub fn one_line_error(&self, needles: &[&str]) -> String {
        let err = self.err();
        let line = err.strip_suffix('\n').unwrap_or(&err);
        assert!(
            !line.is_empty() && !line.contains('\n') && line.starts_with("error: "),
            "{}: expected one line `error: ...` on stderr, got {err:?}",
            self.what
        );
        for n in needles {
            assert!(
                line.contains(n),
                "{}: the error does not name {n:?}: {line}",
                self.what
            );
        }
        line.to_string()
    }
}

/// Runs `cmd` to completion with stdin closed and stdout and stderr captured, failing the test
/// if it has not ended within `deadline` (it is then killed).
///
/// No polling and no sleep: a thread waits for the process and the caller waits on a channel
/// with a timeout, so a run costs exactly its own time.
pub fn run(cmd: &mut Command, deadline: Duration) -> Ran {
    let what = describe(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => {
            let out = out.unwrap_or_else(|e| panic!("{what}: cannot wait: {e}"));
            Ran {
                status: out.status,
                stdout: out.stdout,
                stderr: out.stderr,
                what,
            }
        }
        Err(_) => {
            // The waiting thread owns the child, which is not reaped yet, so its pid is still
            // its own: kill it by pid.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what}: still running after {deadline:?}: a hang");
        }
    }
}

/// Waits for `child` (already started, output not piped) with a deadline, as [`run`] does.
pub fn wait(child: Child, deadline: Duration) -> ExitStatus {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(deadline) {
        Ok(status) => status.expect("wait for a child"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("process {pid} still running after {deadline:?}: a hang");
        }
    }
}

/// `program arg arg ...`, for messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    if let Some(name) = std::path::Path::new(&s).file_name() {
        s = name.to_string_lossy().into_owned();
    }
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

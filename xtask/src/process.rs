//! Running child processes: echo the command line, inherit stdio, turn a failure into an error.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs `program args...` in `cwd` with inherited stdio; errors when it cannot start or exits non-zero.
pub fn run<S: AsRef<OsStr>>(cwd: &Path, program: &str, args: &[S]) -> Result<()> {
    let line = command_line(program, args);
    println!("$ {line}");
    let status = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .status()
        .with_context(|| format!("could not start `{line}` (is `{program}` on PATH?)"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `program args...` in `cwd` and returns its stdout; `None` when it cannot start or fails.
pub fn output<S: AsRef<OsStr>>(cwd: &Path, program: &str, args: &[S]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command as a user would type it, for logs and error messages.
fn command_line<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.as_ref().to_string_lossy());
    }
    line
}

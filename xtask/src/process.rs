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

/// Totals of libtest's `test result:` lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestCounts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests that were ignored.
    pub ignored: u64,
}

impl TestCounts {
    /// Adds the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; …` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// [`run`], echoing stdout line by line while summing libtest's `test result:` lines.
pub fn run_counting_tests<S: AsRef<OsStr>>(
    cwd: &Path,
    program: &str,
    args: &[S],
) -> Result<TestCounts> {
    use std::io::{BufRead, BufReader, Write};
    let line = command_line(program, args);
    println!("$ {line}");
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}` (is `{program}` on PATH?)"))?;
    let mut counts = TestCounts::default();
    if let Some(out) = child.stdout.take() {
        let stdout = std::io::stdout();
        for l in BufReader::new(out).lines() {
            let l = l.with_context(|| format!("reading the output of `{line}`"))?;
            counts.add_line(&l);
            let mut lock = stdout.lock();
            let _ = writeln!(lock, "{l}");
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(counts)
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

/// The python of the venv `root/venv_dir` with `import_check` (a python statement such as
/// `import onnx`) working, creating the venv and pip-installing `packages` on first use.
/// `None`, with the reason printed as `<what> SKIPPED: …`, when python or pip cannot
/// provide them (no python3, no network to PyPI).
pub fn python_venv(
    root: &Path,
    venv_dir: &str,
    packages: &[&str],
    import_check: &str,
    what: &str,
) -> Option<std::path::PathBuf> {
    let venv = root.join(venv_dir);
    let python = venv.join("bin").join("python");
    let python_s = python.to_string_lossy().into_owned();
    let importable = || output(root, &python_s, &["-c", import_check]).is_some();
    if importable() {
        return Some(python);
    }
    if output(root, "python3", &["--version"]).is_none() {
        println!(
            "{what} SKIPPED: no python3 on PATH to install {} with",
            packages.join(" ")
        );
        return None;
    }
    if let Err(err) = run(root, "python3", &["-m", "venv", &venv.to_string_lossy()]) {
        println!("{what} SKIPPED: could not create {venv_dir} ({err:#})");
        return None;
    }
    let mut args = vec![
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ];
    args.extend_from_slice(packages);
    if let Err(err) = run(root, &python_s, &args) {
        println!(
            "{what} SKIPPED: pip could not install {} ({err:#})",
            packages.join(" ")
        );
        return None;
    }
    if importable() {
        Some(python)
    } else {
        println!(
            "{what} SKIPPED: {} installed but `{import_check}` fails",
            packages.join(" ")
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_result_lines() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.2s");
        c.add_line(
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("running 3 tests");
        assert_eq!(
            c,
            TestCounts {
                passed: 13,
                failed: 2,
                ignored: 3
            }
        );
    }
}

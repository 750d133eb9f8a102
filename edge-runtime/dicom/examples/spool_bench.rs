//! Memory and throughput of the Storage SCP's spool on a long raw dynamic series: dcmtk's
//! `storescu` pushes a dynamic CTP series of `slices × frames` instances (default 40 × 50 =
//! 2,000, 64 × 64 × 16 bit: the size of a slice does not matter here, one instance is
//! streamed to disk at a time) over 127.0.0.1 to the SCP, first `--first` instances (200)
//! in one association, then the rest in a second, all into the same study and series. The
//! SCP runs in a child process of its own (this example re-executed with `--scp`), beside
//! the hand-off loop `serve` runs (`Spool::take_complete` every 250 ms; the study never
//! goes idle here), so its peak RSS (`VmHWM` of `/proc/<child>/status`) is the spool's
//! alone. Prints the peak RSS after the first part and after all instances, their ratio,
//! and the instances/s of each push.
//!
//! ```text
//! cargo run --release -p strokeseg-dicom --example spool_bench -- [--slices 40] [--frames 50] [--size 64] [--first 200]
//! ```
//!
//! Needs dcmtk's `storescu` on PATH (`apt-get install dcmtk`).
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use strokeseg_dicom::geometry::VolumeGeometry;
use strokeseg_dicom::scp::{ScpConfig, StorageScp};
use strokeseg_dicom::write::{ImageClass, SeriesSpec, StudyAttributes, write_series};
use strokeseg_dicom::{UidRoot, dcm_files};

const OUR_AE: &str = "STROKESEG";
const SENDER_AE: &str = "BENCH_CT";

struct Args {
    slices: usize,
    frames: usize,
    size: usize,
    first: usize,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut a = Args {
        slices: 40,
        frames: 50,
        size: 64,
        first: 200,
    };
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a whole number"))?;
        match flag.as_str() {
            "--slices" => a.slices = value,
            "--frames" => a.frames = value,
            "--size" => a.size = value,
            "--first" => a.first = value,
            other => bail!("unknown option {other}: --slices, --frames, --size, --first"),
        }
    }
    if a.slices == 0 || a.frames < 2 || !(8..=1024).contains(&a.size) {
        bail!("--slices ≥ 1, --frames ≥ 2 and --size 8–1024");
    }
    if a.first == 0 || a.first >= a.slices * a.frames {
        bail!("--first must be between 1 and the number of instances - 1");
    }
    Ok(a)
}

/// The child: the SCP on 127.0.0.1 (its port printed as `port N`) and the hand-off loop's
/// idle check, until killed.
fn run_scp(spool: &Path) -> Result<()> {
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut config = ScpConfig::new(OUR_AE, listen, &[SENDER_AE], spool);
    config.idle_seconds = 3600;
    let scp = StorageScp::bind(config).context("cannot start the storage SCP")?;
    println!("port {}", scp.local_addr()?.port());
    let spool = scp.spool().clone();
    std::thread::spawn(move || {
        loop {
            if let Err(e) = spool.take_complete(Duration::from_secs(3600), SystemTime::now()) {
                eprintln!("take_complete: {e}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    scp.serve(&AtomicBool::new(false))?;
    Ok(())
}

/// Peak resident set size of process `pid` so far (`VmHWM`), KiB.
fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM in {path}"))
}

/// The raw dynamic series, one file per (frame, slice), in `dir`.
fn write_dynamic(dir: &Path, a: &Args) -> Result<Vec<PathBuf>> {
    let uid_root = UidRoot::default();
    let study = StudyAttributes {
        patient_name: "Bench^Spool".into(),
        patient_id: "SPOOL1".into(),
        patient_sex: "O".into(),
        study_uid: uid_root.derive("spool-bench/study"),
        study_date: "20180101".into(),
        study_time: "080000".into(),
        study_id: "1".into(),
        accession_number: "SB1".into(),
        study_description: "spool benchmark".into(),
        frame_of_reference_uid: uid_root.derive("spool-bench/frame-of-reference"),
        ..StudyAttributes::default()
    };
    let geometry = VolumeGeometry::from_ras_axis_aligned(
        [a.size, a.size, a.slices],
        [0.9, 0.9, 5.0],
        [0.0, 0.0, 0.0],
    );
    let spec = SeriesSpec::raw_dynamic(
        ImageClass::Ct,
        uid_root.derive("spool-bench/series/dynamic"),
        a.frames,
        1.0,
    );
    let n = a.size * a.size;
    let written = write_series(dir, &study, &spec, &geometry, &uid_root, |t, k| {
        (0..n)
            .map(|i| 30.0 + ((i + 7 * k + 3 * t) % 40) as f64)
            .collect()
    })?;
    Ok(written.files)
}

/// `storescu` of `files` in one association; seconds.
fn push(storescu: &Path, port: u16, files: &[PathBuf]) -> Result<f64> {
    let started = Instant::now();
    let out = Command::new(storescu)
        .env("TCP_NODELAY", "1")
        .args(["-aet", SENDER_AE, "-aec", OUR_AE, "127.0.0.1"])
        .arg(port.to_string())
        .args(files)
        .output()
        .context("cannot run storescu (apt-get install dcmtk)")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "storescu failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(seconds)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<()> {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("--scp") {
        let spool = argv.nth(1).context("--scp SPOOL")?;
        return run_scp(Path::new(&spool));
    }
    let a = parse_args(argv)?;
    let storescu = strokeseg_dicom::testing::tool("storescu", "spool_bench")
        .context("storescu not on PATH (apt-get install dcmtk)")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let files = write_dynamic(&dir.join("sent"), &a)?;
    let spool = dir.join("spool");

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe()?)
            .arg("--scp")
            .arg(&spool)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the SCP child")?,
    );
    let stdout = child.0.stdout.take().context("child stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("the SCP child said {line:?}"))?;
    let pid = child.0.id();
    let idle_kib = vm_hwm_kib(pid)?;

    let (first, rest) = files.split_at(a.first);
    let s_first = push(&storescu, port, first)?;
    let rss_first = vm_hwm_kib(pid)?;
    let s_rest = push(&storescu, port, rest)?;
    let rss_all = vm_hwm_kib(pid)?;
    let stored = dcm_files(&spool.join("studies")).len();
    drop(child);
    if stored != files.len() {
        bail!("{stored} instances in the spool, {} sent", files.len());
    }
    let bytes = std::fs::metadata(&files[0])?.len();
    println!(
        "raw dynamic series: {} slices x {} frames = {} instances of {}x{} (16 bit, {bytes} bytes each), all in the spool",
        a.slices,
        a.frames,
        files.len(),
        a.size,
        a.size
    );
    println!("SCP peak RSS at start: {idle_kib} KiB");
    println!(
        "after {} instances: peak RSS {rss_first} KiB ({:.0} instances/s)",
        first.len(),
        first.len() as f64 / s_first
    );
    println!(
        "after {} instances: peak RSS {rss_all} KiB ({:.0} instances/s for the last {})",
        files.len(),
        rest.len() as f64 / s_rest,
        rest.len()
    );
    println!(
        "peak RSS ratio {} / {} instances: {:.3}",
        files.len(),
        first.len(),
        rss_all as f64 / rss_first as f64
    );
    Ok(())
}

//! Loop 2 of `cargo xtask hil`: `strokeseg-shared` on an emulated Cortex-M4F.
//!
//! 1. Computes the golden values on the host: the fixture study ([`super::fixture`]) through
//!    the same `pipeline.rs` the firmware runs, written as `target/hil/golden.rs`.
//! 2. Builds `tests/hil/firmware` for `thumbv7em-none-eabihf` (release, `DEFMT_LOG=info`,
//!    `-Tlink.x -Tdefmt.x`) with `STROKESEG_HIL_GOLDEN` pointing at that file.
//! 3. Reads flash and static RAM from the ELF's section headers.
//! 4. Boots it in `qemu-system-arm -machine mps2-an386` with semihosting, pipes the defmt
//!    frames through `defmt-print`, and checks QEMU's exit status and the firmware's
//!    `HIL-RESULT` line (all checks passed, stack high-water mark + statics within the budget).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::elf;
use super::fixture;
use crate::cross;
use strokeseg_hil_pipeline as pipeline;
use strokeseg_hil_pipeline::{Expected, FLOAT_REL_TOLERANCE, Fixture, Golden, Sink};

/// The firmware crate, relative to the workspace root.
const FIRMWARE_DIR: &str = "tests/hil/firmware";
/// Its package (and binary) name.
const FIRMWARE_NAME: &str = "strokeseg-hil-firmware";
/// Cortex-M4F with FPU.
const THUMB_TARGET: &str = "thumbv7em-none-eabihf";
/// Start of the RAM the firmware's `memory.x` gives it (stack first, then statics).
const RAM_ORIGIN: u32 = 0x2000_0000;
/// Seed of the fixture study.
const FIXTURE_SEED: u64 = 2018;
/// QEMU gets this long before it is killed (the run takes about a second).
const QEMU_TIMEOUT: Duration = Duration::from_secs(120);
/// defmt-print's version (its major must match the firmware's defmt wire format).
const DEFMT_PRINT_VERSION: &str = "1.2.0";

/// What the firmware loop measured.
#[derive(Debug, Clone, Default)]
pub struct FirmwareOutcome {
    /// Flash: code, read-only data (the embedded study is most of it), vector table, `.data`.
    pub flash_bytes: u64,
    /// Statically allocated RAM.
    pub static_ram_bytes: u64,
    /// Stack high-water mark.
    pub stack_used_bytes: u64,
    /// Size of the stack region.
    pub stack_size_bytes: u64,
    /// Checks run.
    pub checks: u64,
    /// Floating-point checks, and how many of them were bit-identical to the host's.
    pub floats: u64,
    /// See `floats`.
    pub floats_bit_identical: u64,
    /// Float buffers compared by bit hash, and how many were bit-identical.
    pub bit_buffers: u64,
    /// See `bit_buffers`.
    pub bit_buffers_identical: u64,
    /// Largest relative difference of a float check.
    pub max_rel_diff: f64,
    /// Wall time of the QEMU run.
    pub qemu_seconds: f64,
    /// The RAM budget: the `STACK` + `RAM` regions of the firmware's `memory.x`.
    pub ram_budget_bytes: u64,
}

/// Runs the whole firmware loop.
pub fn run(root: &Path) -> Result<FirmwareOutcome> {
    cross::ensure_rustup_target(root, THUMB_TARGET)?;
    cross::ensure_apt_tools(root, &[(&["qemu-system-arm"], "qemu-system-arm")])?;
    let defmt_print =
        cross::ensure_cargo_tool(root, "defmt-print", DEFMT_PRINT_VERSION, "defmt-print")?;

    let memory_x = root.join(FIRMWARE_DIR).join("memory.x");
    let ram_budget_bytes = ram_budget(
        &std::fs::read_to_string(&memory_x)
            .with_context(|| format!("reading {}", memory_x.display()))?,
    )
    .with_context(|| format!("reading the RAM regions of {}", memory_x.display()))?;

    let hil_dir = cross::target_dir(root).join("hil");
    std::fs::create_dir_all(&hil_dir).with_context(|| format!("creating {}", hil_dir.display()))?;
    let golden_path = hil_dir.join("golden.rs");
    let n_checks = write_golden(&golden_path)?;
    println!(
        "hil firmware: {n_checks} golden values in {}",
        golden_path.display()
    );

    let elf_path = build(root, &golden_path)?;
    let bytes =
        std::fs::read(&elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    let sections = elf::alloc_sections(&bytes)
        .with_context(|| format!("reading the sections of {}", elf_path.display()))?;
    let memory = elf::memory_use(&sections, RAM_ORIGIN);
    for s in &sections {
        println!("  {:<16} {:#010x} {:>8} B", s.name, s.addr, s.size);
    }

    let started = Instant::now();
    let log = run_qemu(root, &elf_path, &defmt_print)?;
    let qemu_seconds = started.elapsed().as_secs_f64();
    let result = parse_result(&log)?;
    let outcome = FirmwareOutcome {
        flash_bytes: memory.flash_bytes,
        static_ram_bytes: memory.static_ram_bytes,
        stack_used_bytes: result.get("stack_used")?,
        stack_size_bytes: result.get("stack_size")?,
        checks: result.get("checks")?,
        floats: result.get("floats")?,
        floats_bit_identical: result.get("floats_bit_identical")?,
        bit_buffers: result.get("bits")?,
        bit_buffers_identical: result.get("bits_identical")?,
        max_rel_diff: result.get_f64("max_rel_diff")?,
        qemu_seconds,
        ram_budget_bytes,
    };
    if result.get("failed")? != 0 || result.raw("ok") != Some("true") {
        bail!(
            "the firmware's results differ from the host's golden values ({} of {} checks failed); see the log above",
            result.get("failed")?,
            outcome.checks
        );
    }
    if outcome.checks != n_checks as u64 {
        bail!(
            "the firmware ran {} checks, the host recorded {n_checks}",
            outcome.checks
        );
    }
    let ram = outcome.static_ram_bytes + outcome.stack_used_bytes;
    if ram > ram_budget_bytes {
        bail!(
            "firmware RAM {} B (static {} B + stack {} B) is over the {} B budget",
            ram,
            outcome.static_ram_bytes,
            outcome.stack_used_bytes,
            ram_budget_bytes
        );
    }
    Ok(outcome)
}

/// The RAM budget in `memory.x`: the sum of the `STACK` and `RAM` regions' `LENGTH`s.
fn ram_budget(memory_x: &str) -> Result<u64> {
    let length_of = |region: &str| -> Result<u64> {
        let line = memory_x
            .lines()
            .map(str::trim)
            .find(|l| l.split_whitespace().next() == Some(region))
            .with_context(|| format!("no {region} region"))?;
        let value = line
            .split("LENGTH")
            .nth(1)
            .and_then(|rest| rest.split('=').nth(1))
            .map(str::trim)
            .with_context(|| format!("no LENGTH in `{line}`"))?;
        let (digits, unit) = value.split_at(
            value
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(value.len()),
        );
        let n: u64 = digits
            .parse()
            .with_context(|| format!("LENGTH `{value}` of {region} is not a number"))?;
        Ok(match unit.trim() {
            "K" => n * 1024,
            "M" => n * 1024 * 1024,
            "" => n,
            other => bail!("LENGTH unit `{other}` of {region}"),
        })
    };
    Ok(length_of("STACK")? + length_of("RAM")?)
}

/// Records the workload's results as golden values.
#[derive(Default)]
struct Recorder {
    golden: Vec<Golden>,
}

impl Sink for Recorder {
    fn int(&mut self, name: &'static str, index: u32, value: u64) {
        self.golden.push(Golden {
            name,
            index,
            expected: Expected::Int(value),
        });
    }
    fn float(&mut self, name: &'static str, index: u32, value: f64) {
        self.golden.push(Golden {
            name,
            index,
            expected: Expected::Float(value),
        });
    }
    fn bits(&mut self, name: &'static str, index: u32, hash: u64) {
        self.golden.push(Golden {
            name,
            index,
            expected: Expected::Bits(hash),
        });
    }
}

/// Runs the workload on the host and writes `golden.rs` (the study and the expected
/// results); returns the number of checks. Leaves the file untouched when its content is
/// unchanged, so cargo does not rebuild the firmware.
fn write_golden(path: &Path) -> Result<usize> {
    let study = fixture::study(FIXTURE_SEED);
    let dynamic = fixture::dynamic_series(FIXTURE_SEED);
    let golden = host_results(&study, &dynamic)?;
    let text = golden_source(&study, &dynamic, &golden);
    if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(golden.len())
}

/// The workload's results on the host, in the order it emits them.
fn host_results(study: &fixture::Study, dynamic: &[f32]) -> Result<Vec<Golden>> {
    let mut recorder = Recorder::default();
    pipeline::run(
        &Fixture {
            voxels: &study.voxels,
            truth: &study.truth,
            dynamic,
        },
        &mut recorder,
    )
    .map_err(|e| anyhow::anyhow!("the HIL workload failed on the host: {e:?}"))?;
    Ok(recorder.golden)
}

fn golden_source(study: &fixture::Study, dynamic: &[f32], golden: &[Golden]) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        s,
        "// Generated by `cargo xtask hil` (xtask/src/hil/firmware.rs) from the fixture study\n\
         // (seed {FIXTURE_SEED}) and pipeline.rs run on the host. Do not edit.\n"
    );
    let _ = writeln!(s, "/// The fixture study, `[slice][channel][y][x]`.");
    let _ = write!(s, "pub static VOXELS: [f32; {}] = [", study.voxels.len());
    for (i, v) in study.voxels.iter().enumerate() {
        if i % 12 == 0 {
            s.push_str("\n    ");
        }
        let _ = write!(s, "{},", f32_literal(*v));
    }
    s.push_str("\n];\n\n");
    let _ = writeln!(s, "/// The ground-truth mask, `[slice][y][x]`.");
    let _ = write!(s, "pub static TRUTH: [u8; {}] = [", study.truth.len());
    for (i, t) in study.truth.iter().enumerate() {
        if i % 32 == 0 {
            s.push_str("\n    ");
        }
        let _ = write!(s, "{t},");
    }
    s.push_str("\n];\n\n");
    let _ = writeln!(s, "/// The dynamic perfusion slice, `[frame][y][x]`, HU.");
    let _ = write!(s, "pub static DYNAMIC: [f32; {}] = [", dynamic.len());
    for (i, v) in dynamic.iter().enumerate() {
        if i % 12 == 0 {
            s.push_str("\n    ");
        }
        let _ = write!(s, "{},", f32_literal(*v));
    }
    s.push_str("\n];\n\n");
    let _ = writeln!(
        s,
        "/// The host's results, in the order the workload emits them."
    );
    s.push_str("pub static GOLDEN: &[strokeseg_hil_pipeline::Golden] = &[\n");
    for g in golden {
        let expected = match g.expected {
            Expected::Int(v) => format!("Int({v})"),
            Expected::Float(v) => format!("Float(f64::from_bits({:#018x}))", v.to_bits()),
            Expected::Bits(v) => format!("Bits({v:#018x})"),
        };
        let _ = writeln!(
            s,
            "    strokeseg_hil_pipeline::Golden {{ name: {:?}, index: {}, expected: strokeseg_hil_pipeline::Expected::{expected} }},",
            g.name, g.index
        );
    }
    s.push_str("];\n");
    s
}

/// An exact Rust literal for `v` (Debug prints the shortest round-tripping decimal).
fn f32_literal(v: f32) -> String {
    if v.is_nan() {
        "f32::NAN".to_owned()
    } else if v == f32::INFINITY {
        "f32::INFINITY".to_owned()
    } else if v == f32::NEG_INFINITY {
        "f32::NEG_INFINITY".to_owned()
    } else {
        format!("{v:?}")
    }
}

/// Builds the firmware; returns the ELF's path.
fn build(root: &Path, golden: &Path) -> Result<PathBuf> {
    let target_dir = cross::target_dir(root);
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join(FIRMWARE_DIR))
        .args(["build", "--release", "--locked", "--target", THUMB_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("STROKESEG_HIL_GOLDEN", golden)
        .env("DEFMT_LOG", "info");
    cross::run_command(&mut cmd)?;
    let elf = target_dir
        .join(THUMB_TARGET)
        .join("release")
        .join(FIRMWARE_NAME);
    if !elf.is_file() {
        bail!(
            "the firmware build succeeded but {} is missing",
            elf.display()
        );
    }
    Ok(elf)
}

/// Boots the firmware in QEMU, decodes its defmt log, echoes it and returns it; an error when
/// QEMU exits non-zero (semihosting exit 1: a check failed) or runs past [`QEMU_TIMEOUT`].
fn run_qemu(root: &Path, elf: &Path, defmt_print: &Path) -> Result<Vec<String>> {
    let mut qemu_cmd = Command::new("qemu-system-arm");
    qemu_cmd
        .current_dir(root)
        .args([
            "-machine",
            "mps2-an386",
            "-nographic",
            "-monitor",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
            "-kernel",
        ])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    println!(
        "$ {} | defmt-print -e {}",
        cross::describe(&qemu_cmd),
        elf.display()
    );
    let mut qemu = qemu_cmd
        .spawn()
        .context("could not start qemu-system-arm")?;
    let frames = qemu
        .stdout
        .take()
        .context("qemu's stdout was not captured")?;
    let mut decoder = Command::new(defmt_print)
        .current_dir(root)
        .args(["--log-format", "{L} {s}", "-e"])
        .arg(elf)
        .arg("stdin")
        .stdin(Stdio::from(frames))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", defmt_print.display()))?;
    let decoded = decoder
        .stdout
        .take()
        .context("defmt-print's stdout was not captured")?;
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(decoded).lines().map_while(Result::ok) {
            println!("  fw| {line}");
            lines.push(line);
        }
        lines
    });

    let deadline = Instant::now() + QEMU_TIMEOUT;
    let status = loop {
        if let Some(status) = qemu.try_wait().context("waiting for qemu")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = decoder.wait();
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the log reader thread panicked"))?;
    match status {
        None => bail!(
            "qemu-system-arm did not exit within {} s (the firmware hung)",
            QEMU_TIMEOUT.as_secs()
        ),
        Some(s) if !s.success() => bail!(
            "the firmware failed under qemu-system-arm ({s}; semihosting exit 1 means a check failed); see the log above"
        ),
        Some(_) => Ok(lines),
    }
}

/// The `key=value` pairs of the firmware's `HIL-RESULT` line.
struct ResultLine(Vec<(String, String)>);

impl ResultLine {
    fn raw(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn get(&self, key: &str) -> Result<u64> {
        let raw = self
            .raw(key)
            .with_context(|| format!("the firmware's HIL-RESULT line has no `{key}`"))?;
        raw.parse()
            .with_context(|| format!("HIL-RESULT {key}={raw} is not an integer"))
    }
    fn get_f64(&self, key: &str) -> Result<f64> {
        let raw = self
            .raw(key)
            .with_context(|| format!("the firmware's HIL-RESULT line has no `{key}`"))?;
        raw.parse()
            .with_context(|| format!("HIL-RESULT {key}={raw} is not a number"))
    }
}

fn parse_result(log: &[String]) -> Result<ResultLine> {
    let line = log
        .iter()
        .rev()
        .find_map(|l| l.split_once("HIL-RESULT ").map(|(_, rest)| rest))
        .context("the firmware printed no HIL-RESULT line (did it crash before the end?)")?;
    Ok(ResultLine(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    ))
}

/// One line for the summary.
pub fn summary(o: &FirmwareOutcome) -> String {
    format!(
        "flash {:.1} KiB, RAM {:.1} KiB of {} KiB budget (static {:.1} KiB + stack high-water {:.1} KiB of a {:.0} KiB region); \
         {} checks passed ({} floats, {} bit-identical; {} of {} float buffers bit-identical; max relative difference {:e}, tolerance {:e}); QEMU {:.1} s",
        o.flash_bytes as f64 / 1024.0,
        (o.static_ram_bytes + o.stack_used_bytes) as f64 / 1024.0,
        o.ram_budget_bytes / 1024,
        o.static_ram_bytes as f64 / 1024.0,
        o.stack_used_bytes as f64 / 1024.0,
        o.stack_size_bytes as f64 / 1024.0,
        o.checks,
        o.floats,
        o.floats_bit_identical,
        o.bit_buffers_identical,
        o.bit_buffers,
        o.max_rel_diff,
        FLOAT_REL_TOLERANCE,
        o.qemu_seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_values_are_deterministic_and_cover_both_paths() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("strokeseg-hil-golden-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("golden.rs");
        let n = write_golden(&path)?;
        let first = std::fs::read_to_string(&path)?;
        assert_eq!(write_golden(&path)?, n);
        assert_eq!(std::fs::read_to_string(&path)?, first);
        assert!(first.contains("\"model.dice\"") && first.contains("\"threshold.dice\""));
        assert!(first.contains("\"perfusion.cbf\"") && first.contains("pub static DYNAMIC"));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// The perfusion workload's maps on the host read like the fixture's truth: the core
    /// has lower CBF than white matter, white lower than grey, and the core a later Tmax.
    #[test]
    fn perfusion_workload_maps_follow_the_fixture() -> Result<()> {
        use strokeseg_hil_pipeline::{DYN_NX, DYN_NY};
        let study = fixture::study(FIXTURE_SEED);
        let dynamic = fixture::dynamic_series(FIXTURE_SEED);
        let golden = host_results(&study, &dynamic)?;
        let value = |name: &str, v: usize| {
            golden.iter().find_map(|g| match g.expected {
                Expected::Float(x) if g.name == name && g.index == v as u32 => Some(x),
                _ => None,
            })
        };
        let aif = golden
            .iter()
            .find(|g| g.name == "perfusion.aif_voxel")
            .map(|g| g.expected);
        assert_eq!(
            aif,
            Some(Expected::Int((1 + DYN_NX) as u64)),
            "the artery is the AIF"
        );
        // Mean of a map over the tissue voxels whose true CBF is `cbf`.
        let mean = |cbf: f64, name: &str| {
            let values: Vec<f64> = (0..DYN_NX * DYN_NY)
                .filter(|&v| {
                    matches!(
                        fixture::dynamic_voxel(v % DYN_NX, v / DYN_NX),
                        fixture::DynamicVoxel::Tissue { cbf_ml_100g_min, .. } if cbf_ml_100g_min == cbf
                    )
                })
                .filter_map(|v| value(name, v))
                .collect();
            assert!(
                !values.is_empty(),
                "no tissue voxel of CBF {cbf} in the maps"
            );
            values.iter().sum::<f64>() / values.len() as f64
        };
        let (grey, white, core) = (
            mean(55.0, "perfusion.cbf"),
            mean(25.0, "perfusion.cbf"),
            mean(10.0, "perfusion.cbf"),
        );
        println!("host maps: CBF grey {grey:.1}, white {white:.1}, core {core:.1}");
        // Directions only (fidelity is `perfusion_fidelity`'s job, on phantom studies).
        assert!(
            grey > white && white > core,
            "CBF grey {grey}, white {white}, core {core}"
        );
        let (grey_tmax, core_tmax) = (mean(55.0, "perfusion.tmax"), mean(10.0, "perfusion.tmax"));
        println!("host maps: Tmax grey {grey_tmax:.2} s, core {core_tmax:.2} s");
        assert!(
            core_tmax > grey_tmax,
            "Tmax core {core_tmax} s, grey {grey_tmax} s"
        );
        Ok(())
    }

    /// The three values the no-alloc workload repeats from the `alloc` module `maps`.
    #[test]
    fn parses_the_result_line() -> Result<()> {
        let log = vec![
            "INFO strokeseg HIL firmware".to_owned(),
            "INFO HIL-RESULT ok=true checks=12 failed=0 max_rel_diff=0 stack_used=100".to_owned(),
        ];
        let r = parse_result(&log)?;
        assert_eq!(r.get("checks")?, 12);
        assert_eq!(r.raw("ok"), Some("true"));
        assert_eq!(r.get_f64("max_rel_diff")?, 0.0);
        assert!(r.get("nope").is_err());
        assert!(parse_result(&[]).is_err());
        Ok(())
    }

    #[test]
    fn reads_the_budget_from_memory_x() -> Result<()> {
        let text = "MEMORY\n{\n  FLASH : ORIGIN = 0x0, LENGTH = 4M\n  STACK : ORIGIN = 0x20000000, LENGTH = 120K\n  RAM   : ORIGIN = 0x2001E000, LENGTH = 8K\n}\n";
        assert_eq!(ram_budget(text)?, 128 * 1024);
        assert!(ram_budget("MEMORY { }").is_err());
        let real = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(FIRMWARE_DIR)
                .join("memory.x"),
        )?;
        assert_eq!(ram_budget(&real)?, 128 * 1024);
        Ok(())
    }

    #[test]
    fn float_literals_round_trip() {
        for v in [0.1f32, -1000.25, 1e-7, 3.4e38, 35.0] {
            assert_eq!(f32_literal(v).parse::<f32>().ok(), Some(v));
        }
        assert_eq!(f32_literal(f32::NAN), "f32::NAN");
    }
}

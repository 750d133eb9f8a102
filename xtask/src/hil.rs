//! `cargo xtask hil`: hardware-in-the-loop tests under QEMU, two loops in one command.
//!
//! 1. **Firmware** ([`firmware`]): `strokeseg-shared`'s no_std core on an emulated Cortex-M4F
//!    (`qemu-system-arm -machine mps2-an386`), checked against golden values the host computes
//!    with the same code; flash, static RAM and the stack high-water mark against a budget.
//! 2. **Edge** ([`edge`]): the static aarch64 `strokeseg-edge` (`cargo xtask cross`) under
//!    `qemu-aarch64` (`QEMU_CPU=cortex-a72`) against the x86 host build of the same source,
//!    driven by the edge runtime's `hil_qemu` integration test: masks, reports, errors, the
//!    watch daemon, status pins, and peak memory under a `prlimit --as` limit.
//!
//! Everything it needs is installed when missing (rustup targets, Debian's `qemu-system-arm`,
//! `qemu-user-static`, `gcc-aarch64-linux-gnu`, and `defmt-print` with `cargo install`).
//! `cargo xtask hil firmware` or `cargo xtask hil edge` runs one loop.

mod edge;
mod elf;
mod firmware;
mod fixture;

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};

/// Which loops to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loops {
    firmware: bool,
    edge: bool,
}

fn parse_args(args: &[String]) -> Result<Loops> {
    if args.is_empty() {
        return Ok(Loops {
            firmware: true,
            edge: true,
        });
    }
    let mut loops = Loops {
        firmware: false,
        edge: false,
    };
    for arg in args {
        match arg.as_str() {
            "firmware" => loops.firmware = true,
            "edge" => loops.edge = true,
            other => bail!("unknown hil loop `{other}`; loops: firmware, edge (default: both)"),
        }
    }
    Ok(loops)
}

/// Runs the selected loops and prints the figures the issue asks for.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let loops = parse_args(args)?;
    let started = Instant::now();
    let mut lines = Vec::new();
    if loops.firmware {
        println!("\n==> hil firmware: strokeseg-shared on an emulated Cortex-M4F (mps2-an386)");
        let outcome = firmware::run(root)?;
        lines.push(format!("firmware  {}", firmware::summary(&outcome)));
    }
    if loops.edge {
        println!("\n==> hil edge: strokeseg-edge on emulated aarch64 (qemu-user, cortex-a72)");
        let outcome = edge::run(root)?;
        lines.push(format!("edge      {}", edge::summary(&outcome)));
    }
    println!(
        "\nhil: all loops passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for line in lines {
        println!("  {line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_loops() -> Result<()> {
        let both = parse_args(&[])?;
        assert!(both.firmware && both.edge);
        let fw = parse_args(&["firmware".to_owned()])?;
        assert!(fw.firmware && !fw.edge);
        assert!(parse_args(&["board".to_owned()]).is_err());
        Ok(())
    }
}

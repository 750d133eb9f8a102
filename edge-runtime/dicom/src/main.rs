//! `strokeseg-dicom`: a development DICOM node beside `strokeseg-edge` — a Storage SCP on
//! a spool, phantom studies as DICOM series, sending files with the Storage SCU. The edge
//! runtime's `serve` uses the same library; this binary is what the crate's tests start
//! and `kill -9`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use strokeseg_dicom::scp::{ScpConfig, StorageScp};
use strokeseg_dicom::scu::Destination;
use strokeseg_dicom::write::{ImageClass, PhantomSeriesOptions, write_phantom_study};

#[derive(Parser)]
#[command(about = "strokeseg development DICOM node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Storage SCP: receive into a spool until killed.
    Scp {
        /// Our AE title.
        #[arg(long, default_value = "STROKESEG")]
        ae_title: String,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:11112")]
        listen: SocketAddr,
        /// Calling AE titles accepted (repeat the flag).
        #[arg(long = "allow", required = true)]
        allow: Vec<String>,
        /// Spool folder.
        #[arg(long)]
        spool: PathBuf,
    },
    /// Writes phantom case `case` of the classic family as DICOM series.
    Phantom {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Dataset seed.
        #[arg(long, default_value_t = 13)]
        seed: u64,
        /// 0-based case index.
        #[arg(long, default_value_t = 0)]
        case: usize,
        /// Slices of the slab.
        #[arg(long, default_value_t = 2)]
        slices: usize,
        /// Also write the raw dynamic series.
        #[arg(long)]
        dynamic: bool,
        /// Write the maps as Secondary Capture instead of CT Image.
        #[arg(long)]
        secondary_capture: bool,
        /// Write every series as one Enhanced CT (multi-frame) instance.
        #[arg(long, conflicts_with = "secondary_capture")]
        enhanced: bool,
    },
    /// Sends DICOM files with C-STORE (`AE@host:port`).
    Send {
        /// Destination `AE@host:port`.
        #[arg(long)]
        to: String,
        /// Our (calling) AE title.
        #[arg(long, default_value = "STROKESEG")]
        ae_title: String,
        /// The files.
        files: Vec<PathBuf>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Scp {
            ae_title,
            listen,
            allow,
            spool,
        } => {
            let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
            let scp = StorageScp::bind(ScpConfig::new(&ae_title, listen, &allow, &spool))
                .context("cannot start the storage SCP")?;
            println!("listening on {}", scp.local_addr()?);
            scp.serve(&AtomicBool::new(false))?;
        }
        Command::Phantom {
            out,
            seed,
            case,
            slices,
            dynamic,
            secondary_capture,
            enhanced,
        } => {
            // The indicator-dilution dynamic series (what `--dynamic` writes).
            let opts = strokeseg_phantom::DatasetOptions {
                min_slices: slices,
                max_slices: slices,
                dynamic: strokeseg_phantom::DynamicSeries::ctp(),
                ..strokeseg_phantom::DatasetOptions::default()
            };
            let case = strokeseg_phantom::generate_case(seed, case, &opts)?;
            let written = write_phantom_study(
                &case,
                &out,
                &PhantomSeriesOptions {
                    maps_as: if secondary_capture {
                        ImageClass::SecondaryCapture
                    } else {
                        ImageClass::Ct
                    },
                    multi_frame: enhanced,
                    with_dynamic: dynamic,
                    study_key: format!("strokeseg-phantom/seed-{seed}"),
                    ..PhantomSeriesOptions::default()
                },
            )?;
            println!(
                "wrote {} instances of study {} into {}",
                written.files().count(),
                written.study.study_uid,
                out.display()
            );
        }
        Command::Send {
            to,
            ae_title,
            files,
        } => {
            let dest = Destination::parse(&to)?;
            strokeseg_dicom::scu::send_files(&dest, &ae_title, &files)
                .with_context(|| format!("sending to {to}"))?;
            println!("sent {} files to {to}", files.len());
        }
    }
    Ok(())
}

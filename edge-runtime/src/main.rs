//! The `strokeseg-edge` command line.
//!
//! Exit codes: 0 success, 1 internal error, 2 usage error, 3 bad input study or file,
//! 4 bad configuration, 5 bad or missing model, 6 outputs cannot be written, 7 status pins
//! unavailable, 130 interrupted by a signal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use strokeseg_edge::bench::{BenchOptions, run_bench};
use strokeseg_edge::config::EdgeConfig;
use strokeseg_edge::demo::run_demo;
use strokeseg_edge::evaluate::evaluate;
use strokeseg_edge::inspect::{StudySummary, inspect_study};
use strokeseg_edge::model::{embedded_model_info, model_info};
use strokeseg_edge::perfusion::MapsSource;
use strokeseg_edge::report::{Method, Report};
use strokeseg_edge::segment::{
    DEFAULT_ALERT_THRESHOLD_ML, SegmentOptions, segment_to_dir, with_status,
};
use strokeseg_edge::segmenter::{Segmenter, Tta};
use strokeseg_edge::status::{PIN_LOG_TARGET, open_pins};
use strokeseg_edge::threads::{resolve_threads, set_threads};
use strokeseg_edge::watch::{Shutdown, WatchSettings, Watcher};
use strokeseg_edge::{EdgeError, ModelError};
use strokeseg_eval::CaseEvaluation;
use strokeseg_shared::PreprocessConfig;

#[derive(Parser)]
#[command(
    name = "strokeseg-edge",
    version,
    about = "Segment ischemic stroke lesions in CT perfusion studies",
    after_help = "Exit codes: 0 success, 1 internal error, 2 usage error, 3 bad input study or file, \
                  4 bad configuration, 5 bad or missing model, 6 outputs cannot be written, \
                  7 status pins unavailable, 130 interrupted."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line (journald, log collectors).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a study (ISLES case folder or folder of per-modality files) and print its
    /// grid and per-channel brain statistics.
    Inspect {
        /// The case folder.
        case: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Segment one study: writes lesion_mask.nii.gz, report.json and overlay.png into OUT
    /// (all three or none).
    Segment {
        /// The case folder.
        case: PathBuf,
        /// ONNX model (default: the model embedded in this binary); repeat it for an ensemble
        /// that averages the models' lesion probabilities.
        #[arg(long)]
        model: Vec<PathBuf>,
        /// Test-time augmentation: `flip` also runs each slice mirrored left–right and
        /// averages (twice the inference time).
        #[arg(long, value_enum, default_value_t = Tta::None)]
        tta: Tta,
        /// Segmentation method.
        #[arg(long, value_enum, default_value_t = Method::Model)]
        method: Method,
        /// Perfusion maps: the study's own, computed from its raw series CT_4DPWI (written
        /// beside the mask with an AIF/VOF plot), or auto (the study's when it has all four).
        #[arg(long, value_enum, default_value_t = MapsSource::Auto)]
        maps: MapsSource,
        /// Output folder (created if needed).
        #[arg(long)]
        out: PathBuf,
        /// Lesion volume (mL) at or above which the alert is raised [default: the config's,
        /// else 70].
        #[arg(long)]
        alert_threshold_ml: Option<f64>,
        /// Config file (TOML): its [pins] drive the status pins, its [segment]
        /// alert_threshold_ml applies.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Threads tract runs the model on [default: the config's, else the box's cores].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Watch an inbox for studies and segment each one (the daemon).
    Watch {
        /// Config file (TOML); flags below override its values.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Parent of inbox/, processing/, done/, failed/, outbox/.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Segmentation method.
        #[arg(long, value_enum)]
        method: Option<Method>,
        /// ONNX model (default: the embedded model); repeat it for an ensemble.
        #[arg(long)]
        model: Vec<PathBuf>,
        /// Test-time augmentation.
        #[arg(long, value_enum)]
        tta: Option<Tta>,
        /// Also accept study folders unchanged for this many seconds (0: READY marker only).
        #[arg(long)]
        settle_seconds: Option<u64>,
        /// Inbox scan interval, milliseconds.
        #[arg(long)]
        poll_ms: Option<u64>,
        /// Lesion volume (mL) at or above which the alert is raised.
        #[arg(long)]
        alert_threshold_ml: Option<f64>,
        /// Process what is there, then exit.
        #[arg(long)]
        once: bool,
        /// Threads tract runs the model on [default: the config's, else the box's cores].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Generate a synthetic CTP study with a lesion into OUT/study, segment it into OUT and
    /// score it against the phantom's truth.
    Demo {
        /// Output folder.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        /// Phantom seed.
        #[arg(long, default_value_t = 2018)]
        seed: u64,
        /// Which case of the phantom dataset to generate.
        #[arg(long, default_value_t = 0)]
        case: usize,
        /// ONNX model (default: the embedded model, else the threshold rule).
        #[arg(long)]
        model: Option<PathBuf>,
        /// A DICOM round trip instead: a phantom study pushed by C-STORE to `serve` on a
        /// free 127.0.0.1 port, results sent to a PACS played by this binary.
        #[arg(long)]
        dicom: bool,
    },
    /// The box as a DICOM node: receive studies from the scanner (Storage SCP), segment
    /// each through watch's queue, send Segmentation, overlay and report to the PACS.
    Serve {
        /// Config file (TOML) with [watch] root and a [dicom] table.
        #[arg(long)]
        config: PathBuf,
    },
    /// ISLES metrics (Dice, precision, recall, volumes, Hausdorff, HD95, ASSD) of a predicted
    /// mask against a case's ground truth (OT).
    Evaluate {
        /// An output folder (holding lesion_mask.nii.gz) or a mask file.
        #[arg(long)]
        pred: PathBuf,
        /// The case folder with the OT ground truth.
        #[arg(long)]
        truth: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure a model here: per-slice latency percentiles on a prepared phantom slice,
    /// FLOPs, GFLOP/s, the tract kernels selected, peak RSS.
    Bench {
        /// The ONNX file (default: the embedded model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Threads tract runs on [default: the box's cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Timed runs.
        #[arg(long, default_value_t = 50)]
        reps: usize,
        /// Untimed runs first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Raw little-endian f32 [C, H, W] input instead of the phantom slice.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Write the input used (raw little-endian f32 [C, H, W]).
        #[arg(long)]
        dump_input: Option<PathBuf>,
        /// Write the logits (raw little-endian f32 [K, H, W]).
        #[arg(long)]
        dump_output: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a model's metadata, inputs, outputs and size (default: the embedded model).
    #[command(alias = "info-model")]
    ModelInfo {
        /// The ONNX file.
        file: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// glibc's mmap threshold, fixed at startup: every allocation of 128 KiB or more (tract's
/// per-run values and convolution scratch, a few MiB per slice) gets its own mapping,
/// returned to the system when freed. By default glibc raises the threshold after the first
/// such free, so later per-slice buffers come from the heap and fragment it: peak RSS of a
/// 22-slice study then grows by several MiB over a 2-slice one, and lies above 60 MiB for the
/// shipped model (BENCHMARKS.md, issue 14). Fixing it here is what the systemd unit's
/// `MALLOC_MMAP_THRESHOLD_=131072` did, for every way the binary is started; a value in the
/// environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn fix_malloc_mmap_threshold() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_malloc_mmap_threshold() {}

fn main() -> ExitCode {
    fix_malloc_mmap_threshold();
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Watch { .. } | Command::Serve { .. } => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "error: {}",
                strokeseg_shared::error::chain_message(err.chain())
            );
            let code = err
                .downcast_ref::<EdgeError>()
                .map_or(1, EdgeError::exit_code);
            ExitCode::from(code)
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    // Status pin levels (the `log` pin backend) are shown by default: they are the output of
    // a simulated board.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},{PIN_LOG_TARGET}=info")));
    // Colours only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("serialising the output")?
    );
    Ok(())
}

/// Sets tract's threads: the flag, else the config's `threads`, else the box's cores.
fn apply_threads(
    flag: Option<usize>,
    cfg: &EdgeConfig,
    config: Option<&Path>,
) -> Result<(), EdgeError> {
    let source = match (flag, config) {
        (Some(_), _) | (None, None) => Path::new("command line"),
        (None, Some(path)) => path,
    };
    set_threads(resolve_threads(flag.or(cfg.segment.threads), source)?);
    Ok(())
}

fn load_model(paths: &[PathBuf], tta: Tta) -> Result<(Segmenter, f64), EdgeError> {
    let t = Instant::now();
    let model = Segmenter::load(paths, tta)?;
    Ok((model, t.elapsed().as_secs_f64() * 1000.0))
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Inspect {
            case,
            json: as_json,
        } => {
            let summary = inspect_study(&case, &PreprocessConfig::default())?;
            if as_json {
                json(&summary)?;
            } else {
                print_summary(&summary);
            }
        }
        Command::Segment {
            case,
            model,
            tta,
            method,
            maps,
            out,
            alert_threshold_ml,
            config,
            json: as_json,
            threads,
        } => {
            let cfg = match &config {
                Some(path) => EdgeConfig::load(path)?,
                None => EdgeConfig::default(),
            };
            apply_threads(threads, &cfg, config.as_deref())?;
            let alert_threshold_ml = alert_threshold_ml.unwrap_or(if config.is_some() {
                cfg.segment.alert_threshold_ml
            } else {
                DEFAULT_ALERT_THRESHOLD_ML
            });
            let mut status = open_pins(&cfg.pins)?;
            let cancel = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, cancel.clone())
                    .context("installing signal handlers")?;
            }
            // Loading the model is part of the run: a model that cannot be loaded raises the
            // fault pin like a bad study.
            let report = with_status(status.as_mut(), || {
                let mut options = SegmentOptions {
                    alert_threshold_ml,
                    maps,
                    ..SegmentOptions::default()
                };
                let mut model = match method {
                    Method::Model => {
                        let (m, ms) = load_model(&model, tta)?;
                        options.load_model_ms = ms;
                        Some(m)
                    }
                    Method::Threshold => None,
                };
                segment_to_dir(&case, method, model.as_mut(), &options, &out, &cancel)
            })?;
            if as_json {
                json(&report)?;
            } else {
                print_report(&report, &out);
            }
        }
        Command::Watch {
            config,
            root,
            method,
            model,
            tta,
            settle_seconds,
            poll_ms,
            alert_threshold_ml,
            once,
            threads,
        } => {
            let source = config
                .clone()
                .unwrap_or_else(|| PathBuf::from("command line"));
            let mut cfg = match &config {
                Some(path) => EdgeConfig::load(path)?,
                None => EdgeConfig::default(),
            };
            if root.is_some() {
                cfg.watch.root = root;
            }
            if let Some(m) = method {
                cfg.segment.method = m;
            }
            if !model.is_empty() {
                cfg.segment.model = model;
            }
            if let Some(t) = tta {
                cfg.segment.tta = t;
            }
            if let Some(s) = settle_seconds {
                cfg.watch.settle_seconds = s;
            }
            if let Some(p) = poll_ms {
                cfg.watch.poll_interval_ms = p;
            }
            if let Some(a) = alert_threshold_ml {
                cfg.segment.alert_threshold_ml = a;
            }
            apply_threads(threads, &cfg, config.as_deref())?;
            let dirs = cfg.watch.dirs(&source)?;
            let shutdown = Shutdown::install()?;
            let mut options = SegmentOptions {
                alert_threshold_ml: cfg.segment.alert_threshold_ml,
                maps: cfg.segment.maps,
                ..SegmentOptions::default()
            };
            let mut status = open_pins(&cfg.pins)?;
            let model = match cfg.segment.method {
                Method::Model => match load_model(&cfg.segment.model, cfg.segment.tta) {
                    Ok((m, ms)) => {
                        tracing::info!(
                            model = %m.metadata().name,
                            version = %m.metadata().version,
                            sha256 = %m.sha256(),
                            load_ms = ms,
                            "model loaded"
                        );
                        options.load_model_ms = 0.0;
                        Some(m)
                    }
                    Err(e) => {
                        // The daemon cannot work without its model: say so on the pins.
                        status.reset();
                        status.fail();
                        return Err(e.into());
                    }
                },
                Method::Threshold => None,
            };
            let settings = WatchSettings {
                dirs,
                ready_marker: cfg.watch.ready_marker.clone(),
                settle: Duration::from_secs(cfg.watch.settle_seconds),
                poll_interval: Duration::from_millis(cfg.watch.poll_interval_ms.max(10)),
                method: cfg.segment.method,
                options,
                once,
            };
            let mut watcher = Watcher::new(settings, model, status, shutdown)?;
            watcher.run()?;
        }
        Command::Serve { config } => {
            apply_threads(None, &EdgeConfig::load(&config)?, Some(&config))?;
            strokeseg_edge::serve::serve_with_config(&config)?
        }
        Command::Bench {
            model,
            threads,
            reps,
            warmup,
            input,
            dump_input,
            dump_output,
            json: as_json,
        } => {
            apply_threads(threads, &EdgeConfig::default(), None)?;
            let report = run_bench(&BenchOptions {
                model,
                reps,
                warmup,
                input,
                dump_input,
                dump_output,
            })?;
            if as_json {
                json(&report)?;
            } else {
                println!("{report}");
            }
        }
        Command::Demo {
            out,
            seed,
            case,
            model,
            dicom: true,
        } => {
            let outcome = strokeseg_edge::demo::run_dicom_demo(
                &out,
                seed,
                case,
                model.as_deref(),
                Duration::from_secs(300),
            )
            .with_context(|| format!("DICOM demo into {}", out.display()))?;
            println!("{outcome}");
        }
        Command::Demo {
            out,
            seed,
            case,
            model,
            dicom: false,
        } => {
            let outcome = run_demo(&out, seed, case, model.as_deref())
                .with_context(|| format!("demo into {}", out.display()))?;
            println!("phantom study  {}", outcome.study_dir.display());
            println!(
                "truth lesion   {:.1} mL (core {:.1} mL, hypoperfused {:.1} mL){}",
                outcome.phantom.lesion_volume_ml,
                outcome.phantom.core_volume_ml,
                outcome.phantom.hypoperfused_volume_ml,
                outcome
                    .phantom
                    .lesion_site
                    .as_deref()
                    .map(|s| format!(" in {s}"))
                    .unwrap_or_default()
            );
            print_summary(&outcome.summary);
            if let Some(note) = &outcome.note {
                println!("note           {note}");
            }
            print_report(&outcome.report, &out);
            print_evaluation(&outcome.evaluation);
            println!("(synthetic phantom: not clinical data)");
        }
        Command::Evaluate {
            pred,
            truth,
            json: as_json,
        } => {
            let e = evaluate(&pred, &truth)?;
            if as_json {
                json(&e)?;
            } else {
                print_evaluation(&e);
            }
        }
        Command::ModelInfo {
            file,
            json: as_json,
        } => {
            let info = match &file {
                Some(f) => model_info(f).map_err(EdgeError::from)?,
                None => embedded_model_info()
                    .unwrap_or(Err(ModelError::NoModel))
                    .map_err(EdgeError::from)?,
            };
            if as_json {
                json(&info)?;
            } else {
                print!("{info}");
            }
        }
    }
    Ok(())
}

fn print_summary(summary: &StudySummary) {
    println!("case        {}", summary.case_dir.display());
    println!("modalities  {}", summary.modalities_found.join(", "));
    println!(
        "grid        {:?} voxels of {:?} mm",
        summary.dims, summary.spacing_mm
    );
    println!("brain       {:.1} mL", summary.brain_volume_ml);
    for c in &summary.channels {
        println!(
            "{:<9} {:<8} p1 {:>9.3}  p50 {:>9.3}  p99 {:>9.3}  non-finite {}",
            c.modality.isles_tag(),
            c.dtype,
            c.p1_p50_p99[0],
            c.p1_p50_p99[1],
            c.p1_p50_p99[2],
            c.non_finite_voxels
        );
    }
}

fn print_report(r: &Report, out: &Path) {
    let how = match &r.model {
        Some(m) => format!("model {} {} ({})", m.name, m.version, m.precision),
        None => "threshold rule (CBF < 30% of healthy within Tmax > 6 s)".to_owned(),
    };
    println!("method         {how}");
    println!(
        "lesion         {:.2} mL ({} voxels over {} slices)",
        r.lesion_volume_ml, r.lesion_voxels, r.n_slices
    );
    if let Some(c) = &r.rule_comparison {
        println!(
            "rule beside    {:.2} mL by the threshold rule ({:+.2} mL, mask Dice {:.2}{})",
            c.rule_volume_ml,
            c.volume_difference_ml,
            c.mask_dice,
            if c.disagree { ", DISAGREE" } else { "" }
        );
    }
    println!(
        "alert          {} (threshold {:.0} mL)",
        if r.alert.triggered { "YES" } else { "no" },
        r.alert.threshold_ml
    );
    for w in &r.warnings {
        println!("warning        {w}");
    }
    println!(
        "time           {:.0} ms ({:.1} ms per slice in the model)",
        r.timings.total_ms, r.timings.inference_per_slice_ms
    );
    println!("outputs        {}", out.display());
}

fn print_evaluation(e: &CaseEvaluation) {
    let m = &e.metrics;
    println!(
        "dice           {:.3} (precision {:.3}, recall {:.3})",
        m.dice, m.precision, m.recall
    );
    println!(
        "volumes        predicted {:.2} mL, truth {:.2} mL, |difference| {:.2} mL",
        m.predicted_volume_ml, m.true_volume_ml, m.abs_volume_difference_ml
    );
    // `None`: exactly one of the masks is empty, so the distance is infinite.
    let mm = |d: Option<f64>| d.map_or_else(|| "∞".to_owned(), |d| format!("{d:.2} mm"));
    let s = &e.surface;
    println!(
        "surface        hausdorff {}, hd95 {}, assd {}",
        mm(s.hausdorff_mm),
        mm(s.hausdorff95_mm),
        mm(s.assd_mm)
    );
}

//! The training loop: batches with lesion oversampling, augmentation on the device, the
//! configured loss, AdamW/SGD with warm-up and decay, gradient clipping, per-epoch case-level
//! validation, checkpoints (best and last), logs and curves, exact resume, and a stop flag
//! (Ctrl-C) that saves a checkpoint before returning; starting a new run in a folder or
//! resuming the one it holds ([`train_or_resume`]). The logs ([`log`]) and the curves
//! ([`plot`]) of a run are drawn from its epoch records.
//!
//! # Reproducibility
//!
//! Weights are initialised from the seed ([`crate::model::new_model`]); batch order and
//! augmentation are pure functions of `(seed, epoch, batch)` ([`crate::rng`]); the optimiser
//! state, the step counter, the partial-epoch sums and the history are in the checkpoint. So on
//! the CPU, a run stopped after any step and resumed takes bit-identical steps to the run that
//! was never stopped (checked by the `resume` integration test). CUDA kernels may be
//! non-deterministic (atomics in convolution backward), so there the guarantee is statistical.
//!
//! # bf16 (`Precision::Bf16`)
//!
//! tch 0.24 cannot choose the dtype of libtorch's autocast (its CUDA autocast is fp16, which
//! would need loss scaling), so bf16 is done explicitly: f32 master weights (optimiser, BatchNorm
//! statistics, checkpoints) and a bf16 shadow copy of the network that runs forward and
//! backward; its gradients are cast to f32 for clipping and the update, and its BatchNorm
//! running statistics are copied back. The loss is always computed in f32, and validation runs
//! the f32 master weights. The CLI offers it on CUDA only.

pub mod log;
pub mod plot;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use strokeseg_shared::model_meta::TrainingSummary;
use strokeseg_shared::postprocess::PostprocessConfig;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

use strokeseg_io::atomic::{publish_atomically, tmp_path, write_json_atomically};

use crate::augment::augment_batch;
use crate::data::{LesionSampler, LesionSlice, LoadedDataset, assign_folds};
use crate::error::{TrainError, read_json};
use crate::eval::evaluate_cases;
use crate::loss::{Loss, class_weights_from_counts};
use crate::model::{ResUNet, UNetConfig, load_checkpoint, new_model};
use crate::rng::{Rng, stream};
use crate::run::{
    Precision, RUN_SCHEMA_VERSION, RunConfig, RunEvaluation, RunPaths, SplitInfo, TrainConfig,
    Validation, git_revision,
};
use crate::schedule::{LrSchedule, Optimizer, clip_grad_norm};
use log::{EpochRecord, StepLog, ValRecord, write_metrics};
use plot::write_curves;

/// What a new run is made of (the `train` command's settings).
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// The dataset folder.
    pub data_dir: std::path::PathBuf,
    /// How patients were grouped (recorded).
    pub grouping: String,
    /// Description of the data for the model card (e.g. `phantom seed 7, 40 cases`).
    pub data_label: String,
    /// Network shape (`in_channels` must match the preprocessing).
    pub unet: UNetConfig,
    /// Postprocessing for validation.
    pub postprocess: PostprocessConfig,
    /// Hyper-parameters.
    pub train: TrainConfig,
    /// Seed.
    pub seed: u64,
    /// Number of folds (ignored without `fold`).
    pub n_folds: u32,
    /// Held-out fold; `None` trains on every case without validation.
    pub fold: Option<u32>,
}

/// Checks that the network fits the data's preprocessing.
fn check_shapes(unet: &UNetConfig, data: &LoadedDataset) -> Result<(), TrainError> {
    let p = &data.config;
    let multiple = unet.size_multiple();
    if i64::from(p.input_height) % multiple != 0 || i64::from(p.input_width) % multiple != 0 {
        return Err(TrainError::InputSize {
            height: p.input_height,
            width: p.input_width,
            multiple,
        });
    }
    if unet.in_channels != p.n_channels() as i64 {
        return Err(TrainError::config(format!(
            "network has {} input channels, the preprocessing makes {}",
            unet.in_channels,
            p.n_channels()
        )));
    }
    if unet.n_classes != 2 || unet.base_width < 1 {
        return Err(TrainError::config(format!(
            "need 2 classes and base width ≥ 1, got {} and {}",
            unet.n_classes, unet.base_width
        )));
    }
    Ok(())
}

/// The `run.json` of a new run: the split (patient-grouped folds from the seed), the CE class
/// weights from the training slices, and everything in `spec`.
pub fn new_run_config(
    spec: &RunSpec,
    data: &LoadedDataset,
    device: Device,
) -> Result<RunConfig, TrainError> {
    spec.train.validate()?;
    spec.postprocess
        .validate()
        .map_err(|e| TrainError::config(format!("postprocess: {e}")))?;
    check_shapes(&spec.unet, data)?;
    let names = |idx: &[usize]| -> Vec<String> {
        idx.iter()
            .filter_map(|&i| data.cases.get(i).map(|c| c.name.clone()))
            .collect()
    };
    let (train_idx, val_idx, n_folds) = match spec.fold {
        Some(fold) => {
            let patients: Vec<&str> = data.cases.iter().map(|c| c.patient.as_str()).collect();
            let plan = assign_folds(&patients, spec.n_folds as usize, spec.seed)?;
            (
                plan.train_cases(fold as usize)?,
                plan.val_cases(fold as usize)?,
                spec.n_folds,
            )
        }
        None => ((0..data.cases.len()).collect(), Vec::new(), 0),
    };
    let counts = data.class_counts(&data.slices_of(&train_idx));
    let class_weights = class_weights_from_counts(&counts, spec.train.loss.ce_weight_power);
    let git = git_revision();
    Ok(RunConfig {
        schema_version: RUN_SCHEMA_VERSION,
        unet: spec.unet,
        preprocess: data.config.clone(),
        postprocess: spec.postprocess,
        training: TrainingSummary {
            data: spec.data_label.clone(),
            loss: spec.train.loss.kind.name().to_owned(),
            epochs: 0,
            folds: n_folds,
            fold: spec.fold,
            val_dice: None,
            seed: spec.seed,
            git_revision: git.clone(),
        },
        data_dir: spec.data_dir.clone(),
        seed: spec.seed,
        git_revision: git,
        train: spec.train.clone(),
        split: SplitInfo {
            grouping: spec.grouping.clone(),
            n_folds,
            fold: spec.fold,
            train_cases: names(&train_idx),
            val_cases: names(&val_idx),
        },
        class_weights,
        device: format!("{device:?}"),
        trainer_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// Where [`train_or_resume`] starts (each variant boxed: both are large).
#[derive(Debug, Clone, PartialEq)]
pub enum RunStart {
    /// A new run of the spec: the folder (created if missing) gets a fresh `run.json`
    /// ([`new_run_config`]) and training begins at the first step. The caller makes sure
    /// the folder holds no run yet ([`RunPaths::holds_run`]).
    New(Box<RunSpec>),
    /// The run the folder holds (its `run.json`, as read by the caller), continued from its
    /// last checkpoint; a complete run returns its stored evaluation.
    Resume(Box<RunConfig>),
}

/// Trains the run in `run_dir` on `data` from `start`: the one place where a new run is set
/// up and an interrupted one picked up again, for `strokeseg-train train` and for each fold
/// of a cross-validation. Then as [`train`].
pub fn train_or_resume(
    run_dir: &Path,
    start: RunStart,
    data: &LoadedDataset,
    device: Device,
    control: &TrainControl,
) -> Result<TrainOutcome, TrainError> {
    let (mut run, resume) = match start {
        RunStart::New(spec) => {
            std::fs::create_dir_all(run_dir).map_err(|e| TrainError::file(run_dir, e))?;
            let run = new_run_config(&spec, data, device)?;
            tracing::info!(
                "training on {} cases, holding out {} ({} folds, fold {:?}), device {device:?}",
                run.split.train_cases.len(),
                run.split.val_cases.len(),
                run.split.n_folds,
                run.split.fold
            );
            (run, false)
        }
        RunStart::Resume(run) => (*run, true),
    };
    train(run_dir, &mut run, data, device, control, resume)
}

/// Sums over the steps of the epoch in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAccumulator {
    /// Σ loss.
    pub loss_sum: f64,
    /// Σ gradient norm.
    pub grad_norm_sum: f64,
    /// Steps.
    pub n_steps: u64,
    /// Slices.
    pub n_slices: u64,
    /// Seconds in training steps.
    pub train_time_s: f64,
    /// Learning rate of the last step.
    pub last_lr: f64,
}

/// The best held-out result so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    /// 1-based epoch.
    pub epoch: u32,
    /// Its mean per-case Dice.
    pub mean_dice: f64,
}

/// `checkpoints/last.state.json`: where the run stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// 0-based epoch to run next (or in progress).
    pub next_epoch: u32,
    /// 0-based batch of `next_epoch` to run next.
    pub next_batch: usize,
    /// Optimiser steps taken.
    pub global_step: u64,
    /// Sums of the epoch in progress.
    pub epoch_acc: EpochAccumulator,
    /// The best checkpoint so far.
    pub best: Option<BestRecord>,
    /// Every completed epoch.
    pub history: Vec<EpochRecord>,
    /// Whether the run completed (final evaluation written).
    pub finished: bool,
}

/// How the caller steers a run.
#[derive(Debug, Clone, Default)]
pub struct TrainControl {
    /// Set (e.g. by a Ctrl-C handler) to stop after the current step, saving a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Stop after this many global steps (testing and debugging).
    pub stop_after_steps: Option<u64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// How a call to [`train`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    /// All epochs ran; the final evaluation (boxed: it holds every held-out case's results).
    Finished(Box<RunEvaluation>),
    /// Stopped early; `checkpoints/last.*` hold the state to `--resume` from.
    Interrupted {
        /// Steps taken.
        global_step: u64,
        /// 0-based epoch in progress.
        epoch: u32,
    },
}

/// The bf16 shadow network (see the module docs).
struct Shadow {
    vs: VarStore,
    net: ResUNet,
}

/// The network, its optimiser and (for bf16) its shadow.
struct Model {
    vs: VarStore,
    net: ResUNet,
    params: BTreeMap<String, Tensor>,
    buffers: BTreeMap<String, Tensor>,
    optimizer: Optimizer,
    shadow: Option<Shadow>,
}

impl Model {
    fn new(run: &RunConfig, device: Device) -> Result<Model, TrainError> {
        let (vs, net) = new_model(run.unet, device, run.seed);
        let (params, buffers): (BTreeMap<_, _>, BTreeMap<_, _>) = vs
            .variables()
            .into_iter()
            .partition(|(_, t)| t.requires_grad());
        let shallow = params
            .iter()
            .map(|(name, t)| (name.clone(), t.shallow_clone()))
            .collect();
        let optimizer = Optimizer::new(run.train.optimizer, shallow)?;
        let shadow = match run.train.precision {
            Precision::Fp32 => None,
            Precision::Bf16 => {
                let (mut svs, snet) = new_model(run.unet, device, run.seed);
                svs.bfloat16();
                Some(Shadow { vs: svs, net: snet })
            }
        };
        Ok(Model {
            vs,
            net,
            params,
            buffers,
            optimizer,
            shadow,
        })
    }

    /// Forward + backward of one batch; returns the loss value and the f32 gradients by name.
    fn forward_backward(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        loss_fn: &Loss,
    ) -> Result<(f64, BTreeMap<String, Tensor>), TrainError> {
        match &mut self.shadow {
            None => {
                for p in self.params.values() {
                    p.shallow_clone().zero_grad();
                }
                let logits = self.net.forward_t(x, true);
                let loss = loss_fn.compute(&logits, y);
                let value = f64::try_from(&loss)?;
                if value.is_finite() {
                    loss.f_backward()?;
                }
                let grads = self
                    .params
                    .iter()
                    .map(|(name, p)| (name.clone(), p.grad()))
                    .filter(|(_, g)| g.defined())
                    .collect();
                Ok((value, grads))
            }
            Some(shadow) => {
                shadow.vs.copy(&self.vs)?;
                let shadow_vars = shadow.vs.variables();
                for (name, _) in self.params.iter() {
                    if let Some(t) = shadow_vars.get(name) {
                        t.shallow_clone().zero_grad();
                    }
                }
                let logits = shadow.net.forward_t(&x.f_to_kind(Kind::BFloat16)?, true);
                let loss = loss_fn.compute(&logits, y);
                let value = f64::try_from(&loss)?;
                if value.is_finite() {
                    loss.f_backward()?;
                }
                let mut grads = BTreeMap::new();
                for name in self.params.keys() {
                    if let Some(t) = shadow_vars.get(name) {
                        let g = t.grad();
                        if g.defined() {
                            grads.insert(name.clone(), g.f_to_kind(Kind::Float)?);
                        }
                    }
                }
                let _guard = tch::no_grad_guard();
                for (name, master) in self.buffers.iter() {
                    if let Some(t) = shadow_vars.get(name) {
                        master.shallow_clone().f_copy_(t)?;
                    }
                }
                Ok((value, grads))
            }
        }
    }

    fn save_weights(&self, path: &Path) -> Result<(), TrainError> {
        // VarStore::save picks the format from the extension: keep `.safetensors` last.
        let tmp = path.with_extension("tmp.safetensors");
        self.vs.save(&tmp)?;
        Ok(publish_atomically(&tmp, path)?)
    }
}

fn save_last(model: &Model, paths: &RunPaths, state: &TrainState) -> Result<(), TrainError> {
    model.save_weights(&paths.last_checkpoint())?;
    let opt_path = paths.last_optimizer();
    let tmp = opt_path.with_extension("tmp.safetensors");
    model.optimizer.save(&tmp)?;
    publish_atomically(&tmp, &opt_path)?;
    // The state goes last: it names a step whose weights and moments are already on disk.
    Ok(write_json_atomically(&paths.last_state(), state)?)
}

fn copy_file(from: &Path, to: &Path) -> Result<(), TrainError> {
    let tmp = tmp_path(to);
    if let Err(e) = std::fs::copy(from, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(TrainError::file(from, e));
    }
    Ok(publish_atomically(&tmp, to)?)
}

fn val_record(validation: &Validation, eval_time_s: f64) -> ValRecord {
    ValRecord {
        loss: validation.loss,
        dice: validation.mean_dice(),
        dice_lesion_cases: validation.mean_dice_lesion_cases,
        precision: validation.mean_precision(),
        recall: validation.mean_recall(),
        abs_volume_difference_ml: validation.mean_abs_volume_difference_ml(),
        eval_time_s,
    }
}

fn case_indices(
    data: &LoadedDataset,
    names: &[String],
    run_dir: &Path,
) -> Result<Vec<usize>, TrainError> {
    names
        .iter()
        .map(|name| {
            data.case_index(name).ok_or_else(|| TrainError::RunFolder {
                path: run_dir.to_path_buf(),
                reason: format!(
                    "run.json names case {name}, which the dataset {} does not hold",
                    data.root.display()
                ),
            })
        })
        .collect()
}

fn progress_bar(control: &TrainControl, epoch: u32, epochs: u32, n_batches: usize) -> ProgressBar {
    if !control.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n_batches as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>11} [{bar:30.cyan/blue}] {pos:>4}/{len:4} {elapsed_precise} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
    bar
}

/// Trains the run in `run_dir` described by `run` on `data` (which must hold the cases the
/// run's split names). With `resume`, continues from `checkpoints/last.*` (from the first step
/// when there is no checkpoint yet; at once with the stored evaluation when the run is
/// complete); otherwise starts from scratch. Writes the whole run folder contract.
pub fn train(
    run_dir: &Path,
    run: &mut RunConfig,
    data: &LoadedDataset,
    device: Device,
    control: &TrainControl,
    resume: bool,
) -> Result<TrainOutcome, TrainError> {
    let paths = RunPaths::new(run_dir);
    let cfg = run.train.clone();
    cfg.validate()?;
    check_shapes(&run.unet, data)?;
    let train_cases = case_indices(data, &run.split.train_cases, run_dir)?;
    let val_cases = case_indices(data, &run.split.val_cases, run_dir)?;
    let train_slices = data.slices_of(&train_cases);
    if train_slices.is_empty() {
        return Err(TrainError::EmptyDataset {
            path: data.root.clone(),
            reason: "no training slices".into(),
        });
    }
    let lesion_slices: Vec<LesionSlice> = train_slices
        .iter()
        .filter_map(|&slice| {
            let lesion_pixels = data.lesion_pixels.get(slice).copied().unwrap_or(0);
            (lesion_pixels > 0).then_some(LesionSlice {
                slice,
                lesion_pixels,
            })
        })
        .collect();
    let sampler = LesionSampler::new(
        train_slices.clone(),
        &lesion_slices,
        cfg.lesion_size_strata,
        cfg.batch_size,
        cfg.lesion_fraction,
        run.seed,
    );
    tracing::debug!(
        "lesion slices per size stratum, smallest lesions first: {:?}",
        sampler.strata().iter().map(Vec::len).collect::<Vec<_>>()
    );
    let steps_per_epoch = sampler.batches_per_epoch() as u64;
    let schedule = LrSchedule::new(
        &cfg.schedule,
        cfg.optimizer.lr,
        steps_per_epoch,
        steps_per_epoch * u64::from(cfg.epochs),
    );
    let loss_fn = Loss::new(cfg.loss, &run.class_weights, device)?;
    let postprocess = run.postprocess;
    let validate_net = |net: &ResUNet| {
        evaluate_cases(
            net,
            data,
            &val_cases,
            &postprocess,
            Some(&loss_fn),
            cfg.eval_batch_size,
        )
    };

    std::fs::create_dir_all(paths.checkpoint_dir())
        .map_err(|e| TrainError::file(&paths.checkpoint_dir(), e))?;
    let mut model = Model::new(run, device)?;
    let has_checkpoint = paths.last_state().is_file();
    if resume && !has_checkpoint {
        tracing::warn!(
            "{} has no checkpoint yet: starting from the first step",
            run_dir.display()
        );
    }
    let mut state = if resume && has_checkpoint {
        let state: TrainState = read_json(&paths.last_state())?;
        model.vs.load(paths.last_checkpoint())?;
        model
            .optimizer
            .load(&paths.last_optimizer(), state.global_step)?;
        tracing::info!(
            "resuming {} at epoch {}, batch {} (step {})",
            run_dir.display(),
            state.next_epoch + 1,
            state.next_batch,
            state.global_step
        );
        state
    } else {
        run.save(run_dir)?;
        TrainState::default()
    };
    if state.finished {
        tracing::info!("{} is already complete", run_dir.display());
        return Ok(TrainOutcome::Finished(Box::new(RunEvaluation::load(
            run_dir,
        )?)));
    }
    let mut steps = StepLog::open(&paths.steps_csv(), state.global_step)?;

    while state.next_epoch < cfg.epochs {
        let epoch = state.next_epoch;
        let batches = sampler.epoch_batches(epoch);
        let bar = progress_bar(control, epoch, cfg.epochs, batches.len());
        bar.set_position(state.next_batch as u64);
        for (batch_idx, batch) in batches.iter().enumerate().skip(state.next_batch) {
            let started = Instant::now();
            let lr = schedule.lr_at(state.global_step);
            let idx: Vec<i64> = batch.iter().map(|&s| s as i64).collect();
            let idx = Tensor::f_from_slice(&idx)?.f_to_device(device)?;
            let x = data.inputs.f_index_select(0, &idx)?;
            let y = data
                .labels
                .f_index_select(0, &idx)?
                .f_to_kind(Kind::Int64)?;
            let mut rng = Rng::stream(
                run.seed,
                &[stream::AUGMENT, u64::from(epoch), batch_idx as u64],
            );
            let (x, y) = augment_batch(&x, &y, &cfg.augment, &mut rng)?;
            let (loss, grads) = model.forward_backward(&x, &y, &loss_fn)?;
            if !loss.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    loss,
                    epoch,
                    step: state.global_step,
                });
            }
            let grad_norm = clip_grad_norm(&grads, cfg.grad_clip_norm)?;
            model.optimizer.step(lr, &grads)?;
            let elapsed_s = started.elapsed().as_secs_f64();
            steps.append(state.global_step, epoch, batch_idx, loss, lr, grad_norm)?;
            state.global_step += 1;
            state.next_batch = batch_idx + 1;
            let acc = &mut state.epoch_acc;
            acc.loss_sum += loss;
            acc.grad_norm_sum += grad_norm;
            acc.n_steps += 1;
            acc.n_slices += batch.len() as u64;
            acc.train_time_s += elapsed_s;
            acc.last_lr = lr;
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.1} slices/s",
                acc.loss_sum / acc.n_steps as f64,
                lr,
                acc.n_slices as f64 / acc.train_time_s.max(1e-9)
            ));
            let stop_requested = control.stop.load(Ordering::SeqCst)
                || control.stop_after_steps == Some(state.global_step);
            if stop_requested {
                bar.abandon();
                save_last(&model, &paths, &state)?;
                tracing::warn!(
                    "stopped at epoch {}, step {}: checkpoint saved to {}; continue with --resume",
                    epoch + 1,
                    state.global_step,
                    paths.checkpoint_dir().display()
                );
                return Ok(TrainOutcome::Interrupted {
                    global_step: state.global_step,
                    epoch,
                });
            }
        }
        bar.finish_and_clear();

        let last_epoch = epoch + 1 == cfg.epochs;
        let validate =
            !val_cases.is_empty() && ((epoch + 1) % cfg.val_every_epochs == 0 || last_epoch);
        let val = if validate {
            let started = Instant::now();
            let validation = validate_net(&model.net)?;
            Some(val_record(&validation, started.elapsed().as_secs_f64()))
        } else {
            None
        };
        let acc = state.epoch_acc;
        let record = EpochRecord {
            epoch: epoch + 1,
            global_step: state.global_step,
            train_loss: acc.loss_sum / acc.n_steps.max(1) as f64,
            lr: acc.last_lr,
            grad_norm: acc.grad_norm_sum / acc.n_steps.max(1) as f64,
            train_slices: acc.n_slices,
            train_time_s: acc.train_time_s,
            slices_per_s: acc.n_slices as f64 / acc.train_time_s.max(1e-9),
            val,
        };
        state.history.push(record);
        if let Some(v) = val
            && state.best.is_none_or(|b| v.dice > b.mean_dice)
        {
            state.best = Some(BestRecord {
                epoch: epoch + 1,
                mean_dice: v.dice,
            });
            model.save_weights(&paths.best_checkpoint())?;
        }
        state.next_epoch = epoch + 1;
        state.next_batch = 0;
        state.epoch_acc = EpochAccumulator::default();
        save_last(&model, &paths, &state)?;
        write_metrics(&paths.metrics_csv(), &paths.metrics_json(), &state.history)?;
        write_curves(&paths.curves_png(), &state.history)?;
        run.training.epochs = epoch + 1;
        run.training.val_dice = state.best.map(|b| b.mean_dice);
        run.save(run_dir)?;
        match (val, state.best) {
            (Some(v), Some(b)) => tracing::info!(
                "epoch {}/{}: train loss {:.4}, held-out loss {:.4}, Dice {:.4} (best {:.4} at epoch {}), {:.1} slices/s",
                epoch + 1,
                cfg.epochs,
                record.train_loss,
                v.loss,
                v.dice,
                b.mean_dice,
                b.epoch,
                record.slices_per_s
            ),
            _ => tracing::info!(
                "epoch {}/{}: train loss {:.4}, {:.1} slices/s",
                epoch + 1,
                cfg.epochs,
                record.train_loss,
                record.slices_per_s
            ),
        }
    }

    // Final evaluation of the last and the best checkpoint.
    let evaluation = if val_cases.is_empty() {
        copy_file(&paths.last_checkpoint(), &paths.best_checkpoint())?;
        RunEvaluation {
            epochs: cfg.epochs,
            best_epoch: None,
            last: None,
            best: None,
        }
    } else {
        let last = validate_net(&model.net)?;
        let (_best_vs, best_net) = load_checkpoint(&paths.best_checkpoint(), run.unet, device)?;
        let best = validate_net(&best_net)?;
        RunEvaluation {
            epochs: cfg.epochs,
            best_epoch: state.best.map(|b| b.epoch),
            last: Some(last),
            best: Some(best),
        }
    };
    write_json_atomically(&paths.evaluation(), &evaluation)?;
    state.finished = true;
    write_json_atomically(&paths.last_state(), &state)?;
    run.training.epochs = cfg.epochs;
    run.save(run_dir)?;
    Ok(TrainOutcome::Finished(Box::new(evaluation)))
}

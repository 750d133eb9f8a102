//! The training loop end to end on tiny phantom data (CPU): a small network overfits a handful
//! of slices (the loss falls by a large factor and the case Dice rises), a run stopped mid-epoch
//! and resumed takes bit-identical steps to one that never stopped, and bf16 steps train.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::augment::AugmentConfig;
use strokeseg_trainer::checkpoint::{Which, load_model};
use strokeseg_trainer::eval::evaluate_cases;
use strokeseg_trainer::loss::LossKind;
use strokeseg_trainer::model::new_model;
use strokeseg_trainer::run::{Precision, RunConfig, RunEvaluation, RunPaths, Validation};
use strokeseg_trainer::train::{self, TrainControl, TrainOutcome, TrainState, new_run_config};
use tch::Device;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Loss per step from `steps.csv`.
fn step_losses(run_dir: &Path) -> Vec<f64> {
    read(&RunPaths::new(run_dir).steps_csv())
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_tiny_network_overfits_a_handful_of_slices() {
    let dir = common::dataset(3, 31);
    let data = common::load(dir);
    assert!(
        data.n_slices() <= 12,
        "{} slices is not a handful",
        data.n_slices()
    );
    let mut config = common::small_train(40);
    config.augment = AugmentConfig::off();
    config.loss.kind = LossKind::Hybrid;
    config.schedule.warmup_epochs = 2.0;
    config.optimizer.lr = 5e-3;
    config.optimizer.weight_decay = 0.0;
    config.val_every_epochs = 1000;
    let spec = common::spec(dir, None, config);
    let run_dir = tempfile::tempdir().unwrap();
    let mut run = new_run_config(&spec, &data, Device::Cpu).unwrap();
    let all: Vec<usize> = (0..data.cases.len()).collect();
    let post = PostprocessConfig::default();

    let (_, untrained) = new_model(run.unet, Device::Cpu, run.seed);
    let before = evaluate_cases(&untrained, &data, &all, &post, None, 8).unwrap();

    let outcome = train::train(
        run_dir.path(),
        &mut run,
        &data,
        Device::Cpu,
        &TrainControl::default(),
        false,
    )
    .unwrap();
    assert!(matches!(outcome, TrainOutcome::Finished(_)));
    let losses = step_losses(run_dir.path());
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(
        last < first / 5.0,
        "loss fell only from {first} to {last}: {losses:?}"
    );

    let (_, _, trained) = load_model(run_dir.path(), Which::Last, Device::Cpu).unwrap();
    let after = evaluate_cases(&trained, &data, &all, &post, None, 8).unwrap();
    let lesion_dice = |s: &Validation| s.mean_dice_lesion_cases.unwrap_or(0.0);
    assert!(
        lesion_dice(&after) > 0.6 && lesion_dice(&after) > lesion_dice(&before) + 0.3,
        "case Dice went from {} to {}",
        lesion_dice(&before),
        lesion_dice(&after)
    );
}

/// Trains fold 0 of 2 for 2 epochs into `dir`, optionally stopping after `stop_after` steps.
fn run_fold(
    dir: &Path,
    data: &strokeseg_trainer::data::LoadedDataset,
    stop_after: Option<u64>,
) -> TrainOutcome {
    let spec = common::spec(common::dataset(6, 41), Some(0), common::small_train(2));
    let mut run = new_run_config(&spec, data, Device::Cpu).unwrap();
    let control = TrainControl {
        stop_after_steps: stop_after,
        ..TrainControl::default()
    };
    train::train(dir, &mut run, data, Device::Cpu, &control, false).unwrap()
}

#[test]
fn resume_after_a_stop_takes_bit_identical_steps() {
    let data = common::load(common::dataset(6, 41));
    let straight = tempfile::tempdir().unwrap();
    let stopped = tempfile::tempdir().unwrap();
    assert!(matches!(
        run_fold(straight.path(), &data, None),
        TrainOutcome::Finished(_)
    ));
    let steps_per_epoch = {
        let state: TrainState =
            serde_json::from_str(&read(&RunPaths::new(straight.path()).last_state())).unwrap();
        state.history[0].global_step
    };
    assert!(
        steps_per_epoch >= 3,
        "need a mid-epoch stop, epoch has {steps_per_epoch} steps"
    );
    // Stop mid-epoch 1, after step 2.
    let outcome = run_fold(stopped.path(), &data, Some(2));
    assert_eq!(
        outcome,
        TrainOutcome::Interrupted {
            global_step: 2,
            epoch: 0
        }
    );
    let paths = RunPaths::new(stopped.path());
    for file in [
        paths.last_checkpoint(),
        paths.last_optimizer(),
        paths.last_state(),
    ] {
        assert!(file.is_file(), "{} missing after the stop", file.display());
    }
    let mut run = RunConfig::load(stopped.path()).unwrap();
    let resumed = train::train(
        stopped.path(),
        &mut run,
        &data,
        Device::Cpu,
        &TrainControl::default(),
        true,
    )
    .unwrap();
    let TrainOutcome::Finished(evaluation) = resumed else {
        panic!("resume did not finish: {resumed:?}");
    };
    // Every step, including the first after the resume, bit for bit.
    let a = read(&RunPaths::new(straight.path()).steps_csv());
    let b = read(&paths.steps_csv());
    assert_eq!(a.lines().count(), b.lines().count());
    for (la, lb) in a.lines().zip(b.lines()) {
        assert_eq!(la, lb, "steps differ after resume");
    }
    assert_eq!(
        std::fs::read(RunPaths::new(straight.path()).last_checkpoint()).unwrap(),
        std::fs::read(paths.last_checkpoint()).unwrap(),
        "final weights differ"
    );
    // (Compared as read back from disk: JSON does not promise the last bit of an f64.)
    let straight_eval = RunEvaluation::load(straight.path()).unwrap();
    let stopped_eval = RunEvaluation::load(stopped.path()).unwrap();
    assert_eq!(straight_eval, stopped_eval);
    assert_eq!(evaluation.best_epoch, stopped_eval.best_epoch);
    // Resuming a finished run changes nothing.
    let again = train::train(
        stopped.path(),
        &mut run,
        &data,
        Device::Cpu,
        &TrainControl::default(),
        true,
    )
    .unwrap();
    assert_eq!(again, TrainOutcome::Finished(Box::new(stopped_eval)));
}

#[test]
fn bf16_steps_train_with_f32_master_weights() {
    let dir = common::dataset(3, 31);
    let data = common::load(dir);
    let mut config = common::small_train(6);
    config.augment = AugmentConfig::off();
    config.precision = Precision::Bf16;
    config.optimizer.lr = 5e-3;
    let spec = common::spec(dir, None, config);
    let run_dir = tempfile::tempdir().unwrap();
    let mut run = new_run_config(&spec, &data, Device::Cpu).unwrap();
    train::train(
        run_dir.path(),
        &mut run,
        &data,
        Device::Cpu,
        &TrainControl::default(),
        false,
    )
    .unwrap();
    let losses = step_losses(run_dir.path());
    assert!(losses.iter().all(|l| l.is_finite()));
    let n = losses.len();
    let first = losses[..2].iter().sum::<f64>();
    let last = losses[n - 2..].iter().sum::<f64>();
    assert!(last < first, "bf16 loss did not fall: {losses:?}");
    // The checkpoint holds f32 weights that load into an f32 network.
    let (_, vs, _) = load_model(run_dir.path(), Which::Last, Device::Cpu).unwrap();
    assert!(
        vs.variables()
            .values()
            .all(|t| t.kind() == tch::Kind::Float)
    );
}

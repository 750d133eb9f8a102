//! Job arrays on a cluster's own scheduler: the sbatch script of a SLURM job array
//! ([`slurm_script`]) and the manifest of a Kubernetes Indexed Job ([`k8s_manifest`]) that run
//! the tasks of a cross-validation or sweep ([`crate::sweep::TaskPlan`]), one task per array
//! index. Nothing here schedules: each task runs
//! `strokeseg-train cv --resume --out RUN --task INDEX`, which maps its index to (setting,
//! fold) with the one [`crate::sweep::TaskPlan::task`] and trains (or resumes, or finds
//! finished) exactly that fold; `strokeseg-train cv --merge RUN` merges afterwards.
//!
//! Every value that goes into a script is checked here first, so an impossible or unsafe
//! combination is refused at emission ([`EmitError`]) rather than by the cluster later.

use std::path::{Path, PathBuf};

use crate::sweep::TaskPlan;

/// `RUN/slurm/`: the per-task logs and the merge job's marker and log.
pub const SLURM_LOG_DIR: &str = "slurm";
/// Exit status of a task stopped by a signal with a checkpoint saved (128 + SIGINT, as Ctrl-C):
/// the sbatch script requeues the task then.
pub const EXIT_STOPPED: u8 = 130;
/// The most completions Kubernetes accepts for an Indexed Job.
pub const K8S_MAX_COMPLETIONS: usize = 100_000;

/// Why a job script or manifest is not emitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// A value cannot go into the script as given.
    #[error("--{flag} {value:?}: {reason}")]
    InvalidValue {
        /// The flag, without `--`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A path the cluster sees must be absolute.
    #[error("--{flag} {}: must be an absolute path (as the cluster's tasks see it)", path.display())]
    NotAbsolute {
        /// The flag, without `--`.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// A Kubernetes path outside the mounted volume.
    #[error(
        "--{flag} {}: is not on the volume mounted at --mount {}, so the pods cannot see it",
        path.display(),
        mount.display()
    )]
    OutsideMount {
        /// The flag, without `--`.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
        /// The mount point.
        mount: PathBuf,
    },
    /// More tasks than the engine accepts.
    #[error("{n_tasks} tasks: more than the {max} an {engine} accepts")]
    TooManyTasks {
        /// Tasks of the plan.
        n_tasks: usize,
        /// The limit.
        max: usize,
        /// Which engine.
        engine: &'static str,
    },
}

/// What every task of the array runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobArray {
    /// Job name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The cross-validation or sweep folder, absolute, on storage every task sees.
    pub run_dir: PathBuf,
    /// Settings × folds.
    pub plan: TaskPlan,
    /// Each setting's swept values (empty for a plain cross-validation), for the task table.
    pub labels: Vec<String>,
    /// The `strokeseg-train` the tasks run (a path or a command on the tasks' PATH).
    pub trainer: String,
    /// Flags after `cv --resume --out RUN --task I` (device, threads, …).
    pub task_args: Vec<String>,
}

/// SLURM settings of the array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmOptions {
    /// `--gres` per task (`gpu:1`); `None` asks for none (CPU clusters).
    pub gres: Option<String>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` per task (SLURM's formats, e.g. `24:00:00`).
    pub time: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--mem` per task (e.g. `16G`).
    pub mem: Option<String>,
    /// At most this many tasks at once (`--array=0-N%M`).
    pub max_parallel: Option<u32>,
    /// Seconds before the time limit at which SLURM sends SIGUSR1 (`--signal=USR1@S`).
    pub signal_lead_s: u32,
}

impl Default for SlurmOptions {
    fn default() -> SlurmOptions {
        SlurmOptions {
            gres: Some("gpu:1".to_owned()),
            partition: None,
            time: None,
            cpus_per_task: None,
            mem: None,
            max_parallel: None,
            signal_lead_s: 120,
        }
    }
}

/// Kubernetes settings of the Indexed Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sOptions {
    /// Container image holding `strokeseg-train`.
    pub image: String,
    /// PersistentVolumeClaim holding the data and the run folder.
    pub pvc: String,
    /// Where the claim is mounted in the pods; the run and data folders lie under it.
    pub mount: PathBuf,
    /// The data folder the tasks read (checked to lie under the mount).
    pub data_dir: PathBuf,
    /// `nvidia.com/gpu` per pod (0: none).
    pub gpus: u32,
    /// CPU request per pod.
    pub cpus: Option<u32>,
    /// Pods at once (`parallelism`; default: every task).
    pub max_parallel: Option<u32>,
    /// Failed pods tolerated (`backoffLimit`); a pod stopped by a signal with a checkpoint
    /// (exit [`EXIT_STOPPED`]) or evicted is replaced without counting.
    pub backoff_limit: u32,
}

/// `value` quoted for a POSIX shell: `'…'`, with `'` as `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Refuses a value for an `#SBATCH` line or a Kubernetes name unless it is made of letters,
/// digits and `extra`.
fn plain(flag: &'static str, value: &str, extra: &str) -> Result<(), EmitError> {
    let bad = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)));
    match bad {
        _ if value.is_empty() => Err(EmitError::InvalidValue {
            flag,
            value: value.to_owned(),
            reason: "empty".to_owned(),
        }),
        Some(c) => Err(EmitError::InvalidValue {
            flag,
            value: value.to_owned(),
            reason: format!(
                "{c:?} cannot go into the job script (letters, digits and {extra:?} only)"
            ),
        }),
        None => Ok(()),
    }
}

fn absolute(flag: &'static str, path: &Path) -> Result<String, EmitError> {
    if !path.is_absolute() {
        return Err(EmitError::NotAbsolute {
            flag,
            path: path.to_path_buf(),
        });
    }
    Ok(path.to_string_lossy().into_owned())
}

fn positive(flag: &'static str, value: Option<u32>) -> Result<(), EmitError> {
    match value {
        Some(0) => Err(EmitError::InvalidValue {
            flag,
            value: "0".to_owned(),
            reason: "must be at least 1".to_owned(),
        }),
        _ => Ok(()),
    }
}

/// `# task 5: setting 1 (loss=ce), fold 1` lines for every task.
fn task_table(job: &JobArray, comment: &str) -> String {
    let mut text = String::new();
    for index in 0..job.plan.n_tasks() {
        let Ok(task) = job.plan.task(index) else {
            continue;
        };
        let label = job
            .labels
            .get(task.setting)
            .filter(|l| !l.is_empty())
            .map_or_else(String::new, |l| format!(" ({l})"));
        let setting = if job.plan.n_settings() > 1 {
            format!("setting {}{label}, ", task.setting)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{comment}   task {index}: {setting}fold {}\n",
            task.fold
        ));
    }
    text
}

/// The sbatch script of `job`: a job array `--array=0-(N-1)`, one task per (setting, fold),
/// per-task logs in `RUN/slurm/task-<array job>_<task>.log` (appended to across requeues),
/// `--requeue` and `--signal=USR1@S`. The trainer saves a checkpoint and exits
/// [`EXIT_STOPPED`] on SIGUSR1 (time limit near) or SIGTERM (scancel, requeue, preemption);
/// after SIGUSR1 the script requeues the task itself, after SIGTERM it leaves the task to
/// SLURM (requeued, or cancelled for good). A requeued task resumes bit-exactly from the
/// checkpoint. The
/// first task to start submits the merge job (`--dependency=afterok:<array job>`, once per
/// array job: an atomic `mkdir` guards it), which runs `cv --merge RUN` after every task
/// succeeded. Submit with `sbatch FILE`; `RUN/slurm/` must exist (the CLI creates it).
pub fn slurm_script(job: &JobArray, options: &SlurmOptions) -> Result<String, EmitError> {
    plain("job-name", &job.name, "-_.")?;
    let run_dir = absolute("out", &job.run_dir)?;
    plain("out", &run_dir, "/-_.+,=@").map_err(|e| match e {
        EmitError::InvalidValue { value, reason, .. } => EmitError::InvalidValue {
            flag: "out",
            value,
            reason: format!("{reason}: #SBATCH --output cannot hold it"),
        },
        other => other,
    })?;
    if let Some(gres) = &options.gres {
        plain("gres", gres, ":,_-.")?;
    }
    if let Some(partition) = &options.partition {
        plain("partition", partition, ",_-.")?;
    }
    if let Some(time) = &options.time {
        plain("time", time, ":-")?;
    }
    if let Some(mem) = &options.mem {
        plain("mem", mem, "")?;
    }
    positive("cpus-per-task", options.cpus_per_task)?;
    positive("max-parallel", options.max_parallel)?;
    let n_tasks = job.plan.n_tasks();
    let throttle = options
        .max_parallel
        .map_or_else(String::new, |m| format!("%{m}"));
    let logs = format!("{run_dir}/{SLURM_LOG_DIR}");
    let mut sbatch = vec![
        format!("--job-name={}", job.name),
        format!("--array=0-{}{throttle}", n_tasks.saturating_sub(1)),
    ];
    if let Some(gres) = &options.gres {
        sbatch.push(format!("--gres={gres}"));
    }
    if let Some(partition) = &options.partition {
        sbatch.push(format!("--partition={partition}"));
    }
    if let Some(time) = &options.time {
        sbatch.push(format!("--time={time}"));
    }
    if let Some(cpus) = options.cpus_per_task {
        sbatch.push(format!("--cpus-per-task={cpus}"));
    }
    if let Some(mem) = &options.mem {
        sbatch.push(format!("--mem={mem}"));
    }
    sbatch.extend([
        "--ntasks=1".to_owned(),
        format!("--output={logs}/task-%A_%a.log"),
        "--open-mode=append".to_owned(),
        "--requeue".to_owned(),
        format!("--signal=USR1@{}", options.signal_lead_s),
    ]);
    let merge_flags = {
        let mut flags = vec![format!("--job-name={}-merge", job.name)];
        if let Some(partition) = &options.partition {
            flags.push(format!("--partition={partition}"));
        }
        flags.join(" ")
    };
    let mut task_command = vec![
        "\"$TRAINER\"".to_owned(),
        "cv".to_owned(),
        "--resume".to_owned(),
        "--out".to_owned(),
        "\"$RUN\"".to_owned(),
        "--task".to_owned(),
        "\"$TASK\"".to_owned(),
    ];
    task_command.extend(job.task_args.iter().map(|a| shell_quote(a)));

    let mut script = String::from("#!/bin/bash\n");
    script.push_str(&format!(
        "# strokeseg-train {}: {} settings x {} folds = {n_tasks} tasks as one SLURM job array.\n\
         # Submit: sbatch THIS_FILE. Task logs: {logs}/task-<job>_<task>.log.\n\
         # The first task to start submits the merge job (afterok: it runs `cv --merge` once every\n\
         # task succeeded). SIGUSR1 (--signal, time limit near) or SIGTERM (scancel, requeue) makes\n\
         # the trainer save a checkpoint and exit {EXIT_STOPPED}; after SIGUSR1 the task requeues itself,\n\
         # and a requeued task resumes from its checkpoint.\n\
         # Task id -> (setting, fold): setting = id / {folds}, fold = id % {folds}\n",
        env!("CARGO_PKG_VERSION"),
        job.plan.n_settings(),
        job.plan.n_folds(),
        folds = job.plan.n_folds(),
    ));
    script.push_str(&task_table(job, "#"));
    for flag in &sbatch {
        script.push_str(&format!("#SBATCH {flag}\n"));
    }
    script.push_str(&format!(
        r#"
set -u
TRAINER={trainer}
RUN={run}
LOGS="$RUN/{SLURM_LOG_DIR}"
TASK="${{SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a job array}}"

# The merge job, once per array job: mkdir is atomic, and a requeued task finds the folder.
MARK="$LOGS/merge-submitted-$SLURM_ARRAY_JOB_ID"
if mkdir "$MARK" 2>/dev/null; then
    MERGE="$(printf '%q ' "$TRAINER" cv --merge "$RUN")"
    sbatch --parsable {merge_flags} --dependency="afterok:$SLURM_ARRAY_JOB_ID" \
        --kill-on-invalid-dep=yes --ntasks=1 --output="$LOGS/merge-%j.log" \
        --wrap="$MERGE" > "$MARK/job_id" \
        || {{ echo "task $TASK: could not submit the merge job" >&2; rmdir "$MARK"; }}
fi

# SIGTERM (scancel, scontrol requeue, preemption) reaches the trainer through srun, which
# saves a checkpoint; this shell waits for it instead of dying first, and leaves the task to
# SLURM: requeued by SLURM, or cancelled for good. SIGUSR1 (--signal, the time limit is near)
# reaches only the trainer: after it, this shell requeues the task itself.
GOT_TERM=0
trap 'GOT_TERM=1; echo "task $TASK: SIGTERM, the trainer saves a checkpoint"' TERM
echo "task $TASK of array $SLURM_ARRAY_JOB_ID (job $SLURM_JOB_ID, restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname) at $(date -u +%FT%TZ)"
srun {task}
status=$?
if [ "$status" -eq {EXIT_STOPPED} ] && [ "$GOT_TERM" -eq 0 ]; then
    echo "task $TASK: stopped by SIGUSR1 with a checkpoint; requeueing"
    scontrol requeue "$SLURM_JOB_ID" || true
fi
exit "$status"
"#,
        trainer = shell_quote(&job.trainer),
        run = shell_quote(&run_dir),
        task = task_command.join(" "),
    ));
    Ok(script)
}

/// `value` as a YAML scalar: a JSON string, which YAML reads as the same string.
fn yaml_str(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// The manifest of a Kubernetes Indexed Job (`batch/v1`, `completionMode: Indexed`) running
/// the tasks of `job`: `completions` = tasks, each pod's `JOB_COMPLETION_INDEX` is the task
/// index, the run and data folders on the PersistentVolumeClaim `options.pvc`. A pod that exits
/// [`EXIT_STOPPED`] (SIGTERM: eviction, node drain; checkpoint saved) or is disrupted is
/// replaced without counting against `backoffLimit` and resumes from its checkpoint. Merge when
/// the Job is complete: `kubectl wait --for=condition=complete job/NAME`, then
/// `strokeseg-train cv --merge RUN` where the volume is mounted.
pub fn k8s_manifest(job: &JobArray, options: &K8sOptions) -> Result<String, EmitError> {
    // A DNS-1123 label (the Job controller appends pod suffixes).
    if job.name.len() > 52
        || !job
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || job.name.starts_with('-')
        || job.name.ends_with('-')
    {
        return Err(EmitError::InvalidValue {
            flag: "job-name",
            value: job.name.clone(),
            reason: "a Kubernetes Job name is lower-case letters, digits and '-', at most 52 \
                     characters, starting and ending with a letter or digit"
                .to_owned(),
        });
    }
    plain("image", &options.image, "-_./:@")?;
    plain("pvc", &options.pvc, "-.")?;
    let mount = absolute("mount", &options.mount)?;
    for (flag, path) in [("out", &job.run_dir), ("data", &options.data_dir)] {
        absolute(flag, path)?;
        if !path.starts_with(&options.mount) {
            return Err(EmitError::OutsideMount {
                flag,
                path: path.clone(),
                mount: options.mount.clone(),
            });
        }
    }
    positive("cpus-per-task", options.cpus)?;
    positive("max-parallel", options.max_parallel)?;
    let n_tasks = job.plan.n_tasks();
    if n_tasks > K8S_MAX_COMPLETIONS {
        return Err(EmitError::TooManyTasks {
            n_tasks,
            max: K8S_MAX_COMPLETIONS,
            engine: "Indexed Job",
        });
    }
    let parallelism = options
        .max_parallel
        .map_or(n_tasks, |m| (m as usize).min(n_tasks));
    let mut command = vec![
        job.trainer.clone(),
        "cv".to_owned(),
        "--resume".to_owned(),
        "--out".to_owned(),
        job.run_dir.to_string_lossy().into_owned(),
        "--task".to_owned(),
        "$(JOB_COMPLETION_INDEX)".to_owned(),
    ];
    command.extend(job.task_args.iter().cloned());
    let command: Vec<String> = command.iter().map(|a| yaml_str(a)).collect();
    let mut resources = String::new();
    let mut requests = Vec::new();
    if let Some(cpus) = options.cpus {
        requests.push(format!("cpu: {}", yaml_str(&cpus.to_string())));
    }
    if options.gpus > 0 {
        requests.push(format!(
            "nvidia.com/gpu: {}",
            yaml_str(&options.gpus.to_string())
        ));
    }
    if !requests.is_empty() {
        resources.push_str("          resources:\n            limits:\n");
        for r in &requests {
            resources.push_str(&format!("              {r}\n"));
        }
    }
    let mut manifest = format!(
        "# strokeseg-train {}: {} settings x {} folds = {n_tasks} tasks as one Indexed Job.\n\
         # kubectl apply -f THIS_FILE; kubectl wait --for=condition=complete job/{name} --timeout=-1s;\n\
         # then merge where the volume is mounted: strokeseg-train cv --merge {run}\n\
         # JOB_COMPLETION_INDEX -> (setting, fold): setting = index / {folds}, fold = index % {folds}\n",
        env!("CARGO_PKG_VERSION"),
        job.plan.n_settings(),
        job.plan.n_folds(),
        name = job.name,
        run = job.run_dir.display(),
        folds = job.plan.n_folds(),
    );
    manifest.push_str(&task_table(job, "#"));
    manifest.push_str(&format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: strokeseg-train
spec:
  completionMode: Indexed
  completions: {n_tasks}
  parallelism: {parallelism}
  backoffLimit: {backoff}
  podFailurePolicy:
    rules:
      - action: Ignore
        onExitCodes:
          containerName: train
          operator: In
          values: [{EXIT_STOPPED}]
      - action: Ignore
        onPodConditions:
          - type: DisruptionTarget
  template:
    metadata:
      labels:
        app.kubernetes.io/name: strokeseg-train
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 120
      containers:
        - name: train
          image: {image}
          command: [{command}]
          env:
            - name: JOB_COMPLETION_INDEX
              valueFrom:
                fieldRef:
                  fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']"
{resources}          volumeMounts:
            - name: work
              mountPath: {mount}
      volumes:
        - name: work
          persistentVolumeClaim:
            claimName: {pvc}
"#,
        name = yaml_str(&job.name),
        backoff = options.backoff_limit,
        image = yaml_str(&options.image),
        command = command.join(", "),
        mount = yaml_str(&mount),
        pvc = yaml_str(&options.pvc),
    ));
    Ok(manifest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn job(n_settings: usize) -> JobArray {
        JobArray {
            name: "strokeseg-cv".to_owned(),
            run_dir: PathBuf::from("/data/runs/cv"),
            plan: TaskPlan::new(n_settings, 4).unwrap(),
            labels: (0..n_settings).map(|s| format!("loss=l{s}")).collect(),
            trainer: "/opt/bin/strokeseg-train".to_owned(),
            task_args: vec!["--device".into(), "auto".into(), "--quiet".into()],
        }
    }

    #[test]
    fn the_sbatch_script_is_an_array_of_every_task() {
        let script = slurm_script(&job(2), &SlurmOptions::default()).unwrap();
        assert!(script.starts_with("#!/bin/bash\n"));
        for line in [
            "#SBATCH --array=0-7\n",
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --requeue\n",
            "#SBATCH --signal=USR1@120\n",
            "#SBATCH --output=/data/runs/cv/slurm/task-%A_%a.log\n",
            "#   task 5: setting 1 (loss=l1), fold 1\n",
            "--dependency=\"afterok:$SLURM_ARRAY_JOB_ID\"",
            "srun \"$TRAINER\" cv --resume --out \"$RUN\" --task \"$TASK\" '--device' 'auto' '--quiet'\n",
            "if [ \"$status\" -eq 130 ] && [ \"$GOT_TERM\" -eq 0 ]; then",
        ] {
            assert!(script.contains(line), "no {line:?} in\n{script}");
        }
        let cpu = SlurmOptions {
            gres: None,
            max_parallel: Some(2),
            cpus_per_task: Some(1),
            ..SlurmOptions::default()
        };
        let script = slurm_script(&job(1), &cpu).unwrap();
        assert!(!script.contains("--gres"), "{script}");
        assert!(script.contains("#SBATCH --array=0-3%2\n"), "{script}");
        assert!(script.contains("#   task 3: fold 3\n"), "{script}");
    }

    #[test]
    fn impossible_or_unsafe_values_are_refused_at_emission() {
        let options = SlurmOptions::default();
        let mut relative = job(1);
        relative.run_dir = PathBuf::from("runs/cv");
        assert!(matches!(
            slurm_script(&relative, &options),
            Err(EmitError::NotAbsolute { flag: "out", .. })
        ));
        let mut spaced = job(1);
        spaced.run_dir = PathBuf::from("/data/my runs/cv");
        let err = slurm_script(&spaced, &options).unwrap_err();
        assert!(err.to_string().contains("#SBATCH --output"), "{err}");
        let injected = SlurmOptions {
            gres: Some("gpu:1\n#SBATCH --uid=0".to_owned()),
            ..SlurmOptions::default()
        };
        assert!(matches!(
            slurm_script(&job(1), &injected),
            Err(EmitError::InvalidValue { flag: "gres", .. })
        ));
        let zero = SlurmOptions {
            max_parallel: Some(0),
            ..SlurmOptions::default()
        };
        assert!(matches!(
            slurm_script(&job(1), &zero),
            Err(EmitError::InvalidValue {
                flag: "max-parallel",
                ..
            })
        ));
    }

    fn k8s() -> K8sOptions {
        K8sOptions {
            image: "registry.example/strokeseg:0.1".to_owned(),
            pvc: "strokeseg-work".to_owned(),
            mount: PathBuf::from("/data"),
            data_dir: PathBuf::from("/data/phantom"),
            gpus: 1,
            cpus: Some(4),
            max_parallel: Some(2),
            backoff_limit: 3,
        }
    }

    #[test]
    fn the_indexed_job_runs_every_task_by_its_completion_index() {
        let manifest = k8s_manifest(&job(2), &k8s()).unwrap();
        for line in [
            "completionMode: Indexed\n",
            "completions: 8\n",
            "parallelism: 2\n",
            "\"--task\", \"$(JOB_COMPLETION_INDEX)\"",
            "nvidia.com/gpu: \"1\"",
            "claimName: \"strokeseg-work\"",
        ] {
            assert!(manifest.contains(line), "no {line:?} in\n{manifest}");
        }
    }

    #[test]
    fn a_k8s_path_off_the_volume_is_refused() {
        let mut outside = job(1);
        outside.run_dir = PathBuf::from("/scratch/cv");
        assert!(matches!(
            k8s_manifest(&outside, &k8s()),
            Err(EmitError::OutsideMount { flag: "out", .. })
        ));
        let mut upper = job(1);
        upper.name = "Strokeseg_CV".to_owned();
        assert!(matches!(
            k8s_manifest(&upper, &k8s()),
            Err(EmitError::InvalidValue {
                flag: "job-name",
                ..
            })
        ));
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b c"), r"'a'\''b c'");
    }
}

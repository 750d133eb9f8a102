//! `cargo xtask ci slurm`: the trainer's job arrays on a real single-node SLURM cluster, not a
//! mock, and its Kubernetes manifest against the Job schema.
//!
//! 1. Debian's `slurm-wlm` and `munge` are installed with apt-get when missing (as root).
//! 2. A cluster lives in a temp folder: a munge key, `slurm.conf` (127.0.0.1, ports 16817/16818,
//!    `proctrack/linuxproc`, `task/none`, `select/cons_tres`, no accounting, no cgroups), and
//!    `munged`, `slurmctld`, `slurmd` started in the foreground as children of this process;
//!    [`Cluster`]'s drop cancels every job and stops them, whatever happened.
//! 3. On a tiny phantom (CPU, one thread per task), the sequential `strokeseg-train cv`; then
//!    the emitted sbatch script of the same 4-fold cross-validation (`--gres none`) is
//!    submitted; one task is requeued mid-training with `scontrol requeue`, another is sent
//!    SIGUSR1 (what `--signal=USR1@120` sends before the time limit) and requeues itself; the
//!    merge job (afterok) must then write a `cv_summary.json` equal, byte for byte, to the
//!    sequential one.
//! 4. Bad input: a merge with a fold missing and one corrupt names both and fails; impossible
//!    emissions are refused.
//! 5. The emitted Kubernetes Indexed Job validates against the `batch/v1` Job schema
//!    (`tests/scripts/check_k8s_job.py` with `kubernetes-validate`'s bundled schemas,
//!    installed into `.cache/venv-k8s`; skipped, saying so, when pip cannot install it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process;

/// slurmctld's port (not the default 6817, so a site's own daemons are left alone).
const CTLD_PORT: &str = "16817";
/// slurmd's port.
const SLURMD_PORT: &str = "16818";
/// The cross-validation every run here trains: small enough for seconds per fold on one core,
/// long enough (12 epochs of 7 steps) to be stopped mid-training.
const CV_FLAGS: &[&str] = &[
    "--folds",
    "4",
    "--input-size",
    "64",
    "--target-spacing-mm",
    "4",
    "--base-width",
    "8",
    "--depth",
    "2",
    "--epochs",
    "12",
    "--batch-size",
    "4",
    "--seed",
    "7",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--quiet",
];
/// Phantom cases of the dataset.
const PHANTOM_CASES: &str = "12";
/// How long the array may take before the step fails.
const ARRAY_TIMEOUT: Duration = Duration::from_secs(300);

/// Installs SLURM if needed, builds `strokeseg-train` (with the workspace's tests), empties `target/tmp/<name>` and writes
/// the phantom there: the trainer, the work folder and the dataset.
fn setup(root: &Path, name: &str) -> Result<(Trainer, PathBuf, PathBuf)> {
    ensure_slurm_installed(root)?;
    // The workspace-wide test build, as the CI's test step left it: building the trainer
    // package alone resolves other features and recompiles tract (minutes here).
    let (trainer, _) = crate::model_eval::build_tools(root)?;
    let target = crate::cross::target_dir(root);
    let work = target.join("tmp").join(name);
    stop_stale_daemons(&work.join("cluster"));
    if work.exists() {
        fs::remove_dir_all(&work)
            .with_context(|| format!("could not remove {}", work.display()))?;
    }
    fs::create_dir_all(&work).with_context(|| format!("could not create {}", work.display()))?;
    let work = std::path::absolute(&work)?;
    let t = Trainer { bin: trainer };
    let data = work.join("data");
    t.ok(&[
        "phantom",
        "--out",
        &s(&data),
        "--cases",
        PHANTOM_CASES,
        "--seed",
        "3",
    ])?;
    Ok((t, work, data))
}

/// `cargo xtask slurm-bench`: wall time of the step's 4-fold cross-validation run
/// sequentially (1 and 2 libtorch threads) and as a SLURM array of 1-thread tasks, 2 at once
/// on this machine's 2 CPUs, submission to merged summary; no interruptions.
pub fn bench(root: &Path) -> Result<()> {
    let (t, work, data) = setup(root, "slurm-bench")?;
    let mut rows = Vec::new();
    for threads in ["1", "2"] {
        let out = work.join(format!("sequential-{threads}"));
        let mut args = cv_args(&data, &out, &[]);
        if let Some(i) = args.iter().position(|a| a == "--threads") {
            args[i + 1] = threads.to_owned();
        }
        let started = Instant::now();
        t.ok(&args)?;
        rows.push((
            format!("sequential cv, --threads {threads}"),
            started.elapsed().as_secs_f64(),
        ));
    }
    let cluster = Cluster::start(&work.join("cluster"))?;
    let array_dir = work.join("array");
    let script = t.ok(&cv_args(
        &data,
        &array_dir,
        &["--emit", "slurm", "--gres", "none", "--cpus-per-task", "1"],
    ))?;
    let script_path = work.join("cv.sbatch");
    fs::write(&script_path, &script)?;
    let started = Instant::now();
    cluster.command("sbatch", &["--parsable", &s(&script_path)])?;
    wait_for(
        ARRAY_TIMEOUT,
        "the array and the merge job to finish",
        || {
            let queued = cluster.command("squeue", &["-h"])?;
            Ok(
                (queued.trim().is_empty() && array_dir.join("cv_summary.json").is_file())
                    .then_some(()),
            )
        },
    )
    .inspect_err(|_| cluster.dump_logs(&array_dir))?;
    rows.push((
        "SLURM array, 4 tasks x 1 thread, 2 at once, + merge job".to_owned(),
        started.elapsed().as_secs_f64(),
    ));
    drop(cluster);
    let same = read(&array_dir.join("cv_summary.json"))?
        == read(&work.join("sequential-1").join("cv_summary.json"))?;
    println!(
        "\n| 4-fold cv ({PHANTOM_CASES} phantom cases, 12 epochs, 64 x 64, width 8) | wall time (s) |"
    );
    println!("|---|---:|");
    for (what, seconds) in &rows {
        println!("| {what} | {seconds:.1} |");
    }
    println!(
        "\narray summary {} the sequential --threads 1 one byte for byte",
        if same { "equals" } else { "DIFFERS FROM" }
    );
    Ok(())
}

/// `cargo xtask ci slurm`.
pub fn run(root: &Path) -> Result<()> {
    let (t, work, data) = setup(root, "slurm-ci")?;

    refused_emissions(&t, &work, &data)?;
    k8s_check(root, &t, &work, &data)?;

    let sequential = work.join("sequential");
    let started = Instant::now();
    t.ok(&cv_args(&data, &sequential, &[]))?;
    let sequential_s = started.elapsed().as_secs_f64();
    println!("slurm: sequential 4-fold cv in {sequential_s:.1} s");

    let cluster = Cluster::start(&work.join("cluster"))?;
    let array_dir = work.join("array");
    let script = t.ok(&cv_args(
        &data,
        &array_dir,
        &[
            "--emit",
            "slurm",
            "--gres",
            "none",
            "--cpus-per-task",
            "1",
            "--job-name",
            "strokeseg-ci",
        ],
    ))?;
    let script_path = work.join("cv.sbatch");
    fs::write(&script_path, &script)?;
    let started = Instant::now();
    let array_job = cluster.command("sbatch", &["--parsable", &s(&script_path)])?;
    let array_job = array_job.trim().split(';').next().unwrap_or("").to_owned();
    println!("slurm: submitted array job {array_job}");

    // Task 1: requeued from outside (scontrol requeue) while it trains.
    cluster.interrupt_mid_training(&array_job, 1, &array_dir, Interrupt::Requeue)?;
    // Task 2: SIGUSR1, as --signal=USR1@120 sends it; the script requeues the task itself.
    cluster.interrupt_mid_training(&array_job, 2, &array_dir, Interrupt::Usr1)?;

    let mark = array_dir
        .join("slurm")
        .join(format!("merge-submitted-{array_job}"))
        .join("job_id");
    let merge_job = wait_for(ARRAY_TIMEOUT, "the merge job id", || {
        Ok(fs::read_to_string(&mark)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()))
    })?;
    println!("slurm: merge job {merge_job}");
    wait_for(
        ARRAY_TIMEOUT,
        "the array and the merge job to finish",
        || {
            let queued = cluster.command("squeue", &["-h", "-o", "%i %T"])?;
            Ok(queued.trim().is_empty().then_some(()))
        },
    )
    .inspect_err(|_| cluster.dump_logs(&array_dir))?;
    let array_s = started.elapsed().as_secs_f64();
    let state = cluster.command("scontrol", &["show", "job", &merge_job])?;
    if !state.contains("JobState=COMPLETED") {
        cluster.dump_logs(&array_dir);
        bail!("the merge job {merge_job} did not complete:\n{state}");
    }
    for task in [1, 2] {
        let log = task_log(&array_dir, &array_job, task)?;
        if !log.contains("restart 1") || !log.contains("resuming") {
            cluster.dump_logs(&array_dir);
            bail!("task {task} was not requeued and resumed:\n{log}");
        }
    }
    let merged = read(&array_dir.join("cv_summary.json"))?;
    let expected = read(&sequential.join("cv_summary.json"))?;
    let merged_value: serde_json::Value = serde_json::from_str(&merged)?;
    let expected_value: serde_json::Value = serde_json::from_str(&expected)?;
    if merged != expected || merged_value != expected_value {
        bail!(
            "the merged summary of the array differs from the sequential cv:\n{}\nvs\n{}",
            array_dir.join("cv_summary.json").display(),
            sequential.join("cv_summary.json").display()
        );
    }
    println!(
        "slurm: array (2 tasks at once, 2 interrupted and resumed) + merge in {array_s:.1} s; \
         cv_summary.json equals the sequential run's byte for byte"
    );
    drop(cluster);

    bad_merges(&t, &work, &array_dir)?;
    println!(
        "slurm: 4-fold cv on 2 cores: sequential {sequential_s:.1} s, SLURM array {array_s:.1} s"
    );
    Ok(())
}

/// `cv --data DATA --out OUT` with [`CV_FLAGS`] and `extra`.
fn cv_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["cv", "--data", &s(data), "--out", &s(out)]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    args.extend(CV_FLAGS.iter().chain(extra).map(|a| (*a).to_owned()));
    args
}

fn s(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
}

fn task_log(run_dir: &Path, array_job: &str, task: u32) -> Result<String> {
    read(
        &run_dir
            .join("slurm")
            .join(format!("task-{array_job}_{task}.log")),
    )
}

/// The `strokeseg-train` binary this step built.
struct Trainer {
    bin: PathBuf,
}

impl Trainer {
    fn output<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Output> {
        Command::new(&self.bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .with_context(|| format!("could not start {}", self.bin.display()))
    }

    /// Runs it; its stdout when it succeeds, an error with both streams otherwise.
    fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "strokeseg-train {} failed ({}):\n{}{}",
                args.iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs it expecting a failure whose stderr says each of `expected`.
    fn refused<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], expected: &[&str]) -> Result<()> {
        let out = self.output(args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || out.status.code().is_none() {
            bail!("expected a refusal, got {}: {stderr}", out.status);
        }
        for text in expected {
            if !stderr.contains(text) {
                bail!("the refusal does not say {text:?}:\n{stderr}");
            }
        }
        println!(
            "slurm: refused as expected: {}",
            stderr.lines().next().unwrap_or("")
        );
        Ok(())
    }
}

/// Impossible combinations are refused at emission, before anything is written.
fn refused_emissions(t: &Trainer, work: &Path, data: &Path) -> Result<()> {
    let out = work.join("refused");
    t.refused(
        &cv_args(data, &out, &["--emit", "slurm", "--fold", "1"]),
        &["--emit", "--fold"],
    )?;
    t.refused(
        &[
            "cv",
            "--data",
            &s(data),
            "--out",
            &s(&out),
            "--folds",
            "1",
            "--emit",
            "slurm",
        ],
        &["--folds 1"],
    )?;
    t.refused(
        &cv_args(data, &out, &["--emit", "slurm", "--max-parallel", "0"]),
        &["--max-parallel"],
    )?;
    t.refused(
        &cv_args(
            data,
            &out,
            &[
                "--emit",
                "k8s",
                "--image",
                "strokeseg:ci",
                "--pvc",
                "work",
                "--mount",
                "/elsewhere",
            ],
        ),
        &["--out", "/elsewhere"],
    )?;
    // Not an emission: a fold that does not exist.
    t.refused(&cv_args(data, &out, &["--fold", "4"]), &["--fold 4"])?;
    if out.join("cv.json").exists() {
        bail!("a refused emission wrote {}", out.join("cv.json").display());
    }
    Ok(())
}

/// A merge of a copy of the finished array with fold 2 removed and fold 3's evaluation
/// corrupted must fail naming both.
fn bad_merges(t: &Trainer, work: &Path, array_dir: &Path) -> Result<()> {
    let broken = work.join("broken");
    process::run(work, "cp", &["-r", &s(array_dir), &s(&broken)])?;
    fs::remove_dir_all(broken.join("fold_2"))?;
    fs::write(
        broken.join("fold_3").join("evaluation.json"),
        "{\"epochs\": ",
    )?;
    fs::remove_file(broken.join("cv_summary.json"))?;
    t.refused(
        &["cv", "--merge", &s(&broken)],
        &["fold 2 is missing", "fold 3 is corrupt", "evaluation.json"],
    )?;
    if broken.join("cv_summary.json").exists() {
        bail!(
            "a refused merge wrote {}",
            broken.join("cv_summary.json").display()
        );
    }
    Ok(())
}

/// How a task is interrupted mid-training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interrupt {
    /// `scontrol requeue` from outside.
    Requeue,
    /// `scancel --signal=USR1`: the trainer checkpoints, the script requeues the task.
    Usr1,
}

/// A single-node SLURM cluster in a folder, its daemons children of this process.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster> {
        stop_stale_daemons(dir);
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        for sub in ["munge", "state", "spool", "log"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let munge = dir.join("munge");
        let key = munge.join("munge.key");
        process::run(
            dir,
            "dd",
            &[
                "if=/dev/urandom",
                &format!("of={}", key.display()),
                "bs=1024",
                "count=1",
                "status=none",
            ],
        )?;
        process::run(dir, "chmod", &["0400", &s(&key)])?;
        let host = process::output(dir, "hostname", &["-s"])
            .context("hostname -s failed")?
            .trim()
            .to_owned();
        let socket = munge.join("munge.socket");
        let conf = dir.join("slurm.conf");
        let d = |name: &str| s(&dir.join(name));
        fs::write(
            &conf,
            format!(
                "ClusterName=strokeseg-ci\n\
                 SlurmctldHost={host}(127.0.0.1)\n\
                 SlurmctldPort={CTLD_PORT}\n\
                 SlurmdPort={SLURMD_PORT}\n\
                 AuthType=auth/munge\n\
                 AuthInfo=socket={socket}\n\
                 CredType=cred/munge\n\
                 SlurmUser=root\n\
                 SlurmdUser=root\n\
                 StateSaveLocation={state}\n\
                 SlurmdSpoolDir={spool}\n\
                 SlurmctldPidFile={ctld_pid}\n\
                 SlurmdPidFile={slurmd_pid}\n\
                 SlurmctldLogFile={ctld_log}\n\
                 SlurmdLogFile={slurmd_log}\n\
                 ProctrackType=proctrack/linuxproc\n\
                 TaskPlugin=task/none\n\
                 SelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_Core\n\
                 ReturnToService=2\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\n\
                 MinJobAge=600\n\
                 NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=8000\n\
                 PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
                socket = socket.display(),
                state = d("state"),
                spool = d("spool"),
                ctld_pid = d("slurmctld.pid"),
                slurmd_pid = d("slurmd.pid"),
                ctld_log = d("log/slurmctld.log"),
                slurmd_log = d("log/slurmd.log"),
            ),
        )?;
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            conf: conf.clone(),
            daemons: Vec::new(),
        };
        let munge_args = [
            format!("--key-file={}", key.display()),
            format!("--socket={}", socket.display()),
            format!("--pid-file={}", munge.join("munged.pid").display()),
            format!("--log-file={}", munge.join("munged.log").display()),
            format!("--seed-file={}", munge.join("munged.seed").display()),
            "--foreground".to_owned(),
            "--force".to_owned(),
        ];
        cluster.spawn("munged", &munge_args)?;
        wait_for(Duration::from_secs(10), "munged's socket", || {
            Ok(socket.exists().then_some(()))
        })?;
        let conf_arg = s(&conf);
        cluster.spawn(
            "slurmctld",
            &["-D".to_owned(), "-f".to_owned(), conf_arg.clone()],
        )?;
        cluster.spawn("slurmd", &["-D".to_owned(), "-f".to_owned(), conf_arg])?;
        wait_for(Duration::from_secs(30), "the node to be idle", || {
            let state = cluster
                .command("sinfo", &["-h", "-o", "%T"])
                .unwrap_or_default();
            Ok((state.trim() == "idle").then_some(()))
        })
        .inspect_err(|_| cluster.dump_logs(dir))?;
        println!(
            "slurm: cluster up in {} (node {host}, 2 CPUs)",
            dir.display()
        );
        Ok(cluster)
    }

    fn spawn(&mut self, program: &'static str, args: &[String]) -> Result<()> {
        let log = fs::File::create(self.dir.join("log").join(format!("{program}.out")))?;
        let child = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start {program}"))?;
        self.daemons.push((program, child));
        Ok(())
    }

    /// Runs a SLURM client command against this cluster; its stdout.
    fn command(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .with_context(|| format!("could not start {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The state of task `task` of `array_job` (`RUNNING`, `PENDING`, …; empty when gone).
    fn task_state(&self, array_job: &str, task: u32) -> String {
        self.command(
            "squeue",
            &["-h", "-j", &format!("{array_job}_{task}"), "-o", "%T"],
        )
        .unwrap_or_default()
        .trim()
        .to_owned()
    }

    /// Waits until task `task` is running and has taken training steps (but not all), then
    /// interrupts it; waits until it is pending again and lets it start at once (slurmctld
    /// holds a requeued job back for about two minutes).
    fn interrupt_mid_training(
        &self,
        array_job: &str,
        task: u32,
        run_dir: &Path,
        how: Interrupt,
    ) -> Result<()> {
        let steps = run_dir.join(format!("fold_{task}")).join("steps.csv");
        let job = format!("{array_job}_{task}");
        wait_for(ARRAY_TIMEOUT, &format!("task {task} mid-training"), || {
            let n_steps = fs::read_to_string(&steps)
                .map(|t| t.lines().count().saturating_sub(1))
                .unwrap_or(0);
            Ok((self.task_state(array_job, task) == "RUNNING" && n_steps >= 10).then_some(n_steps))
        })
        .inspect_err(|_| self.dump_logs(run_dir))?;
        match how {
            Interrupt::Requeue => self.command("scontrol", &["requeue", &job])?,
            Interrupt::Usr1 => self.command("scancel", &["--signal=USR1", &job])?,
        };
        println!("slurm: task {task} interrupted mid-training ({how:?})");
        wait_for(ARRAY_TIMEOUT, &format!("task {task} requeued"), || {
            let detail = self
                .command("scontrol", &["show", "job", &job])
                .unwrap_or_default();
            Ok(
                (detail.contains("JobState=PENDING") && detail.contains("Restarts=1"))
                    .then_some(()),
            )
        })
        .inspect_err(|_| self.dump_logs(run_dir))?;
        self.command(
            "scontrol",
            &["update", &format!("JobId={job}"), "StartTime=now"],
        )?;
        Ok(())
    }

    /// Prints the daemons' and the tasks' logs (after a failure).
    fn dump_logs(&self, run_dir: &Path) {
        let mut files = vec![
            self.dir.join("log").join("slurmctld.log"),
            self.dir.join("log").join("slurmd.log"),
        ];
        if let Ok(entries) = fs::read_dir(run_dir.join("slurm")) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
        for file in files {
            let text = fs::read_to_string(&file).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            println!("--- {} (last {} lines)", file.display(), tail.len());
            for line in tail.iter().rev() {
                println!("{line}");
            }
        }
        if let Ok(queue) = self.command("squeue", &["-o", "%i %T %r"]) {
            println!("--- squeue\n{queue}");
        }
    }
}

impl Drop for Cluster {
    /// Cancels every job, then stops the daemons (SIGTERM, SIGKILL after 10 s) and reaps them.
    fn drop(&mut self) {
        let _ = self.command("scancel", &["--user=root"]);
        for (name, child) in self.daemons.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Ok(None) = child.try_wait() {
                println!("slurm: {name} did not stop on SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        println!("slurm: daemons stopped");
    }
}

/// Stops the daemons a previous run left in `dir` when it was killed before its cleanup
/// (they would hold the ports): each by the pid in its pid file, and only when that process
/// still is that daemon.
fn stop_stale_daemons(dir: &Path) {
    let conf = dir.join("slurm.conf");
    let alive = |program: &str, pid_file: &Path| {
        let pid = fs::read_to_string(pid_file).unwrap_or_default();
        let comm = fs::read_to_string(format!("/proc/{}/comm", pid.trim())).unwrap_or_default();
        comm.trim() == program
    };
    if conf.is_file() && alive("slurmctld", &dir.join("slurmctld.pid")) {
        // Its jobs first: their step daemons outlive slurmd.
        let scancel = Command::new("scancel")
            .arg("--user=root")
            .env("SLURM_CONF", &conf)
            .status();
        if scancel.is_ok_and(|s| s.success()) {
            let _ = wait_for(Duration::from_secs(30), "the old jobs to end", || {
                let out = Command::new("squeue")
                    .arg("-h")
                    .env("SLURM_CONF", &conf)
                    .output()?;
                Ok((out.status.success() && out.stdout.is_empty()).then_some(()))
            });
        }
    }
    for (program, pid_file) in [
        ("slurmd", dir.join("slurmd.pid")),
        ("slurmctld", dir.join("slurmctld.pid")),
        ("munged", dir.join("munge").join("munged.pid")),
    ] {
        let Ok(pid) = fs::read_to_string(&pid_file) else {
            continue;
        };
        let pid = pid.trim();
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == program {
            println!("slurm: stopping {program} (pid {pid}) left by an earlier run");
            let _ = Command::new("kill").args(["-TERM", pid]).status();
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Polls `check` every 200 ms until it yields a value, or fails after `timeout`.
fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Installs Debian's slurm-wlm and munge when a daemon or client is missing.
fn ensure_slurm_installed(root: &Path) -> Result<()> {
    let programs = [
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "scontrol",
        "squeue",
        "sinfo",
    ];
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| process::output(root, "sh", &["-c", &format!("command -v {p}")]).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "slurm: {} missing; installing slurm-wlm and munge",
        missing.join(", ")
    );
    let is_root = process::output(root, "id", &["-u"]).is_some_and(|id| id.trim() == "0");
    if !is_root {
        bail!(
            "{} missing and not root: install Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge)",
            missing.join(", ")
        );
    }
    process::run(root, "apt-get", &["update"])?;
    let status = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "slurm-wlm",
            "munge",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not start apt-get")?;
    if !status.success() {
        bail!("apt-get install -y slurm-wlm munge failed ({status})");
    }
    Ok(())
}

/// The venv (under `.cache/`) holding `kubernetes-validate` with its bundled schemas.
const K8S_VENV: &str = ".cache/venv-k8s";
/// What [`k8s_python`] installs.
const K8S_PACKAGES: &[&str] = &["kubernetes-validate==1.37.0"];

/// The venv's python with kubernetes_validate importable, installing it on first use; `None`
/// (with the reason printed) when python or pip cannot provide it.
fn k8s_python(root: &Path) -> Option<PathBuf> {
    process::python_venv(
        root,
        K8S_VENV,
        K8S_PACKAGES,
        "import kubernetes_validate, yaml",
        "slurm: k8s schema check",
    )
}

/// Emits the Indexed Job of a 2-setting sweep and checks it against the Job schema.
fn k8s_check(root: &Path, t: &Trainer, work: &Path, data: &Path) -> Result<()> {
    let manifest = t.ok(&cv_args(
        data,
        &work.join("k8s-run"),
        &[
            "--loss",
            "hybrid,ce",
            "--emit",
            "k8s",
            "--image",
            "registry.example/strokeseg-train:0.1.0",
            "--pvc",
            "strokeseg-work",
            "--mount",
            &s(work),
            "--max-parallel",
            "2",
        ],
    ))?;
    let path = work.join("cv-job.yaml");
    fs::write(&path, manifest)?;
    let Some(python) = k8s_python(root) else {
        return Ok(());
    };
    process::run(
        root,
        &s(&python),
        &[
            "tests/scripts/check_k8s_job.py",
            &s(&path),
            "--completions",
            "8",
        ],
    )
}

//! Storage SCU: C-STORE of files to a configured destination (`AE@host:port`), and the
//! outbox that makes delivery at-least-once: jobs (folders of DICOM files plus
//! `job.json`) persisted on disk, retried with exponential backoff, surviving restarts;
//! an unreachable PACS delays a job and never blocks anything else.
//!
//! This module moves files; it knows nothing about segmentation.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dicom_core::{DataElement, VR, dicom_value};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::TransferSyntaxIndex as _;
use dicom_object::open_file;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};

use crate::attr::Object;
use crate::{DicomError, sanitize};

/// Where results go: the PACS's AE title, host and port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Destination {
    /// Called AE title.
    pub ae_title: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Destination {
    /// Parses `AE@host:port`.
    pub fn parse(text: &str) -> Result<Destination, DicomError> {
        let bad = || DicomError::Config {
            field: "destination",
            reason: format!("{text:?} is not AE@host:port"),
        };
        let (ae, rest) = text.split_once('@').ok_or_else(bad)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        if ae.is_empty() || ae.len() > 16 || host.is_empty() {
            return Err(bad());
        }
        Ok(Destination {
            ae_title: ae.into(),
            host: host.into(),
            port,
        })
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
    }
}

/// SOP class, instance and the file of one object to send.
struct Outgoing {
    path: PathBuf,
    sop_class_uid: String,
    sop_instance_uid: String,
}

fn outgoing(path: &Path) -> Result<Outgoing, DicomError> {
    let h = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| DicomError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(Outgoing {
        path: path.to_path_buf(),
        sop_class_uid: h
            .meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_owned(),
        sop_instance_uid: h
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_owned(),
    })
}

/// The SOP Class and SOP Instance UIDs of the DICOM file `path` (from its file meta).
pub fn file_sop_uids(path: &Path) -> Result<(String, String), DicomError> {
    let o = outgoing(path)?;
    Ok((o.sop_class_uid, o.sop_instance_uid))
}

/// Sends `files` to `dest` in one association as `calling_ae`, each re-encoded in the
/// transfer syntax accepted for its class (Explicit or Implicit VR Little Endian);
/// returns the SOP Instance UIDs acknowledged with success. The first failure (network,
/// refused class, non-success status) ends the association and is returned.
pub fn send_files(
    dest: &Destination,
    calling_ae: &str,
    files: &[PathBuf],
) -> Result<Vec<String>, DicomError> {
    let mut sent = Vec::new();
    send_files_with(dest, calling_ae, files, |sop| sent.push(sop.to_owned()))?;
    Ok(sent)
}

fn net(dest: &Destination, reason: String) -> DicomError {
    DicomError::Network {
        peer: dest.to_string(),
        reason,
    }
}

/// [`send_files`], calling `acknowledged` with each SOP Instance UID as its success
/// response arrives (the outbox records progress this way).
pub fn send_files_with(
    dest: &Destination,
    calling_ae: &str,
    files: &[PathBuf],
    mut acknowledged: impl FnMut(&str),
) -> Result<(), DicomError> {
    let objects: Vec<Outgoing> = files
        .iter()
        .map(|f| outgoing(f))
        .collect::<Result<_, _>>()?;
    let mut classes: Vec<&str> = objects.iter().map(|o| o.sop_class_uid.as_str()).collect();
    classes.sort_unstable();
    classes.dedup();
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae)
        .connection_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .write_timeout(Duration::from_secs(60));
    for class in &classes {
        options = options.with_presentation_context(
            *class,
            vec![
                uids::EXPLICIT_VR_LITTLE_ENDIAN,
                uids::IMPLICIT_VR_LITTLE_ENDIAN,
            ],
        );
    }
    let mut association = options
        .establish_with(&dest.to_string())
        .map_err(|e| net(dest, format!("association: {e}")))?;
    // Small command PDUs after large data: without this, Nagle and delayed ACKs add ~40 ms
    // per instance.
    let _ = association.inner_stream().set_nodelay(true);
    for (i, o) in objects.iter().enumerate() {
        let message_id = (i % 0xFFFF + 1) as u16;
        let result = send_one(&mut association, dest, o, message_id);
        match result {
            Ok(()) => acknowledged(&o.sop_instance_uid),
            Err(e) => {
                let _ = association.abort();
                return Err(e);
            }
        }
    }
    association
        .release()
        .map_err(|e| net(dest, format!("release: {e}")))?;
    Ok(())
}

fn send_one(
    association: &mut ClientAssociation<std::net::TcpStream>,
    dest: &Destination,
    o: &Outgoing,
    message_id: u16,
) -> Result<(), DicomError> {
    let pc = association
        .presentation_contexts()
        .iter()
        .find(|pc| {
            pc.abstract_syntax.trim_end_matches('\0') == o.sop_class_uid
                && pc.reason == PresentationContextResultReason::Acceptance
        })
        .cloned()
        .ok_or_else(|| {
            net(
                dest,
                format!(
                    "{} refused the class {} of {}",
                    dest,
                    o.sop_class_uid,
                    o.path.display()
                ),
            )
        })?;
    let ts = TransferSyntaxRegistry
        .get(pc.transfer_syntax.trim_end_matches('\0'))
        .ok_or_else(|| {
            net(
                dest,
                format!("unknown transfer syntax {}", pc.transfer_syntax),
            )
        })?;
    let file = open_file(&o.path).map_err(|e| DicomError::Parse {
        path: o.path.clone(),
        reason: e.to_string(),
    })?;
    let mut data = Vec::new();
    file.write_dataset_with_ts(&mut data, ts)
        .map_err(|e| DicomError::Encode {
            what: o.path.display().to_string(),
            reason: e.to_string(),
        })?;
    drop(file);
    send_dataset_bytes(
        association,
        dest,
        pc.id,
        &o.sop_class_uid,
        &o.sop_instance_uid,
        message_id,
        &data,
    )
}

/// Sends one C-STORE-RQ with the already encoded data set `data` on presentation context
/// `pc_id` and waits for its response; `Ok` only for status 0 (success).
pub fn send_dataset_bytes(
    association: &mut ClientAssociation<std::net::TcpStream>,
    dest: &Destination,
    pc_id: u8,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    message_id: u16,
    data: &[u8],
) -> Result<(), DicomError> {
    let command = Object::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            dicom_value!(Str, sop_class_uid),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [0x0001])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(tags::PRIORITY, VR::US, dicom_value!(U16, [0x0000])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [0x0000]),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            dicom_value!(Str, sop_instance_uid),
        ),
    ]);
    let mut cmd = Vec::new();
    command
        .write_dataset_with_ts(&mut cmd, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| DicomError::Encode {
            what: "C-STORE-RQ".into(),
            reason: e.to_string(),
        })?;
    association
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data: cmd,
            }],
        })
        .map_err(|e| net(dest, format!("send command: {e}")))?;
    {
        let mut writer = association.send_pdata(pc_id);
        writer
            .write_all(data)
            .map_err(|e| net(dest, format!("send data: {e}")))?;
        writer
            .finish()
            .map_err(|e| net(dest, format!("send data: {e}")))?;
    }
    let rsp = association
        .receive()
        .map_err(|e| net(dest, format!("no response: {e}")))?;
    let Pdu::PData { data } = rsp else {
        return Err(net(
            dest,
            format!("unexpected answer {}", rsp.short_description()),
        ));
    };
    let first = data
        .first()
        .ok_or_else(|| net(dest, "empty response".into()))?;
    let rsp =
        Object::read_dataset_with_ts(first.data.as_slice(), &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .map_err(|e| net(dest, format!("unreadable response: {e}")))?;
    let status = rsp
        .element(tags::STATUS)
        .ok()
        .and_then(|e| e.to_int::<u16>().ok())
        .ok_or_else(|| net(dest, "response without status".into()))?;
    if status != 0 {
        return Err(DicomError::StoreStatus {
            peer: dest.to_string(),
            sop_instance_uid: sop_instance_uid.to_owned(),
            status,
        });
    }
    Ok(())
}

/// Retry timing of the outbox: `base · 2^(attempts − 1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The wait after `attempts` failed attempts (≥ 1).
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// The persisted state of one outbox job (`job.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    /// The files of the job, relative to its folder.
    pub files: Vec<String>,
    /// SOP Instance UIDs already acknowledged by the destination.
    pub acknowledged: Vec<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time (Unix seconds).
    pub next_attempt_unix_s: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// What one [`Outbox::deliver_due`] pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryReport {
    /// Jobs delivered completely (moved to `sent/`).
    pub delivered: Vec<String>,
    /// Jobs that failed this time, with the error; retried later.
    pub failed: Vec<(String, String)>,
    /// Jobs not yet due.
    pub waiting: usize,
}

/// Folder of delivery jobs: `pending/<job>/` (files + `job.json`), `sent/<job>/`.
#[derive(Debug, Clone)]
pub struct Outbox {
    root: PathBuf,
}

const JOB_FILE: &str = "job.json";

fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Outbox {
    /// Opens (creating) the outbox at `root`. Jobs of an earlier run are still pending;
    /// a job being built (`pending/.<job>`, an enqueue interrupted before its rename) is
    /// removed.
    pub fn open(root: &Path) -> Result<Outbox, DicomError> {
        let outbox = Outbox {
            root: root.to_path_buf(),
        };
        for d in [outbox.pending(), outbox.sent()] {
            std::fs::create_dir_all(&d).map_err(|e| DicomError::io(&d, e))?;
        }
        let pending = outbox.pending();
        for entry in std::fs::read_dir(&pending)
            .map_err(|e| DicomError::io(&pending, e))?
            .flatten()
        {
            let job = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if job.is_dir() && (hidden || !job.join(JOB_FILE).is_file()) {
                tracing::warn!(job = %job.display(), "removing a job whose enqueue was interrupted");
                let _ = std::fs::remove_dir_all(&job);
            }
        }
        Ok(outbox)
    }

    fn pending(&self) -> PathBuf {
        self.root.join("pending")
    }
    /// Folder of delivered jobs.
    pub fn sent(&self) -> PathBuf {
        self.root.join("sent")
    }

    fn jobs(&self) -> Result<Vec<PathBuf>, DicomError> {
        let pending = self.pending();
        let mut jobs: Vec<PathBuf> = std::fs::read_dir(&pending)
            .map_err(|e| DicomError::io(&pending, e))?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        jobs.sort();
        Ok(jobs)
    }

    /// Names of the pending jobs.
    pub fn pending_jobs(&self) -> Result<Vec<String>, DicomError> {
        Ok(self
            .jobs()?
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    /// Copies `files` into a new job `name` (sanitised; made unique), due now. The job is
    /// built in `pending/.<job>` and appears by one rename once complete, so a delivery
    /// pass running beside never sees half a job. Not safe against a second enqueuer
    /// running at the same time (one process owns an outbox).
    pub fn enqueue(&self, name: &str, files: &[PathBuf]) -> Result<String, DicomError> {
        let base = sanitize::path_component(name);
        let base = base.trim_start_matches('.');
        let base = if base.is_empty() { "job" } else { base };
        let mut job_name = base.to_owned();
        let mut n = 1;
        while self.pending().join(&job_name).exists() || self.sent().join(&job_name).exists() {
            job_name = format!("{base}.{n}");
            n += 1;
        }
        let dir = self.pending().join(format!(".{job_name}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| DicomError::io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| DicomError::io(&dir, e))?;
        let mut names = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let target_name = format!("{i:05}.dcm");
            let bytes = std::fs::read(f).map_err(|e| DicomError::io(f, e))?;
            strokeseg_io::atomic::write_atomically(&dir.join(&target_name), &bytes)?;
            names.push(target_name);
        }
        let state = JobState {
            files: names,
            acknowledged: Vec::new(),
            attempts: 0,
            next_attempt_unix_s: 0,
            last_error: None,
        };
        strokeseg_io::atomic::write_json_atomically(&dir.join(JOB_FILE), &state)?;
        let target = self.pending().join(&job_name);
        std::fs::rename(&dir, &target).map_err(|e| DicomError::io(&target, e))?;
        if let Ok(d) = std::fs::File::open(self.pending()) {
            let _ = d.sync_all();
        }
        Ok(job_name)
    }

    /// Removes the delivered jobs in `sent/` delivered more than `keep` before `now` (the
    /// time of the last write of their `job.json`, just before the move to `sent/`); returns
    /// their names. See [`crate::retention`].
    pub fn prune_sent(&self, keep: Duration, now: SystemTime) -> Result<Vec<String>, DicomError> {
        crate::retention::prune_older_than(&self.sent(), keep, now, Some(JOB_FILE))
    }

    /// The state of pending job `name`.
    pub fn state(&self, name: &str) -> Result<JobState, DicomError> {
        let path = self
            .pending()
            .join(sanitize::path_component(name))
            .join(JOB_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| DicomError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| DicomError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })
    }

    /// Tries every job that is due at `now`: sends its files not yet acknowledged (the
    /// acknowledged ones are recorded after each success, so a restart resends at most
    /// the one in flight), moves a finished job to `sent/`, and on failure records the
    /// error and the next attempt (`backoff`).
    pub fn deliver_due(
        &self,
        dest: &Destination,
        calling_ae: &str,
        now: SystemTime,
        backoff: &Backoff,
    ) -> Result<DeliveryReport, DicomError> {
        let mut report = DeliveryReport::default();
        for job in self.jobs()? {
            let name = job
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let state_path = job.join(JOB_FILE);
            let mut state = self.state(&name)?;
            if state.next_attempt_unix_s > unix_s(now) {
                report.waiting += 1;
                continue;
            }
            let mut todo = Vec::new();
            for f in &state.files {
                let path = job.join(f);
                let sop = outgoing(&path)?.sop_instance_uid;
                if !state.acknowledged.contains(&sop) {
                    todo.push(path);
                }
            }
            let mut acknowledged = state.acknowledged.clone();
            let result = send_files_with(dest, calling_ae, &todo, |sop| {
                acknowledged.push(sop.to_owned());
                let progress = JobState {
                    acknowledged: acknowledged.clone(),
                    ..state.clone()
                };
                if let Err(e) = strokeseg_io::atomic::write_json_atomically(&state_path, &progress)
                {
                    tracing::warn!(error = %e, "could not record delivery progress");
                }
            });
            state.acknowledged = acknowledged;
            match result {
                Ok(()) => {
                    let target = self.sent().join(&name);
                    strokeseg_io::atomic::write_json_atomically(&state_path, &state)?;
                    std::fs::rename(&job, &target).map_err(|e| DicomError::io(&job, e))?;
                    tracing::info!(job = name, %dest, "delivered");
                    report.delivered.push(name);
                }
                Err(e) => {
                    state.attempts += 1;
                    let wait = backoff.delay(state.attempts);
                    state.next_attempt_unix_s = unix_s(now + wait);
                    state.last_error = Some(e.to_string());
                    strokeseg_io::atomic::write_json_atomically(&state_path, &state)?;
                    tracing::warn!(job = name, %dest, attempts = state.attempts, retry_in_s = wait.as_secs(), error = %e, "delivery failed");
                    report.failed.push((name, e.to_string()));
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        let d = Destination::parse("PACS@127.0.0.1:104").ok();
        assert_eq!(
            d,
            Some(Destination {
                ae_title: "PACS".into(),
                host: "127.0.0.1".into(),
                port: 104
            })
        );
        for bad in ["PACS", "@h:1", "P@h", "P@h:x", "P@:1"] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(30),
        };
        let waits: Vec<u64> = (1..=6).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
    }
}

//! Storage SCP: C-ECHO and C-STORE on a configured AE title and port, calling AE titles
//! (and optionally peer addresses) on an allow-list, CT / Enhanced CT / Secondary Capture
//! storage in Implicit or Explicit VR Little Endian, Deflated Explicit VR Little Endian or
//! RLE Lossless (the compressed syntaxes with a pure-Rust decoder); every other syntax is
//! refused at negotiation, with a log line, so the sender falls back to an accepted one.
//! Instances are spooled as received, in the negotiated syntax; the reader decodes.
//!
//! Every instance is streamed to `spool/incoming/<n>.dcm.tmp` as its P-DATA arrives (never
//! a whole instance, let alone a series, in memory), checked ([`validate_instance`]), and
//! published with [`strokeseg_io::atomic::publish_atomically`] (fsync, rename, folder
//! fsync) to `spool/studies/<study>/<series>/<sop>.dcm` — names sanitised — before the
//! C-STORE response is sent: an acknowledged instance survives `kill -9` and power loss.
//! A malformed instance gets a failure status and a log line; an identical second copy is
//! acknowledged once more without a second file; a different object under a stored SOP
//! Instance UID is refused (0x0111). A study is complete when nothing arrived for
//! `idle_seconds` ([`Spool::take_complete`]).
//!
//! This module moves files; it knows nothing about segmentation.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use dicom_core::{DataElement, VR, dicom_value};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::Association as _;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociation, ServerAssociationOptions};

use crate::attr::Object;
use crate::read::{InstanceLimits, validate_instance};
use crate::{DicomError, sanitize};

/// The storage classes accepted (plus Verification).
pub const ACCEPTED_SOP_CLASSES: &[&str] = &[
    uids::CT_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::VERIFICATION,
];

/// The storage classes accepted besides [`ACCEPTED_SOP_CLASSES`] when the SCP plays the
/// PACS ([`ScpConfig::archive`]): Segmentation, Enhanced and Comprehensive SR.
pub const ARCHIVE_SOP_CLASSES: &[&str] = &[
    uids::SEGMENTATION_STORAGE,
    uids::ENHANCED_SR_STORAGE,
    uids::COMPREHENSIVE_SR_STORAGE,
];

/// The transfer syntaxes accepted, in order of preference among those a sender proposes in
/// one presentation context: uncompressed, deflated (flate2, pure Rust) and RLE Lossless
/// (decoded by this crate). JPEG, JPEG-LS, JPEG 2000 and the rest are refused: no pure-Rust
/// decoder is linked for them, and the static aarch64-musl build takes no C codec.
pub const ACCEPTED_TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::RLE_LOSSLESS,
];

/// DIMSE status: success.
pub const STATUS_SUCCESS: u16 = 0x0000;
/// DIMSE status: out of resources (disk full, spool not writable).
pub const STATUS_OUT_OF_RESOURCES: u16 = 0xA700;
/// DIMSE status: cannot understand (malformed instance).
pub const STATUS_CANNOT_UNDERSTAND: u16 = 0xC000;
/// DIMSE status: duplicate SOP instance (a different object under a stored UID).
pub const STATUS_DUPLICATE: u16 = 0x0111;

/// How the SCP listens and whom it accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct ScpConfig {
    /// Our AE title (called AE title the peers must use).
    pub ae_title: String,
    /// Listen address (`0.0.0.0:11112`; tests use `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// Calling AE titles accepted; others are rejected at association.
    pub allowed_calling_ae_titles: Vec<String>,
    /// Peer addresses accepted; empty accepts any address.
    pub allowed_peers: Vec<IpAddr>,
    /// The spool folder.
    pub spool_dir: PathBuf,
    /// Largest PDU we receive, bytes.
    pub max_pdu_length: u32,
    /// Bounds on one instance.
    pub limits: InstanceLimits,
    /// A silent peer is dropped after this long, seconds.
    pub read_timeout_s: u64,
    /// A study is complete when nothing arrived for this long, seconds.
    pub idle_seconds: u64,
    /// Associations served at once; more are rejected (transiently) until one ends.
    pub max_associations: usize,
    /// Play the PACS (`demo --dicom`): also accept [`ARCHIVE_SOP_CLASSES`] and check only
    /// that an instance parses and names its study, series and instance (no image checks).
    pub archive: bool,
}

impl ScpConfig {
    /// A config with the defaults: PDUs of 64 KiB, 60 s read timeout, studies complete after
    /// 30 s idle, 8 associations at once, default limits.
    pub fn new(ae_title: &str, listen: SocketAddr, allowed: &[&str], spool_dir: &Path) -> Self {
        ScpConfig {
            ae_title: ae_title.into(),
            listen,
            allowed_calling_ae_titles: allowed.iter().map(|s| (*s).to_owned()).collect(),
            allowed_peers: Vec::new(),
            spool_dir: spool_dir.to_path_buf(),
            max_pdu_length: 65_536,
            limits: InstanceLimits::default(),
            read_timeout_s: 60,
            idle_seconds: 30,
            max_associations: 8,
            archive: false,
        }
    }

    /// Checks the AE titles (1–16 characters, no backslash or control characters) and
    /// that the allow-list is not empty.
    pub fn validate(&self) -> Result<(), DicomError> {
        let bad_ae = |ae: &str| {
            ae.trim().is_empty() || ae.len() > 16 || ae.chars().any(|c| c == '\\' || c.is_control())
        };
        if bad_ae(&self.ae_title) {
            return Err(DicomError::Config {
                field: "ae_title",
                reason: format!(
                    "{:?}: 1–16 characters, no backslash or control characters",
                    self.ae_title
                ),
            });
        }
        if self.allowed_calling_ae_titles.is_empty() {
            return Err(DicomError::Config {
                field: "allowed_calling_ae_titles",
                reason: "empty: no sender could associate".into(),
            });
        }
        if let Some(ae) = self.allowed_calling_ae_titles.iter().find(|a| bad_ae(a)) {
            return Err(DicomError::Config {
                field: "allowed_calling_ae_titles",
                reason: format!("{ae:?} is not an AE title"),
            });
        }
        Ok(())
    }
}

/// What the SCP did, in order (also logged with `tracing`).
#[derive(Debug, Clone, PartialEq)]
pub enum ScpEvent {
    /// An association was accepted.
    Associated {
        /// Calling AE title.
        calling_ae: String,
        /// Peer address.
        peer: SocketAddr,
    },
    /// An association was rejected (calling AE title or peer address not allowed).
    Rejected {
        /// Calling AE title.
        calling_ae: String,
        /// Peer address.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A C-ECHO was answered.
    Echo,
    /// An instance is durable in the spool and was acknowledged.
    Stored {
        /// SOP Instance UID.
        sop_instance_uid: String,
        /// Where it is.
        path: PathBuf,
    },
    /// A second, identical copy of a stored instance was acknowledged without a new file.
    Duplicate {
        /// SOP Instance UID.
        sop_instance_uid: String,
    },
    /// A proposed presentation context of an accepted storage class was refused at
    /// negotiation: no accepted transfer syntax among those proposed.
    ContextRefused {
        /// The peer's AE title.
        calling_ae: String,
        /// The abstract syntax (SOP Class UID) proposed.
        abstract_syntax: String,
        /// Why.
        reason: String,
    },
    /// An instance was refused with a failure status.
    Failed {
        /// SOP Instance UID (from the command).
        sop_instance_uid: String,
        /// The DIMSE status sent.
        status: u16,
        /// Why.
        reason: String,
    },
}

/// The spool: `incoming/` (instances being received), `studies/<study>/<series>/` (durable,
/// acknowledged instances), `complete/` (studies handed on after `idle_seconds`).
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Opens (creating) the spool at `root` and removes what an interrupted run left in
    /// `incoming/`: those instances were never acknowledged, the sender resends them.
    pub fn open(root: &Path) -> Result<Spool, DicomError> {
        let spool = Spool {
            root: root.to_path_buf(),
        };
        for dir in [spool.incoming(), spool.studies(), spool.complete()] {
            std::fs::create_dir_all(&dir).map_err(|e| DicomError::io(&dir, e))?;
        }
        let incoming = spool.incoming();
        let mut removed = 0usize;
        for entry in std::fs::read_dir(&incoming)
            .map_err(|e| DicomError::io(&incoming, e))?
            .flatten()
        {
            if std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::warn!(removed, spool = %root.display(), "removed unacknowledged partial instances of an interrupted run");
        }
        Ok(spool)
    }

    /// The spool folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
    fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }
    /// Folder of the studies still receiving.
    pub fn studies(&self) -> PathBuf {
        self.root.join("studies")
    }
    /// Folder of the complete studies.
    pub fn complete(&self) -> PathBuf {
        self.root.join("complete")
    }

    /// Moves every study of `studies/` in which nothing arrived for `idle` into
    /// `complete/<study>[.<n>]` (a rename: atomic) and returns the new folders. An instance
    /// of the study arriving later starts a new partial study, completed in turn.
    pub fn take_complete(
        &self,
        idle: Duration,
        now: SystemTime,
    ) -> Result<Vec<PathBuf>, DicomError> {
        let studies = self.studies();
        let mut done = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&studies)
            .map_err(|e| DicomError::io(&studies, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for study in entries {
            let newest = newest_mtime(&study)?;
            if newest.is_some_and(|t| now.duration_since(t).unwrap_or_default() < idle) {
                continue;
            }
            let name = study
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut target = self.complete().join(&name);
            let mut n = 1;
            while target.exists() {
                target = self.complete().join(format!("{name}.{n}"));
                n += 1;
            }
            std::fs::rename(&study, &target).map_err(|e| DicomError::io(&study, e))?;
            sync_dir(&self.complete());
            sync_dir(&studies);
            tracing::info!(study = %target.display(), "study complete (idle)");
            done.push(target);
        }
        Ok(done)
    }
}

fn newest_mtime(dir: &Path) -> Result<Option<SystemTime>, DicomError> {
    let mut newest: Option<SystemTime> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)
            .map_err(|e| DicomError::io(&d, e))?
            .flatten()
        {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            }
            if let Ok(t) = meta.modified() {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    Ok(newest)
}

/// Best effort: not every file system can sync a folder.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The calling AE / peer address allow-list, checked while the association is negotiated.
struct AllowList {
    calling: Vec<String>,
    peer: SocketAddr,
    peer_allowed: bool,
    busy: bool,
    events: Option<std::sync::mpsc::Sender<ScpEvent>>,
}

impl AccessControl for AllowList {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let calling = calling_ae_title.trim();
        let (verdict, reason) = if !self.peer_allowed {
            (
                Err(AssociationRJServiceUserReason::NoReasonGiven),
                "peer address not on the allow-list".to_owned(),
            )
        } else if self.busy {
            (
                Err(AssociationRJServiceUserReason::NoReasonGiven),
                "too many associations at once".to_owned(),
            )
        } else if called_ae_title.trim() != this_ae_title.trim() {
            (
                Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
                format!(
                    "called AE title {:?} is not ours ({this_ae_title:?})",
                    called_ae_title.trim()
                ),
            )
        } else if !self.calling.iter().any(|a| a.trim() == calling) {
            (
                Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
                "calling AE title not on the allow-list".to_owned(),
            )
        } else {
            (Ok(()), String::new())
        };
        if verdict.is_err() {
            tracing::warn!(calling_ae = calling, peer = %self.peer, %reason, "association rejected");
            if let Some(tx) = &self.events {
                let _ = tx.send(ScpEvent::Rejected {
                    calling_ae: calling.to_owned(),
                    peer: self.peer,
                    reason,
                });
            }
        }
        verdict
    }
}

/// A bound Storage SCP.
pub struct StorageScp {
    config: Arc<ScpConfig>,
    listener: TcpListener,
    spool: Spool,
    events: Option<std::sync::mpsc::Sender<ScpEvent>>,
    counter: Arc<AtomicU64>,
    active: Arc<std::sync::atomic::AtomicUsize>,
}

impl StorageScp {
    /// Validates `config`, opens the spool (cleaning `incoming/`) and binds the port.
    pub fn bind(config: ScpConfig) -> Result<StorageScp, DicomError> {
        config.validate()?;
        let spool = Spool::open(&config.spool_dir)?;
        let listener = TcpListener::bind(config.listen).map_err(|e| DicomError::Network {
            peer: config.listen.to_string(),
            reason: format!("cannot listen: {e}"),
        })?;
        Ok(StorageScp {
            config: Arc::new(config),
            listener,
            spool,
            events: None,
            counter: Arc::new(AtomicU64::new(0)),
            active: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        })
    }

    /// Sends every [`ScpEvent`] to `tx` as well as to the log.
    pub fn with_events(mut self, tx: std::sync::mpsc::Sender<ScpEvent>) -> Self {
        self.events = Some(tx);
        self
    }

    /// The address it listens on (the port chosen when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, DicomError> {
        self.listener.local_addr().map_err(|e| DicomError::Network {
            peer: self.config.listen.to_string(),
            reason: e.to_string(),
        })
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The studies complete at `now` (nothing arrived for `idle_seconds`), moved to the
    /// spool's `complete/` ([`Spool::take_complete`]).
    pub fn take_complete(&self, now: SystemTime) -> Result<Vec<PathBuf>, DicomError> {
        self.spool
            .take_complete(Duration::from_secs(self.config.idle_seconds), now)
    }

    /// Accepts associations until `stop` is set, one thread per association.
    pub fn serve(&self, stop: &AtomicBool) -> Result<(), DicomError> {
        let addr = self.local_addr()?;
        self.listener
            .set_nonblocking(true)
            .map_err(|e| DicomError::Network {
                peer: addr.to_string(),
                reason: e.to_string(),
            })?;
        tracing::info!(ae_title = %self.config.ae_title, %addr, "storage SCP listening");
        while !stop.load(Ordering::Relaxed) {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let config = Arc::clone(&self.config);
                    let spool = self.spool.clone();
                    let events = self.events.clone();
                    let counter = Arc::clone(&self.counter);
                    let active = Arc::clone(&self.active);
                    let busy =
                        active.fetch_add(1, Ordering::SeqCst) >= self.config.max_associations;
                    std::thread::spawn(move || {
                        if let Err(e) = handle_association(
                            stream,
                            peer,
                            &config,
                            &spool,
                            events.as_ref(),
                            &counter,
                            busy,
                        ) {
                            tracing::warn!(%peer, error = %e, "association ended with an error");
                        }
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            }
        }
        Ok(())
    }
}

fn emit(events: Option<&std::sync::mpsc::Sender<ScpEvent>>, event: ScpEvent) {
    match &event {
        ScpEvent::Associated { calling_ae, peer } => {
            tracing::info!(calling_ae, %peer, "association accepted")
        }
        ScpEvent::Rejected { .. } => {}
        ScpEvent::Echo => tracing::info!("C-ECHO answered"),
        ScpEvent::ContextRefused {
            calling_ae,
            abstract_syntax,
            reason,
        } => tracing::warn!(
            calling_ae,
            abstract_syntax,
            reason,
            "presentation context refused at negotiation"
        ),
        ScpEvent::Stored {
            sop_instance_uid,
            path,
        } => {
            tracing::debug!(sop_instance_uid, path = %path.display(), "instance stored")
        }
        ScpEvent::Duplicate { sop_instance_uid } => {
            tracing::info!(
                sop_instance_uid,
                "duplicate instance acknowledged, kept the first copy"
            )
        }
        ScpEvent::Failed {
            sop_instance_uid,
            status,
            reason,
        } => {
            tracing::warn!(
                sop_instance_uid,
                status = format!("{status:#06x}"),
                reason,
                "instance refused"
            )
        }
    }
    if let Some(tx) = events {
        let _ = tx.send(event);
    }
}

/// The C-STORE being received.
struct Receiving {
    message_id: u16,
    sop_class_uid: String,
    sop_instance_uid: String,
    tmp_path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    bytes: u64,
    error: Option<(u16, String)>,
}

fn handle_association(
    stream: TcpStream,
    peer: SocketAddr,
    config: &ScpConfig,
    spool: &Spool,
    events: Option<&std::sync::mpsc::Sender<ScpEvent>>,
    counter: &AtomicU64,
    busy: bool,
) -> Result<(), DicomError> {
    let net = |reason: String| DicomError::Network {
        peer: peer.to_string(),
        reason,
    };
    let _ = stream.set_nonblocking(false);
    // Responses are small writes after the peer's data: without this, Nagle's algorithm
    // and the peer's delayed ACK add ~40 ms to every instance.
    let _ = stream.set_nodelay(true);
    let allow = AllowList {
        calling: config.allowed_calling_ae_titles.clone(),
        peer,
        peer_allowed: config.allowed_peers.is_empty() || config.allowed_peers.contains(&peer.ip()),
        busy,
        events: events.cloned(),
    };
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(allow)
        .ae_title(config.ae_title.as_str())
        .max_pdu_length(config.max_pdu_length)
        .strict(false)
        .read_timeout(Duration::from_secs(config.read_timeout_s.max(1)));
    for ts in ACCEPTED_TRANSFER_SYNTAXES {
        options = options.with_transfer_syntax(*ts);
    }
    for class in ACCEPTED_SOP_CLASSES {
        options = options.with_abstract_syntax(*class);
    }
    if config.archive {
        for class in ARCHIVE_SOP_CLASSES {
            options = options.with_abstract_syntax(*class);
        }
    }
    let mut association = match options.establish(stream) {
        Ok(a) => a,
        // Rejections were logged by the allow-list; anything else is the peer's problem.
        Err(e) => return Err(net(format!("association not established: {e}"))),
    };
    let calling_ae = association.peer_ae_title().trim().to_owned();
    emit(
        events,
        ScpEvent::Associated {
            calling_ae: calling_ae.clone(),
            peer,
        },
    );
    for pc in association.presentation_contexts() {
        let reason = match pc.reason {
            PresentationContextResultReason::Acceptance => {
                tracing::debug!(
                    calling_ae,
                    abstract_syntax = pc.abstract_syntax,
                    transfer_syntax = pc.transfer_syntax.trim_end_matches('\0'),
                    "presentation context accepted"
                );
                continue;
            }
            PresentationContextResultReason::TransferSyntaxesNotSupported => format!(
                "none of the proposed transfer syntaxes is accepted (accepted: {})",
                ACCEPTED_TRANSFER_SYNTAXES.join(", ")
            ),
            // storescu proposes every storage class it knows: not worth a warning each.
            _ => continue,
        };
        emit(
            events,
            ScpEvent::ContextRefused {
                calling_ae: calling_ae.clone(),
                abstract_syntax: pc.abstract_syntax.clone(),
                reason,
            },
        );
    }
    let mut command: Vec<u8> = Vec::new();
    let mut receiving: Option<Receiving> = None;
    loop {
        let pdu = match association.receive() {
            Ok(pdu) => pdu,
            Err(e) => {
                if let Some(r) = receiving.take() {
                    let _ = std::fs::remove_file(&r.tmp_path);
                }
                return Err(net(format!("receive: {e}")));
            }
        };
        match pdu {
            Pdu::PData { data } => {
                for pdv in data {
                    match pdv.value_type {
                        PDataValueType::Command => {
                            command.extend_from_slice(&pdv.data);
                            if !pdv.is_last {
                                continue;
                            }
                            let bytes = std::mem::take(&mut command);
                            let cmd = Object::read_dataset_with_ts(
                                bytes.as_slice(),
                                &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                            )
                            .map_err(|e| net(format!("unreadable command: {e}")))?;
                            let field = cmd
                                .element(tags::COMMAND_FIELD)
                                .ok()
                                .and_then(|e| e.to_int::<u16>().ok());
                            let message_id = cmd
                                .element(tags::MESSAGE_ID)
                                .ok()
                                .and_then(|e| e.to_int::<u16>().ok())
                                .unwrap_or(0);
                            match field {
                                Some(0x0030) => {
                                    send_response(
                                        &mut association,
                                        pdv.presentation_context_id,
                                        echo_response(message_id),
                                    )?;
                                    emit(events, ScpEvent::Echo);
                                }
                                Some(0x0001) => {
                                    let s =
                                        |tag| crate::attr::opt_str(&cmd, tag).unwrap_or_default();
                                    let n = counter.fetch_add(1, Ordering::Relaxed);
                                    let tmp_path = spool
                                        .incoming()
                                        .join(format!("{}-{n}.dcm.tmp", std::process::id()));
                                    let mut r = Receiving {
                                        message_id,
                                        sop_class_uid: s(tags::AFFECTED_SOP_CLASS_UID),
                                        sop_instance_uid: s(tags::AFFECTED_SOP_INSTANCE_UID),
                                        tmp_path,
                                        file: None,
                                        bytes: 0,
                                        error: None,
                                    };
                                    let ts = association
                                        .presentation_contexts()
                                        .iter()
                                        .find(|pc| pc.id == pdv.presentation_context_id)
                                        .map(|pc| pc.transfer_syntax.clone())
                                        .unwrap_or_default();
                                    match start_file(&r, &ts) {
                                        Ok(f) => r.file = Some(f),
                                        Err(e) => {
                                            r.error = Some((STATUS_OUT_OF_RESOURCES, e.to_string()))
                                        }
                                    }
                                    receiving = Some(r);
                                }
                                other => {
                                    tracing::warn!(command = ?other, "unsupported DIMSE command ignored");
                                }
                            }
                        }
                        PDataValueType::Data => {
                            let Some(r) = receiving.as_mut() else {
                                tracing::warn!("data without a C-STORE command ignored");
                                continue;
                            };
                            r.bytes += pdv.data.len() as u64;
                            if r.error.is_none() && r.bytes > config.limits.max_file_bytes {
                                // Keep reading the rest of the instance, write none of it.
                                r.file = None;
                                let _ = std::fs::remove_file(&r.tmp_path);
                                r.error = Some((
                                    STATUS_OUT_OF_RESOURCES,
                                    format!(
                                        "instance larger than {} bytes",
                                        config.limits.max_file_bytes
                                    ),
                                ));
                            }
                            if r.error.is_none()
                                && let Some(f) = r.file.as_mut()
                                && let Err(e) = f.write_all(&pdv.data)
                            {
                                r.error =
                                    Some((STATUS_OUT_OF_RESOURCES, format!("spool write: {e}")));
                            }
                            if pdv.is_last
                                && let Some(r) = receiving.take()
                            {
                                let (id, class, instance) = (
                                    r.message_id,
                                    r.sop_class_uid.clone(),
                                    r.sop_instance_uid.clone(),
                                );
                                let (status, comment) = finish_instance(r, spool, config, events);
                                let rsp = store_response(id, &class, &instance, status, &comment);
                                send_response(&mut association, pdv.presentation_context_id, rsp)?;
                            }
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = association.send(&Pdu::ReleaseRP);
                tracing::info!(calling_ae, "association released");
                return Ok(());
            }
            Pdu::AbortRQ { source } => {
                if let Some(r) = receiving.take() {
                    let _ = std::fs::remove_file(&r.tmp_path);
                }
                tracing::warn!(calling_ae, ?source, "association aborted by the peer");
                return Ok(());
            }
            other => tracing::warn!(pdu = %other.short_description(), "unexpected PDU ignored"),
        }
    }
}

/// Opens the staging file and writes preamble, `DICM` and the file meta group.
fn start_file(r: &Receiving, ts: &str) -> Result<std::io::BufWriter<std::fs::File>, DicomError> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(r.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(r.sop_instance_uid.as_str())
        .transfer_syntax(ts)
        .build()
        .map_err(|e| DicomError::Encode {
            what: "file meta".into(),
            reason: e.to_string(),
        })?;
    let file = std::fs::File::create(&r.tmp_path).map_err(|e| DicomError::io(&r.tmp_path, e))?;
    let mut w = std::io::BufWriter::new(file);
    w.write_all(&[0u8; 128])
        .and_then(|()| w.write_all(b"DICM"))
        .map_err(|e| DicomError::io(&r.tmp_path, e))?;
    meta.write(&mut w).map_err(|e| DicomError::Encode {
        what: "file meta".into(),
        reason: e.to_string(),
    })?;
    Ok(w)
}

/// Validates, de-duplicates and publishes a fully received instance; the status and
/// comment to answer with. The staging file never outlives this call.
fn finish_instance(
    mut r: Receiving,
    spool: &Spool,
    config: &ScpConfig,
    events: Option<&std::sync::mpsc::Sender<ScpEvent>>,
) -> (u16, String) {
    let sop = r.sop_instance_uid.clone();
    let fail = |status: u16, reason: String, tmp: &Path| {
        let _ = std::fs::remove_file(tmp);
        emit(
            events,
            ScpEvent::Failed {
                sop_instance_uid: sop.clone(),
                status,
                reason: reason.clone(),
            },
        );
        (status, reason)
    };
    if let Some(f) = r.file.take()
        && let Err(e) = f.into_inner().map_err(|e| e.into_error())
    {
        r.error
            .get_or_insert((STATUS_OUT_OF_RESOURCES, format!("spool write: {e}")));
    }
    if let Some((status, reason)) = r.error.take() {
        return fail(status, reason, &r.tmp_path);
    }
    let checked = if config.archive {
        archived_header(&r.tmp_path)
    } else {
        validate_instance(&r.tmp_path, &config.limits)
    };
    let header = match checked {
        Ok(h) => h,
        Err(e) => {
            return fail(
                STATUS_CANNOT_UNDERSTAND,
                e.to_string()
                    .replace(&*r.tmp_path.to_string_lossy(), "instance"),
                &r.tmp_path,
            );
        }
    };
    if header.sop_instance_uid != r.sop_instance_uid || header.sop_class_uid != r.sop_class_uid {
        return fail(
            STATUS_CANNOT_UNDERSTAND,
            format!(
                "data set SOP {} / {} differs from the command's {} / {}",
                header.sop_class_uid, header.sop_instance_uid, r.sop_class_uid, r.sop_instance_uid
            ),
            &r.tmp_path,
        );
    }
    let dir = spool
        .studies()
        .join(sanitize::path_component(&header.study_uid))
        .join(sanitize::path_component(&header.series_uid));
    let final_path = dir.join(format!(
        "{}.dcm",
        sanitize::path_component(&header.sop_instance_uid)
    ));
    if final_path.exists() {
        let same = std::fs::read(&final_path).ok() == std::fs::read(&r.tmp_path).ok();
        let _ = std::fs::remove_file(&r.tmp_path);
        if same {
            emit(
                events,
                ScpEvent::Duplicate {
                    sop_instance_uid: sop,
                },
            );
            return (STATUS_SUCCESS, String::new());
        }
        return fail(
            STATUS_DUPLICATE,
            "another object is stored under this SOP Instance UID".into(),
            &r.tmp_path,
        );
    }
    if !dir.is_dir() {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return fail(
                STATUS_OUT_OF_RESOURCES,
                format!("{}: {e}", dir.display()),
                &r.tmp_path,
            );
        }
        // The new folders' entries must be durable too before anything in them counts.
        if let Some(study_dir) = dir.parent() {
            sync_dir(study_dir);
            sync_dir(&spool.studies());
        }
    }
    if let Err(e) = strokeseg_io::atomic::publish_atomically(&r.tmp_path, &final_path) {
        return fail(STATUS_OUT_OF_RESOURCES, e.to_string(), &r.tmp_path);
    }
    emit(
        events,
        ScpEvent::Stored {
            sop_instance_uid: sop,
            path: final_path,
        },
    );
    (STATUS_SUCCESS, String::new())
}

/// The UIDs of any instance that parses (archive mode).
fn archived_header(path: &Path) -> Result<crate::read::InstanceHeader, DicomError> {
    let obj = dicom_object::open_file(path).map_err(|e| DicomError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let s = |tag| crate::attr::opt_str(&obj, tag).unwrap_or_default();
    let header = crate::read::InstanceHeader {
        path: path.to_path_buf(),
        sop_class_uid: s(tags::SOP_CLASS_UID),
        sop_instance_uid: s(tags::SOP_INSTANCE_UID),
        study_uid: s(tags::STUDY_INSTANCE_UID),
        series_uid: s(tags::SERIES_INSTANCE_UID),
        ..crate::read::InstanceHeader::default()
    };
    for (value, attribute) in [
        (&header.sop_instance_uid, "SOPInstanceUID"),
        (&header.study_uid, "StudyInstanceUID"),
        (&header.series_uid, "SeriesInstanceUID"),
    ] {
        if value.is_empty() {
            return Err(DicomError::BadAttribute {
                path: path.to_path_buf(),
                attribute,
                reason: "missing".into(),
            });
        }
    }
    Ok(header)
}

fn send_response(
    association: &mut ServerAssociation<TcpStream>,
    presentation_context_id: u8,
    command: Object,
) -> Result<(), DicomError> {
    let mut bytes = Vec::new();
    command
        .write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| DicomError::Encode {
            what: "DIMSE response".into(),
            reason: e.to_string(),
        })?;
    association
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes,
            }],
        })
        .map_err(|e| DicomError::Network {
            peer: association.peer_ae_title().to_owned(),
            reason: format!("send response: {e}"),
        })
}

fn echo_response(message_id: u16) -> Object {
    Object::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            dicom_value!(Str, uids::VERIFICATION),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [0x8030])),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [message_id]),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [0x0101]),
        ),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [STATUS_SUCCESS])),
    ])
}

/// A C-STORE-RSP command.
pub fn store_response(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    status: u16,
    comment: &str,
) -> Object {
    let mut elements = vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            dicom_value!(Str, sop_class_uid),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [0x8001])),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [message_id]),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [0x0101]),
        ),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [status])),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            dicom_value!(Str, sop_instance_uid),
        ),
    ];
    if !comment.is_empty() {
        // Error Comment is LO: at most 64 characters.
        let short: String = comment
            .chars()
            .filter(|c| !c.is_control() && *c != '\\')
            .take(64)
            .collect();
        elements.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            dicom_value!(Str, short),
        ));
    }
    Object::command_from_element_iter(elements)
}

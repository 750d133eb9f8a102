//! New DICOM UIDs: `2.25.<UUID as a decimal integer>` by default (PS3.5 B.2), or under a
//! site's registered root (`<root>.<decimal>`, at most 64 characters).

use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::DicomError;

/// The longest UID DICOM allows.
pub const MAX_UID_CHARS: usize = 64;

/// Makes UIDs under one root. Random ones ([`UidRoot::generate`]) differ across processes
/// and calls; [`UidRoot::derive`] gives the same UID for the same name (generated test
/// series, so a phantom study has the same UIDs every run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidRoot {
    root: String,
}

impl Default for UidRoot {
    fn default() -> Self {
        UidRoot {
            root: "2.25".into(),
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl UidRoot {
    /// A root such as `1.2.826.0.1.3680043.10.999`: digits and dots, no empty or
    /// zero-padded component, short enough to leave 20 digits for the suffix.
    pub fn new(root: &str) -> Result<UidRoot, DicomError> {
        let bad = |reason: String| DicomError::Config {
            field: "uid_root",
            reason,
        };
        if !is_valid_uid(root) {
            return Err(bad(format!(
                "{root:?} is not a UID (digits and dots, components without leading zeros)"
            )));
        }
        if root.len() + 1 + 20 > MAX_UID_CHARS {
            return Err(bad(format!(
                "{root:?} is {} characters; at most {} leave room for the suffix",
                root.len(),
                MAX_UID_CHARS - 21
            )));
        }
        Ok(UidRoot { root: root.into() })
    }

    /// The root itself.
    pub fn as_str(&self) -> &str {
        &self.root
    }

    /// A new UID, unique with overwhelming probability (time, process, counter, hashed).
    pub fn generate(&self) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let local = 0u8;
        let name = format!(
            "{nanos}:{}:{count}:{:p}",
            std::process::id(),
            std::ptr::addr_of!(local)
        );
        self.uid_of_hash(&Sha256::digest(name.as_bytes()))
    }

    /// The UID that stands for `name` under this root (name-based, deterministic).
    pub fn derive(&self, name: &str) -> String {
        self.uid_of_hash(&Sha256::digest(name.as_bytes()))
    }

    fn uid_of_hash(&self, hash: &[u8]) -> String {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        if self.root == "2.25" {
            // An RFC 9562 UUID: version 8 (custom), variant 10.
            bytes[6] = (bytes[6] & 0x0f) | 0x80;
            bytes[8] = (bytes[8] & 0x3f) | 0x80;
            format!("2.25.{}", u128::from_be_bytes(bytes))
        } else {
            let room = MAX_UID_CHARS - self.root.len() - 1;
            let mut digits = u128::from_be_bytes(bytes).to_string();
            digits.truncate(room.min(digits.len()));
            // No leading zero in a component; u128's decimal never starts with 0 unless 0.
            let digits = digits.trim_start_matches('0');
            let digits = if digits.is_empty() { "1" } else { digits };
            format!("{}.{digits}", self.root)
        }
    }
}

/// Whether `uid` is a syntactically valid UID (PS3.5 9.1): 1–64 characters, components of
/// digits separated by single dots, no leading zero unless the component is `0`.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID_CHARS
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_distinct() {
        let root = UidRoot::default();
        let a = root.generate();
        let b = root.generate();
        assert_ne!(a, b);
        assert!(is_valid_uid(&a), "{a}");
        assert!(a.starts_with("2.25."));
        assert_eq!(root.derive("x"), root.derive("x"));
        let site = UidRoot::new("1.2.826.0.1.3680043.10.999").unwrap();
        let c = site.generate();
        assert!(is_valid_uid(&c) && c.len() <= 64 && c.starts_with("1.2.826.0.1.3680043.10.999."));
    }

    #[test]
    fn bad_roots_are_refused() {
        for root in ["", "1..2", "1.02", "1.2.a", &"1.2".repeat(30)] {
            assert!(UidRoot::new(root).is_err(), "{root}");
        }
    }
}

//! The access and disclosure log (käyttöloki, luovutusloki).
//!
//! The law (703/2023 §11, 906/2019 §17) gives a person the right to know who processed their data, to
//! whom it was disclosed and on what basis. So every call is logged, reads and refusals included, in
//! the transaction of its effect; a call that changed nothing is logged on its own.
//!
//! Logs are personal data too, and an access log that holds identity codes in clear would be the most
//! sensitive table of all. Events therefore carry a keyed pseudonym ([`Pseudonymizer`]): an auditor
//! who is given an identity code can find its events, but the log alone reveals no one.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::PersonalIdentityCode;

pub mod leaf;
pub mod merkle;
pub mod note;

/// HMAC-SHA256 under a server key: the same person always gets the same pseudonym, and without the
/// key a pseudonym cannot be tested against a guessed identity code (the code space is small enough
/// to enumerate, so an unkeyed hash would protect nothing).
#[derive(Clone)]
pub struct Pseudonymizer {
    key: Vec<u8>,
    /// Keys rotated out: pseudonyms under them are still looked up, never written.
    previous: Vec<Vec<u8>>,
}

/// The shortest key accepted: as long as the HMAC output, as RFC 2104 recommends.
pub const MIN_KEY_BYTES: usize = 32;

impl Pseudonymizer {
    pub fn new(key: Vec<u8>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            key.len() >= MIN_KEY_BYTES,
            "the pseudonym key must be at least {MIN_KEY_BYTES} bytes, got {}",
            key.len()
        );
        Ok(Self {
            key,
            previous: Vec::new(),
        })
    }

    /// Adds keys that were in use before the current one. After a rotation, what was recorded under
    /// an old key stays findable by identity code for as long as the old key is kept here.
    pub fn with_previous(mut self, previous: Vec<Vec<u8>>) -> anyhow::Result<Self> {
        for key in &previous {
            anyhow::ensure!(
                key.len() >= MIN_KEY_BYTES,
                "a previous pseudonym key is shorter than {MIN_KEY_BYTES} bytes"
            );
        }
        self.previous = previous;
        Ok(self)
    }

    /// Lower-case hex of HMAC-SHA256(key, identity code), under the current key: what is written.
    pub fn pseudonym(&self, code: &PersonalIdentityCode) -> String {
        hmac_hex(&self.key, code)
    }

    /// The fingerprint of the current key (`crate::keys`): what the database records it was
    /// written with.
    pub fn fingerprint(&self) -> String {
        crate::keys::fingerprint(crate::keys::KeyPurpose::Pseudonym, &self.key)
    }

    /// The fingerprints of the previous keys, in the order given.
    pub fn previous_fingerprints(&self) -> Vec<String> {
        self.previous
            .iter()
            .map(|key| crate::keys::fingerprint(crate::keys::KeyPurpose::Pseudonym, key))
            .collect()
    }

    /// The pseudonyms `code` may have been recorded under: the current one first, then each previous
    /// key's. What lookups by identity code match.
    pub fn lookup(&self, code: &PersonalIdentityCode) -> Vec<String> {
        std::iter::once(&self.key)
            .chain(&self.previous)
            .map(|key| hmac_hex(key, code))
            .collect()
    }
}

fn hmac_hex(key: &[u8], code: &PersonalIdentityCode) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(code.as_str().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(<key>)")
    }
}

/// One delivery of a person's data to an organisation, with its basis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosure {
    pub recipient: String,
    pub resource: String,
    pub subject_pseudonym: String,
    /// `consents/{uuid}` or a statutory ground.
    pub basis: String,
    /// For a consent basis, its state at the moment of disclosure.
    pub consent_state: Option<String>,
    /// For a consent basis, its version (the `v…` of its etag) at the moment of disclosure: which
    /// record of the consent, with which events before it, the disclosure relied on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_version: Option<i64>,
}

/// An audit event as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: DateTime<Utc>,
    /// Organisation id of the caller; empty when its certificate named none.
    pub organization: String,
    pub user_id: String,
    /// Full gRPC method path.
    pub method: String,
    pub resources: Vec<String>,
    pub subject_pseudonyms: Vec<String>,
    pub status_code: i32,
    pub correlation_id: String,
    pub disclosures: Vec<Disclosure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditEvent {
    pub sequence: i64,
    pub record: AuditRecord,
    /// Its leaf in the Merkle tree, once the sequencer has integrated it.
    pub leaf_index: Option<i64>,
}

/// Filters of `ListAuditEvents`, all optional and combined with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Any of these pseudonyms (one person under the current and previous keys); empty: anyone.
    pub subject_pseudonyms: Vec<String>,
    pub organization: Option<String>,
    pub user_id: Option<String>,
    pub method: Option<String>,
    pub resource: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Keyset cursor: events after this sequence.
    pub after_sequence: Option<i64>,
    pub limit: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_is_keyed_and_distinguishes_century_signs() {
        let a = Pseudonymizer::new(vec![1; 32]).expect("key");
        let b = Pseudonymizer::new(vec![2; 32]).expect("key");
        let code = PersonalIdentityCode::parse("131052-308T").expect("valid");
        let other_century = PersonalIdentityCode::parse("131052A308T").expect("valid");
        assert_eq!(a.pseudonym(&code), a.pseudonym(&code));
        assert_ne!(a.pseudonym(&code), b.pseudonym(&code));
        assert_ne!(a.pseudonym(&code), a.pseudonym(&other_century));
        assert_eq!(a.pseudonym(&code).len(), 64);
        assert!(!a.pseudonym(&code).contains("131052"));
    }

    #[test]
    fn lookups_find_pseudonyms_under_previous_keys() {
        let old = Pseudonymizer::new(vec![1; 32]).expect("key");
        let rotated = Pseudonymizer::new(vec![2; 32])
            .expect("key")
            .with_previous(vec![vec![1; 32]])
            .expect("old key");
        let code = PersonalIdentityCode::parse("131052-308T").expect("valid");
        assert_eq!(
            rotated.lookup(&code),
            vec![rotated.pseudonym(&code), old.pseudonym(&code)]
        );
        assert_ne!(
            rotated.pseudonym(&code),
            old.pseudonym(&code),
            "writes use the new key"
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Pseudonymizer::new(vec![0; 31]).is_err());
    }
}

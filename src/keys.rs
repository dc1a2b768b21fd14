//! Key fingerprints: the database remembers which keys its data was written with, without holding them.
//!
//! A pseudonym (`audit::Pseudonymizer`) is an HMAC of an identity code under a server key. Under another
//! key every lookup computes other pseudonyms and silently finds nothing: an auditor's query or a
//! person's subject access report comes back empty, without an error. So the database records a
//! fingerprint of the key it was written with, the server compares it at start ([`check`]) and refuses
//! a key it does not know.
//!
//! The fingerprint is HMAC-SHA256 under the key of a fixed label naming the key's purpose, never the key
//! or a plain hash of it: it proves which key is in use to anyone holding that key, tells nothing about
//! the key to anyone else, and is never equal to a value the key computes in use (an identity code
//! cannot be the label). A purpose per key ([`KeyPurpose`]) gives one row per key in the store
//! (`store::keys`): the pseudonym key and the data key (`crate::sealing`) have the same check.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What a key is for: one fingerprint is recorded per purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The key of the identity-code pseudonyms (`--pseudonym-key-file`).
    Pseudonym,
    /// The key personal content is sealed with at rest (`--data-key-file`, `crate::sealing`).
    Data,
}

impl KeyPurpose {
    /// The purpose as stored (`key_fingerprints.purpose`) and in the fingerprinted label.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Pseudonym => "pseudonym",
            KeyPurpose::Data => "data",
        }
    }
}

/// The fingerprint of `key` used for `purpose`: lower-case hex of
/// HMAC-SHA256(key, "referral-exchange key fingerprint v1: <purpose>").
pub fn fingerprint(purpose: KeyPurpose, key: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(b"referral-exchange key fingerprint v1: ");
    mac.update(purpose.as_str().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The start of a fingerprint, enough to tell keys apart in a message or a log line.
pub fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

/// What a server started with `current` (and the rotated-out `previous` keys) does about the
/// fingerprint the database recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Nothing recorded (a new database, or one from before fingerprints): record `current`.
    Record,
    /// The database was written with the current key.
    Same,
    /// Written with a previous key: a rotation. Record `current` in place of `from`; the previous key
    /// keeps what was written under it findable.
    Rotate { from: String },
    /// Written with a key the server was not given: refuse to start.
    Unknown { recorded: String },
}

/// Compares the recorded fingerprint with the keys the server was given.
pub fn check(recorded: Option<&str>, current: &str, previous: &[String]) -> KeyCheck {
    match recorded {
        None => KeyCheck::Record,
        Some(r) if r == current => KeyCheck::Same,
        Some(r) if previous.iter().any(|p| p == r) => KeyCheck::Rotate { from: r.to_owned() },
        Some(r) => KeyCheck::Unknown {
            recorded: r.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_depends_on_the_key_and_reveals_neither_key_nor_pseudonyms() {
        let a = fingerprint(KeyPurpose::Pseudonym, &[1; 32]);
        assert_eq!(a, fingerprint(KeyPurpose::Pseudonym, &[1; 32]), "stable");
        assert_ne!(a, fingerprint(KeyPurpose::Pseudonym, &[2; 32]));
        assert_eq!(a.len(), 64);
        assert!(!a.contains(&hex::encode([1u8; 32])));
        assert_eq!(short(&a).len(), 16);
    }

    #[test]
    fn the_recorded_fingerprint_decides_record_same_rotate_or_refuse() {
        let (old, new) = ("old".to_owned(), "new".to_owned());
        let previous = [old.clone()];
        assert_eq!(check(None, &new, &[]), KeyCheck::Record);
        assert_eq!(check(Some("new"), &new, &previous), KeyCheck::Same);
        assert_eq!(
            check(Some("old"), &new, &previous),
            KeyCheck::Rotate { from: old.clone() }
        );
        assert_eq!(
            check(Some("old"), &new, &[]),
            KeyCheck::Unknown {
                recorded: old.clone()
            }
        );
        assert_eq!(
            check(Some("other"), &new, &previous),
            KeyCheck::Unknown {
                recorded: "other".into()
            }
        );
    }
}

//! Sealing personal content at rest: identity codes, names, phones and free texts are written to the
//! database as XChaCha20-Poly1305 ciphertext under a data key the database never holds.
//!
//! A sealed value is text, so every column keeps its type on both engines:
//!
//! ```text
//! s1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>
//! ```
//!
//! - `s1`: this format. A value without the prefix was written before sealing existed: it is read
//!   as it is, and `referral-exchange keys rewrap` seals it (see deploy/README.md, "Keys").
//! - the key id: the first 16 hex digits of the data key's fingerprint (`crate::keys`), so a reader
//!   picks the right key among the current and the previous ones, and a rewrap finds the values
//!   still under an old key.
//! - a random 24-byte nonce per value (XChaCha's nonces are long enough to draw at random).
//! - the associated data binds the value to its place, [`Place`]: the column and the row's key. A
//!   ciphertext copied into another row or column does not open: nobody with write access to the
//!   database can swap one person's identity code into another's referral unnoticed.
//!
//! The key that encrypts is derived from the key file's bytes (HMAC-SHA256 under a fixed label),
//! never used for anything else. Lookups by identity code do not need the data key: they go through
//! the keyed pseudonym (`audit::Pseudonymizer`), a different key.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::keys::{KeyPurpose, fingerprint};

/// The prefix of every sealed value in this format.
const PREFIX: &str = "s1.";
const NONCE_BYTES: usize = 24;

/// Where a sealed value lives: its column (`table.column`) and the row's key. Bound into the
/// ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub column: &'static str,
    pub row: &'a [u8],
}

impl<'a> Place<'a> {
    pub fn new(column: &'static str, row: &'a [u8]) -> Self {
        Self { column, row }
    }

    fn associated_data(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + self.column.len() + self.row.len());
        aad.extend_from_slice(b"referral-exchange sealed v1\0");
        aad.extend_from_slice(self.column.as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.row);
        aad
    }
}

/// Why a stored value does not open. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed under data key {0}, which the server was not given (--previous-data-key-file)")]
    UnknownKey(String),
    #[error("the sealed value is malformed")]
    Malformed,
    #[error(
        "the sealed value does not authenticate for its place (altered, or moved from another row)"
    )]
    Forged,
}

struct DataKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl DataKey {
    fn new(material: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(material)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(b"referral-exchange data key v1: XChaCha20-Poly1305");
        let derived: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            id: fingerprint(KeyPurpose::Data, material)[..16].to_owned(),
            cipher: XChaCha20Poly1305::new(&derived.into()),
        }
    }
}

/// The data keys a server was given: the current one seals, every one opens.
pub struct DataKeys {
    current: DataKey,
    previous: Vec<DataKey>,
    current_fingerprint: String,
    previous_fingerprints: Vec<String>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl DataKeys {
    /// Keys from the key files' bytes (at least `audit::MIN_KEY_BYTES`, checked where they are read).
    pub fn new(current: &[u8], previous: &[Vec<u8>]) -> Self {
        Self {
            current: DataKey::new(current),
            previous: previous.iter().map(|k| DataKey::new(k)).collect(),
            current_fingerprint: fingerprint(KeyPurpose::Data, current),
            previous_fingerprints: previous
                .iter()
                .map(|k| fingerprint(KeyPurpose::Data, k))
                .collect(),
        }
    }

    /// A fresh random key, for tests and benchmarks that make their own database.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self::new(&key, &[])
    }

    /// The id sealed values under the current key carry.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Fingerprints for the database's record of keys (`crate::keys`).
    pub fn fingerprint(&self) -> &str {
        &self.current_fingerprint
    }

    pub fn previous_fingerprints(&self) -> &[String] {
        &self.previous_fingerprints
    }

    /// `plaintext` sealed under the current key for `place`.
    pub fn seal(&self, place: Place<'_>, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .current
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &place.associated_data(),
                },
            )
            .unwrap_or_else(|_| unreachable!("XChaCha20-Poly1305 seals any length we store"));
        let mut bytes = Vec::with_capacity(NONCE_BYTES + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}.{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// The plaintext of a stored value at `place`. A value written before sealing (no prefix) is
    /// returned as it is.
    pub fn open(&self, place: Place<'_>, stored: &str) -> Result<String, OpenError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, body) = rest.split_once('.').ok_or(OpenError::Malformed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_BYTES {
            return Err(OpenError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        let plain = key
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &place.associated_data(),
                },
            )
            .map_err(|_| OpenError::Forged)?;
        String::from_utf8(plain).map_err(|_| OpenError::Malformed)
    }

    /// Whether `stored` is sealed under the current key (a rewrap leaves it alone).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(id, _)| id == self.current.id)
    }

    /// `stored` sealed under the current key: opened and sealed again, or `None` when it already is.
    pub fn rewrap(&self, place: Place<'_>, stored: &str) -> Result<Option<String>, OpenError> {
        if self.is_current(stored) {
            return Ok(None);
        }
        Ok(Some(self.seal(place, &self.open(place, stored)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &[u8] = b"row-1";

    #[test]
    fn a_sealed_value_opens_in_its_place_only_and_hides_the_plaintext() {
        let keys = DataKeys::new(&[7; 32], &[]);
        let place = Place::new("referrals.subject_code", ROW);
        let sealed = keys.seal(place, "010180-9026");
        assert!(sealed.starts_with(&format!("s1.{}.", keys.current_id())));
        assert!(!sealed.contains("010180"));
        assert_ne!(
            sealed,
            keys.seal(place, "010180-9026"),
            "a fresh nonce each time"
        );
        assert_eq!(keys.open(place, &sealed).as_deref(), Ok("010180-9026"));
        assert_eq!(
            keys.open(Place::new("referrals.subject_code", b"row-2"), &sealed),
            Err(OpenError::Forged),
            "moved to another row"
        );
        assert_eq!(
            keys.open(Place::new("referrals.subject_name", ROW), &sealed),
            Err(OpenError::Forged),
            "moved to another column"
        );
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(keys.open(place, &altered), Err(OpenError::Forged));
        assert_eq!(
            keys.open(place, "s1.nodot"),
            Err(OpenError::Malformed),
            "no key id separator"
        );
    }

    #[test]
    fn rotation_opens_old_values_and_rewrap_moves_them_to_the_current_key() {
        let old = DataKeys::new(&[1; 32], &[]);
        let place = Place::new("consents.evidence_reference", ROW);
        let under_old = old.seal(place, "paper form 12");
        let rotated = DataKeys::new(&[2; 32], &[vec![1; 32]]);
        assert_ne!(old.current_id(), rotated.current_id());
        assert_eq!(
            rotated.open(place, &under_old).as_deref(),
            Ok("paper form 12")
        );
        assert!(!rotated.is_current(&under_old));
        let rewrapped = rotated.rewrap(place, &under_old).unwrap().unwrap();
        assert!(rotated.is_current(&rewrapped));
        assert_eq!(rotated.rewrap(place, &rewrapped), Ok(None));
        // Without the old key, what is still under it says which key it needs.
        let forgot = DataKeys::new(&[2; 32], &[]);
        assert_eq!(
            forgot.open(place, &under_old),
            Err(OpenError::UnknownKey(old.current_id().to_owned()))
        );
        assert_eq!(
            forgot.open(place, &rewrapped).as_deref(),
            Ok("paper form 12")
        );
    }

    #[test]
    fn values_from_before_sealing_are_read_as_they_are_and_rewrapped() {
        let keys = DataKeys::new(&[3; 32], &[]);
        let place = Place::new("referrals.reason_text", ROW);
        assert_eq!(keys.open(place, "plain").as_deref(), Ok("plain"));
        let sealed = keys.rewrap(place, "plain").unwrap().unwrap();
        assert_eq!(keys.open(place, &sealed).as_deref(), Ok("plain"));
    }
}

//! Signed checkpoints in the formats of the transparency-log ecosystem, so that standard tooling
//! (Go's `golang.org/x/mod/sumdb/note`, transparency-dev's `formats/log`, witnesses) reads them:
//!
//! - C2SP signed-note (<https://c2sp.org/signed-note>): the text, a blank line, and signature
//!   lines `— <key name> <base64(key id ‖ signature)>`. For Ed25519 the key id is the first four
//!   bytes of `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)`; the verifier key is written
//!   `<name>+<key id hex>+<base64(0x01 ‖ public key)>` and the signer key
//!   `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ seed)>`.
//! - C2SP tlog-checkpoint (<https://c2sp.org/tlog-checkpoint>): the text is the origin line, the
//!   tree size in decimal, the base64 root hash, then extension lines. This log writes one
//!   extension line, `time <RFC 3339 UTC>`, the moment the checkpoint was signed.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

/// The signature algorithm byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
/// The dash that starts a signature line (U+2014 EM DASH).
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// The extension line that carries the signing time.
const TIME_PREFIX: &str = "time ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("key names must be non-empty UTF-8 without '+' or white space")]
    KeyName,
    #[error("malformed key: {0}")]
    Key(&'static str),
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("the note has no signature by {0}")]
    NotSigned(String),
    #[error("the signature by {0} does not verify: the note was changed or forged")]
    BadSignature(String),
    #[error("malformed checkpoint: {0}")]
    Checkpoint(&'static str),
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        Err(NoteError::KeyName)
    } else {
        Ok(())
    }
}

fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ALG_ED25519])
        .chain_update(public.as_bytes())
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Splits `<name>+<hex id>+<base64(0x01 ‖ key)>` and checks the algorithm and length.
fn split_key(text: &str) -> Result<(&str, u32, [u8; 32]), NoteError> {
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::Key("expected <name>+<key id>+<key>"));
    };
    check_name(name)?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::Key("the key id must be eight hex digits"));
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| NoteError::Key("bad key id"))?;
    let key = STANDARD
        .decode(key)
        .map_err(|_| NoteError::Key("the key is not base64"))?;
    match key.split_first() {
        Some((&ALG_ED25519, rest)) => {
            let bytes: [u8; 32] = rest
                .try_into()
                .map_err(|_| NoteError::Key("an Ed25519 key has 32 bytes"))?;
            Ok((name, id, bytes))
        }
        _ => Err(NoteError::Key(
            "only Ed25519 keys (algorithm 1) are supported",
        )),
    }
}

/// The private half: signs notes under a key name.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({}, <key>)", self.name)
    }
}

impl NoteSigner {
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A new random key.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        use rand::RngCore;
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self::from_seed(name, seed)
    }

    /// Parses `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::Key("a signer key starts with PRIVATE+KEY+"))?;
        let (name, id, seed) = split_key(rest)?;
        let signer = Self::from_seed(name, seed)?;
        if signer.key_id() != id {
            return Err(NoteError::Key("the key id does not match the name and key"));
        }
        Ok(signer)
    }

    /// The signer key text, for the key file. Secret.
    pub fn to_signer_key(&self) -> String {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id(),
            STANDARD.encode(key)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        key_id(&self.name, &self.key.verifying_key())
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The signed note of `text`, which must end in a newline and contain no blank line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.key_id().to_be_bytes().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') || text.contains("\n\n") || text.starts_with('\n') {
        return Err(NoteError::Malformed(
            "the text must be non-empty lines, each ending in a newline",
        ));
    }
    Ok(())
}

/// The public half: checks notes signed under one key name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<key id>+<base64(0x01 ‖ public key)>`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, id, key) = split_key(text)?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| NoteError::Key("not an Ed25519 public key"))?;
        if key_id(name, &key) != id {
            return Err(NoteError::Key("the key id does not match the name and key"));
        }
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        key_id(&self.name, &self.key)
    }

    /// Checks that `note` carries a valid signature of this key, and returns its text. Signatures by
    /// other keys (e.g. witnesses' cosignatures) are allowed and ignored.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let text = &note[..split + 1];
        check_text(text)?;
        let signatures = &note[split + 2..];
        if !signatures.ends_with('\n') {
            return Err(NoteError::Malformed("the last line must end in a newline"));
        }
        let mut found = false;
        for line in signatures.lines() {
            let line = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(NoteError::Malformed("a signature line starts with '— '"))?;
            let (name, blob) = line.split_once(' ').ok_or(NoteError::Malformed(
                "a signature line is '— <name> <base64>'",
            ))?;
            check_name(name).map_err(|_| NoteError::Malformed("bad key name"))?;
            let blob = STANDARD
                .decode(blob)
                .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
            if blob.len() < 5 {
                return Err(NoteError::Malformed("a signature is too short"));
            }
            let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
            if name != self.name || id != self.key_id() {
                continue;
            }
            found = true;
            let signature = Signature::from_slice(&blob[4..])
                .map_err(|_| NoteError::BadSignature(self.to_string()))?;
            self.key
                .verify_strict(text.as_bytes(), &signature)
                .map_err(|_| NoteError::BadSignature(self.to_string()))?;
        }
        if found {
            Ok(text)
        } else {
            Err(NoteError::NotSigned(self.to_string()))
        }
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id(),
            STANDARD.encode(key)
        )
    }
}

/// A tlog-checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// When it was signed (the `time` extension line), if present.
    pub time: Option<DateTime<Utc>>,
}

impl Checkpoint {
    /// The note text: origin, size, root, `time` extension.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        if let Some(time) = self.time {
            text.push_str(TIME_PREFIX);
            text.push_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true));
            text.push('\n');
        }
        text
    }

    /// Parses a note text (as returned by [`NoteVerifier::open`]). Unknown extension lines are
    /// allowed, as the format requires.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let mut lines = text.lines();
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(NoteError::Checkpoint("no origin line"))?;
        let size = lines
            .next()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .filter(|s| s.len() == 1 || !s.starts_with('0'))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(NoteError::Checkpoint(
                "the second line must be the tree size in decimal",
            ))?;
        let root: Hash = lines
            .next()
            .and_then(|r| STANDARD.decode(r).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or(NoteError::Checkpoint(
                "the third line must be a base64 SHA-256 root hash",
            ))?;
        let mut time = None;
        for line in lines {
            if let Some(t) = line.strip_prefix(TIME_PREFIX) {
                time = Some(
                    DateTime::parse_from_rfc3339(t)
                        .map_err(|_| NoteError::Checkpoint("the time line is not RFC 3339"))?
                        .with_timezone(&Utc),
                );
            }
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Published test vectors of Go's signed-note implementation (golang.org/x/mod/sumdb/note).
    const SIGNER: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIGNED: &str = "If you think cryptography is the answer to your problem,\n\
                          then you don't know what your problem is.\n\
                          \n\
                          — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const OTHER_SIGNATURE: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn keys_ids_and_signatures_match_the_go_reference() {
        let signer = NoteSigner::parse(SIGNER).expect("signer");
        assert_eq!(signer.key_id(), 0xc74f20a3);
        assert_eq!(signer.to_signer_key(), SIGNER);
        assert_eq!(signer.verifier().to_string(), VERIFIER);
        assert_eq!(signer.sign(TEXT).expect("sign"), SIGNED);
        let verifier = NoteVerifier::parse(VERIFIER).expect("verifier");
        assert_eq!(verifier.open(SIGNED), Ok(TEXT));
        // A cosignature by another key is ignored.
        assert_eq!(
            verifier.open(&format!("{SIGNED}{OTHER_SIGNATURE}")),
            Ok(TEXT)
        );
    }

    #[test]
    fn changed_or_unsigned_notes_are_refused() {
        let verifier = NoteVerifier::parse(VERIFIER).expect("verifier");
        let changed = SIGNED.replace("cryptography", "cryptanalysis");
        assert!(matches!(
            verifier.open(&changed),
            Err(NoteError::BadSignature(_))
        ));
        let other_only = format!("{TEXT}\n{OTHER_SIGNATURE}");
        assert!(matches!(
            verifier.open(&other_only),
            Err(NoteError::NotSigned(_))
        ));
        assert!(verifier.open(TEXT).is_err());
        let impostor = NoteSigner::from_seed("PeterNeumann", [9; 32]).expect("key");
        let forged = impostor.sign(TEXT).expect("sign");
        // Same name, other key: another key id, so not a signature of this verifier at all.
        assert!(matches!(
            verifier.open(&forged),
            Err(NoteError::NotSigned(_))
        ));
    }

    #[test]
    fn mangled_keys_are_refused() {
        for bad in [
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(NoteVerifier::parse(bad).is_err(), "{bad}");
        }
        assert!(NoteSigner::parse(VERIFIER).is_err());
        assert!(NoteSigner::from_seed("a+b", [0; 32]).is_err());
    }

    #[test]
    fn checkpoints_round_trip_through_signed_notes() {
        let signer = NoteSigner::from_seed("example.org/audit", [3; 32]).expect("key");
        let checkpoint = Checkpoint {
            origin: "example.org/audit".into(),
            size: 1234,
            root: [7; 32],
            time: DateTime::from_timestamp_micros(1_741_000_000_123_456),
        };
        let note = signer.sign(&checkpoint.text()).expect("sign");
        assert!(note.starts_with(
            "example.org/audit\n1234\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\ntime 2025-03-03T11:06:40.123456Z\n\n— example.org/audit "
        ));
        let text = signer.verifier().open(&note).expect("open");
        assert_eq!(Checkpoint::parse(text), Ok(checkpoint));
        for bad in ["o\n01\nAA==\n", "o\n-1\n", "o\n1\nAA==\n", "\n1\n"] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! The bytes of an audit event as a leaf of the Merkle tree (`leaf_data`), version 1.
//!
//! The leaf commits to every column of the event's row, so that changing, deleting or reordering a
//! row changes the data the export rebuilds from it, and the leaf no longer hashes to what the tree
//! holds. It holds identifiers and pseudonyms only: organisation ids, user ids, method paths,
//! resource names, keyed pseudonyms, consent names and codes. No identity code and no free text is
//! ever in an audit event, so erasing referral content never touches a leaf.
//!
//! The encoding is deterministic (one event has exactly one encoding) and self-delimiting, in the
//! style of RFC 8446 §3 ("TLS presentation language"), all integers big-endian:
//!
//! ```text
//! leaf_data   = version:u8 (= 0x01)
//!               sequence:i64            audit_events.sequence
//!               time:i64                microseconds since 1970-01-01T00:00:00Z
//!               organization:string     caller's organisation id ("" when unauthenticated)
//!               user_id:string
//!               method:string           full gRPC method path, or background/<Task>
//!               status_code:i32         gRPC status code of the call
//!               correlation_id:string
//!               resources:list<string>
//!               subject_pseudonyms:list<string>
//!               disclosures:list<disclosure>
//! disclosure  = recipient:string resource:string subject_pseudonym:string basis:string
//!               consent_state:optional<string> consent_version:optional<i64>
//! string      = length:u32 bytes        UTF-8, length in bytes
//! list<T>     = count:u32 T{count}
//! optional<T> = 0x00 | 0x01 T
//! ```
//!
//! The leaf hash is `SHA-256(0x00 ‖ leaf_data)` (RFC 6962). A reader rejects any other version, a
//! trailing byte, or a string that is not UTF-8.

use chrono::DateTime;

use super::{AuditRecord, Disclosure};

/// The only version written and read.
pub const VERSION: u8 = 1;

/// Why bytes are not a version-1 leaf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    #[error("empty leaf data")]
    Empty,
    #[error("unknown leaf version {0}")]
    Version(u8),
    #[error("leaf data ends inside a field")]
    Truncated,
    #[error("a string in the leaf data is not UTF-8")]
    NotUtf8,
    #[error("leaf data has {0} bytes after its last field")]
    Trailing(usize),
    #[error("the time in the leaf data is out of range")]
    Time,
    #[error("an optional field has marker {0}, not 0 or 1")]
    Marker(u8),
}

/// The leaf data of the event with `sequence`.
pub fn encode(sequence: i64, record: &AuditRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.0.push(VERSION);
    w.i64(sequence);
    w.i64(record.time.timestamp_micros());
    w.string(&record.organization);
    w.string(&record.user_id);
    w.string(&record.method);
    w.0.extend_from_slice(&record.status_code.to_be_bytes());
    w.string(&record.correlation_id);
    w.strings(&record.resources);
    w.strings(&record.subject_pseudonyms);
    w.count(record.disclosures.len());
    for d in &record.disclosures {
        w.string(&d.recipient);
        w.string(&d.resource);
        w.string(&d.subject_pseudonym);
        w.string(&d.basis);
        match &d.consent_state {
            Some(state) => {
                w.0.push(1);
                w.string(state);
            }
            None => w.0.push(0),
        }
        match d.consent_version {
            Some(version) => {
                w.0.push(1);
                w.i64(version);
            }
            None => w.0.push(0),
        }
    }
    w.0
}

/// The event sequence and record that `data` encodes.
pub fn decode(data: &[u8]) -> Result<(i64, AuditRecord), LeafError> {
    let mut r = Reader(data);
    match r.u8().map_err(|_| LeafError::Empty)? {
        VERSION => {}
        other => return Err(LeafError::Version(other)),
    }
    let sequence = r.i64()?;
    let time = DateTime::from_timestamp_micros(r.i64()?).ok_or(LeafError::Time)?;
    let organization = r.string()?;
    let user_id = r.string()?;
    let method = r.string()?;
    let status_code = i32::from_be_bytes(r.array()?);
    let correlation_id = r.string()?;
    let resources = r.strings()?;
    let subject_pseudonyms = r.strings()?;
    let count = r.count()?;
    let mut disclosures = Vec::new();
    for _ in 0..count {
        let recipient = r.string()?;
        let resource = r.string()?;
        let subject_pseudonym = r.string()?;
        let basis = r.string()?;
        let consent_state = r.optional(|r| r.string())?;
        let consent_version = r.optional(|r| r.i64())?;
        disclosures.push(Disclosure {
            recipient,
            resource,
            subject_pseudonym,
            basis,
            consent_state,
            consent_version,
        });
    }
    if !r.0.is_empty() {
        return Err(LeafError::Trailing(r.0.len()));
    }
    Ok((
        sequence,
        AuditRecord {
            time,
            organization,
            user_id,
            method,
            resources,
            subject_pseudonyms,
            status_code,
            correlation_id,
            disclosures,
        },
    ))
}

struct Writer(Vec<u8>);

impl Writer {
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    /// Counts and lengths are u32. Nothing in an audit event comes near 4 GiB (headers are at most
    /// 128 characters, names are short); saturating keeps the function total, and a saturated length
    /// would make the leaf undecodable rather than ambiguous.
    fn count(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn string(&mut self, s: &str) {
        self.count(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn strings(&mut self, items: &[String]) {
        self.count(items.len());
        for s in items {
            self.string(s);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], LeafError> {
        if self.0.len() < n {
            return Err(LeafError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LeafError> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, LeafError> {
        Ok(self.array::<1>()?[0])
    }

    fn i64(&mut self) -> Result<i64, LeafError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn count(&mut self) -> Result<usize, LeafError> {
        let n = u32::from_be_bytes(self.array()?);
        let n = usize::try_from(n).map_err(|_| LeafError::Truncated)?;
        // Every item takes at least 4 bytes: a count larger than what is left is a lie.
        if n > self.0.len() {
            return Err(LeafError::Truncated);
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, LeafError> {
        let n = self.count()?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| LeafError::NotUtf8)
    }

    fn strings(&mut self) -> Result<Vec<String>, LeafError> {
        let n = self.count()?;
        (0..n).map(|_| self.string()).collect()
    }

    fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, LeafError>,
    ) -> Result<Option<T>, LeafError> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(LeafError::Marker(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn record() -> AuditRecord {
        AuditRecord {
            time: chrono::Utc
                .with_ymd_and_hms(2025, 3, 3, 8, 0, 0)
                .single()
                .expect("valid")
                + chrono::Duration::microseconds(123_456),
            organization: "hva-15".into(),
            user_id: "worker-1".into(),
            method: "/referral_exchange.v1.MailboxService/PullMessages".into(),
            resources: vec!["messages/1".into(), "referrals/2".into()],
            subject_pseudonyms: vec!["ab".repeat(32)],
            status_code: 0,
            correlation_id: "case-7".into(),
            disclosures: vec![
                Disclosure {
                    recipient: "organizations/hva-15".into(),
                    resource: "referrals/2".into(),
                    subject_pseudonym: "ab".repeat(32),
                    basis: "consents/3".into(),
                    consent_state: Some("USED".into()),
                    consent_version: Some(2),
                },
                Disclosure {
                    recipient: "organizations/hva-15".into(),
                    resource: "referrals/4".into(),
                    subject_pseudonym: "cd".repeat(32),
                    basis: "UNABLE_TO_CARE_FOR_SELF".into(),
                    consent_state: None,
                    consent_version: None,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let r = record();
        let data = encode(42, &r);
        assert_eq!(encode(42, &r), data);
        assert_eq!(decode(&data), Ok((42, r)));
    }

    #[test]
    fn a_fixed_event_has_a_fixed_encoding() {
        // If this changes, old leaves no longer verify: bump VERSION instead.
        let r = AuditRecord {
            time: DateTime::from_timestamp_micros(1).expect("valid"),
            organization: "kela".into(),
            user_id: "h".into(),
            method: "/m".into(),
            resources: vec!["r".into()],
            subject_pseudonyms: vec![],
            status_code: 5,
            correlation_id: String::new(),
            disclosures: vec![],
        };
        assert_eq!(
            hex::encode(encode(7, &r)),
            concat!(
                "01",
                "0000000000000007",
                "0000000000000001",
                "000000046b656c61",
                "0000000168",
                "000000022f6d",
                "00000005",
                "00000000",
                "000000010000000172",
                "00000000",
                "00000000",
            )
        );
    }

    #[test]
    fn every_field_changes_the_encoding() {
        let base = encode(1, &record());
        let mut changes: Vec<Vec<u8>> = vec![encode(2, &record())];
        let mutations: Vec<fn(&mut AuditRecord)> = vec![
            |r| r.time += chrono::Duration::microseconds(1),
            |r| r.organization = "hva-12".into(),
            |r| r.user_id = "worker-2".into(),
            |r| r.method.push('x'),
            |r| r.status_code = 7,
            |r| r.correlation_id.clear(),
            |r| r.resources.reverse(),
            |r| r.subject_pseudonyms.clear(),
            |r| r.disclosures[0].consent_state = Some("ACTIVE".into()),
            |r| r.disclosures[0].consent_version = Some(3),
            |r| r.disclosures[1].basis = "CHILD_BEST_INTEREST".into(),
        ];
        for m in mutations {
            let mut r = record();
            m(&mut r);
            changes.push(encode(1, &r));
        }
        for c in changes {
            assert_ne!(c, base);
        }
    }

    #[test]
    fn malformed_data_is_refused() {
        let data = encode(1, &record());
        assert_eq!(decode(&[]), Err(LeafError::Empty));
        assert_eq!(decode(&[2]), Err(LeafError::Version(2)));
        assert_eq!(decode(&data[..data.len() - 1]), Err(LeafError::Truncated));
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(LeafError::Trailing(1)));
        let mut huge_count = data[..17].to_vec();
        huge_count.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&huge_count), Err(LeafError::Truncated));
    }
}

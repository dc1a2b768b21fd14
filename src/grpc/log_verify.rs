//! Verifying an export of the audit log against a signed checkpoint: the one check behind
//! `referral-exchange audit verify` (offline, on a file) and the console's "verify the log now"
//! (on an export read from the server in process). It trusts nothing the server says except what
//! the signature covers: it recomputes every leaf hash from `leaf_data`, checks that the fields
//! shown are the ones the leaf data holds, recomputes the root, checks the signature, and checks
//! that an earlier checkpoint's tree is a prefix of the exported one.

use serde::Serialize;

use crate::{
    audit::{
        leaf,
        merkle::{self, Appender, Hash},
        note::{Checkpoint, NoteError, NoteVerifier},
    },
    proto::v1 as pb,
};

/// What a successful verification established. Printed with the API's key style (camelCase), as
/// every tool of the command line prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub origin: String,
    pub tree_size: u64,
    /// Hex.
    pub root_hash: String,
    pub leaves_verified: u64,
    /// The earlier checkpoint's size, whose tree the exported one was shown to extend.
    pub consistent_with_earlier_size: Option<u64>,
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the public key is unusable: {0}")]
    Key(NoteError),
    #[error("the checkpoint is refused: {0}")]
    Checkpoint(NoteError),
    #[error("the earlier checkpoint is refused: {0}")]
    EarlierCheckpoint(NoteError),
    #[error("the checkpoint's origin {origin:?} is not the key's name {key_name:?}")]
    Origin { origin: String, key_name: String },
    #[error("the earlier checkpoint (size {earlier}) is larger than the checkpoint (size {size})")]
    EarlierLarger { earlier: u64, size: u64 },
    #[error("leaf {index}: {problem}")]
    Leaf { index: u64, problem: String },
    #[error(
        "the exported leaves hash to root {computed}, not the signed {signed}; every leaf matches \
         its stored hash, so the stored tree was rewritten along with the events: {detail}"
    )]
    Root {
        computed: String,
        signed: String,
        detail: String,
    },
    #[error(
        "the first {earlier_size} leaves do not hash to the earlier checkpoint's root: the log's \
         history was rewritten (or the log forked) since the earlier checkpoint"
    )]
    Inconsistent { earlier_size: u64 },
}

fn open(verifier: &NoteVerifier, note: &str) -> Result<Checkpoint, NoteError> {
    Checkpoint::parse(verifier.open(note)?)
}

/// Verifies `events` (an export, in leaf order from 0) against the signed `checkpoint`, the log's
/// `verifier_key`, and an `earlier` checkpoint of the same log.
pub fn verify(
    verifier_key: &str,
    checkpoint: &str,
    earlier: Option<&str>,
    events: impl IntoIterator<Item = pb::AuditEvent>,
) -> Result<Verified, Failure> {
    let verifier = NoteVerifier::parse(verifier_key).map_err(Failure::Key)?;
    let signed = open(&verifier, checkpoint).map_err(Failure::Checkpoint)?;
    if signed.origin != verifier.name() {
        return Err(Failure::Origin {
            origin: signed.origin,
            key_name: verifier.name().to_owned(),
        });
    }
    let earlier = earlier
        .map(|note| open(&verifier, note))
        .transpose()
        .map_err(Failure::EarlierCheckpoint)?;
    if let Some(e) = &earlier
        && e.size > signed.size
    {
        return Err(Failure::EarlierLarger {
            earlier: e.size,
            size: signed.size,
        });
    }

    // Two trees side by side: one of the hashes of the exported data, one of the hashes the
    // server's tree stores. Which of them matches the signature tells how strong the finding is.
    let mut from_data = Appender::new(0, Vec::new()).map_err(|_| unreachable_failure())?;
    let mut from_stored = from_data.clone();
    let mut earlier_roots: Option<(Hash, Hash)> = None;
    let mut first_problem: Option<(u64, String)> = None;
    let mut note = |index: u64, problem: String| {
        if first_problem.is_none() {
            first_problem = Some((index, problem));
        }
    };
    let record_prefix =
        |from_data: &Appender, from_stored: &Appender, roots: &mut Option<(Hash, Hash)>| {
            if let Some(e) = &earlier
                && from_data.size() == e.size
            {
                *roots = Some((from_data.root(), from_stored.root()));
            }
        };
    record_prefix(&from_data, &from_stored, &mut earlier_roots);

    for event in events {
        let expected = from_data.size();
        if expected == signed.size {
            break;
        }
        let Some(index) = event.leaf_index.and_then(|i| u64::try_from(i).ok()) else {
            note(
                expected,
                "the export has an event without a leaf index here".into(),
            );
            break;
        };
        if index != expected {
            let problem = if index > expected {
                "missing from the export (its leaf row is gone, or the export skips it)"
            } else {
                "the export repeats or reorders leaves here"
            };
            note(expected, problem.into());
            break;
        }
        let data_hash = merkle::leaf_hash(&event.leaf_data);
        let stored_hash: Option<Hash> = event.leaf_hash.as_slice().try_into().ok();
        from_data.push(data_hash);
        from_stored.push(stored_hash.unwrap_or(data_hash));
        if let Some(problem) = leaf_problem(&event, &data_hash, stored_hash.as_ref()) {
            note(index, problem);
        }
        record_prefix(&from_data, &from_stored, &mut earlier_roots);
    }
    if from_data.size() < signed.size && first_problem.is_none() {
        first_problem = Some((
            from_data.size(),
            format!(
                "missing from the export, which ends before the checkpoint's {} leaves",
                signed.size
            ),
        ));
    }
    let data_root = from_data.root();
    let stored_root = from_stored.root();

    if let Some((index, problem)) = first_problem {
        let strength = if from_data.size() == signed.size && stored_root == signed.root {
            "; the tree's stored leaf hashes match the signed checkpoint, so this leaf is proven \
             to differ from what was logged"
        } else if from_data.size() == signed.size {
            "; the stored leaf hashes do not match the signed checkpoint either (the tree was \
             rewritten too): this is the first leaf whose data and stored hash disagree"
        } else {
            ""
        };
        return Err(Failure::Leaf {
            index,
            problem: format!("{problem}{strength}"),
        });
    }
    if data_root != signed.root {
        let detail = match (&earlier, earlier_roots) {
            (Some(e), Some((data, _))) if data == e.root => format!(
                "the first {} leaves still match the earlier checkpoint, so the change lies at \
                 leaf {} or later",
                e.size, e.size
            ),
            (Some(e), Some(_)) => format!(
                "the first {} leaves already differ from the earlier checkpoint",
                e.size
            ),
            _ => "keep an earlier checkpoint to narrow down where".into(),
        };
        return Err(Failure::Root {
            computed: hex::encode(data_root),
            signed: hex::encode(signed.root),
            detail,
        });
    }
    if let Some(e) = &earlier {
        match earlier_roots {
            Some((data, _)) if data == e.root => {}
            _ => {
                return Err(Failure::Inconsistent {
                    earlier_size: e.size,
                });
            }
        }
    }
    Ok(Verified {
        origin: signed.origin,
        tree_size: signed.size,
        root_hash: hex::encode(signed.root),
        leaves_verified: from_data.size(),
        consistent_with_earlier_size: earlier.map(|e| e.size),
    })
}

fn unreachable_failure() -> Failure {
    Failure::Leaf {
        index: 0,
        problem: "internal error".into(),
    }
}

/// What is wrong with one exported leaf on its own, if anything.
fn leaf_problem(event: &pb::AuditEvent, data_hash: &Hash, stored: Option<&Hash>) -> Option<String> {
    if event.leaf_data.is_empty() {
        return Some(format!(
            "its event (sequence {}) is gone from the database",
            event.sequence
        ));
    }
    let (sequence, record) = match leaf::decode(&event.leaf_data) {
        Ok(decoded) => decoded,
        Err(e) => return Some(format!("its leaf data is not a version-1 leaf: {e}")),
    };
    let Some(stored) = stored else {
        return Some("its stored leaf hash is not a SHA-256 hash".into());
    };
    if stored != data_hash {
        return Some(format!(
            "its event (sequence {}) no longer matches the leaf hash in the tree: the row was \
             changed, replaced or moved",
            event.sequence
        ));
    }
    // The fields shown must be the ones committed to, or a reader of the export is misled.
    let mut shown = event.clone();
    shown.leaf_data.clear();
    shown.leaf_hash.clear();
    let mut committed = crate::grpc::audit::record_to_proto(sequence, &record, event.leaf_index);
    committed.leaf_data.clear();
    if shown != committed {
        return Some(format!(
            "the event fields in the export differ from its leaf data (sequence {sequence})"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::audit::{AuditRecord, note::NoteSigner};

    fn event(sequence: i64, index: i64) -> pb::AuditEvent {
        let record = AuditRecord {
            time: chrono::Utc
                .with_ymd_and_hms(2025, 3, 3, 8, 0, 0)
                .single()
                .expect("time"),
            organization: "kela".into(),
            user_id: format!("handler-{sequence}"),
            method: "/referral_exchange.v1.ReferralService/GetReferral".into(),
            resources: vec![format!("referrals/{sequence}")],
            subject_pseudonyms: vec!["ab".repeat(32)],
            status_code: 0,
            correlation_id: String::new(),
            disclosures: vec![],
        };
        let data = leaf::encode(sequence, &record);
        let mut e = crate::grpc::audit::record_to_proto(sequence, &record, Some(index));
        e.leaf_hash = merkle::leaf_hash(&data).to_vec();
        e.leaf_data = data;
        e
    }

    struct Log {
        signer: NoteSigner,
        events: Vec<pb::AuditEvent>,
    }

    impl Log {
        fn new(n: i64) -> Log {
            Log {
                signer: NoteSigner::from_seed("test/log", [5; 32]).expect("key"),
                events: (0..n).map(|i| event(i + 10, i)).collect(),
            }
        }

        fn checkpoint(&self, size: usize) -> String {
            let mut a = Appender::new(0, vec![]).expect("empty");
            for e in &self.events[..size] {
                a.push(merkle::leaf_hash(&e.leaf_data));
            }
            let c = Checkpoint {
                origin: "test/log".into(),
                size: size as u64,
                root: a.root(),
                time: None,
            };
            self.signer.sign(&c.text()).expect("sign")
        }

        fn verify(&self, size: usize, earlier: Option<usize>) -> Result<Verified, Failure> {
            let earlier = earlier.map(|s| self.checkpoint(s));
            verify(
                &self.signer.verifier().to_string(),
                &self.checkpoint(size),
                earlier.as_deref(),
                self.events.clone(),
            )
        }
    }

    #[test]
    fn an_honest_export_verifies_with_and_without_an_earlier_checkpoint() {
        let log = Log::new(9);
        let ok = log.verify(9, Some(4)).expect("verifies");
        assert_eq!((ok.tree_size, ok.leaves_verified), (9, 9));
        assert_eq!(ok.consistent_with_earlier_size, Some(4));
        assert!(
            log.verify(7, None).is_ok(),
            "longer exports verify a smaller tree"
        );
        assert!(log.verify(0, None).is_ok());
    }

    #[test]
    fn a_changed_event_is_named() {
        let mut log = Log::new(9);
        let honest = log.checkpoint(9);
        // The row changed after the tree took it: the export rebuilds other data, stored hash stays.
        let mut changed = event(15, 5);
        changed.user_id = "someone-else".into();
        let mut record = leaf::decode(&changed.leaf_data).expect("decodes").1;
        record.user_id = "someone-else".into();
        changed.leaf_data = leaf::encode(15, &record);
        log.events[5] = changed;
        let failure = verify(
            &log.signer.verifier().to_string(),
            &honest,
            None,
            log.events.clone(),
        )
        .expect_err("fails");
        assert!(
            matches!(&failure, Failure::Leaf { index: 5, problem } if problem.contains("proven")),
            "{failure}"
        );
    }

    #[test]
    fn shown_fields_must_be_the_committed_ones() {
        let mut log = Log::new(3);
        let cp = log.checkpoint(3);
        log.events[1].user_id = "not-what-was-logged".into();
        let failure =
            verify(&log.signer.verifier().to_string(), &cp, None, log.events).expect_err("fails");
        assert!(
            matches!(failure, Failure::Leaf { index: 1, .. }),
            "{failure}"
        );
    }

    #[test]
    fn missing_and_reordered_leaves_are_named() {
        let log = Log::new(6);
        let cp = log.checkpoint(6);
        let key = log.signer.verifier().to_string();
        let mut gap = log.events.clone();
        gap.remove(2);
        assert!(matches!(
            verify(&key, &cp, None, gap),
            Err(Failure::Leaf { index: 2, .. })
        ));
        let mut short = log.events.clone();
        short.truncate(4);
        assert!(matches!(
            verify(&key, &cp, None, short),
            Err(Failure::Leaf { index: 4, .. })
        ));
        // Swapped rows: each keeps its index, but the data no longer matches the stored hash.
        let mut swapped = log.events.clone();
        let (a, b) = (swapped[3].clone(), swapped[4].clone());
        swapped[3].leaf_data = b.leaf_data;
        swapped[4].leaf_data = a.leaf_data;
        assert!(matches!(
            verify(&key, &cp, None, swapped),
            Err(Failure::Leaf { index: 3, .. })
        ));
    }

    #[test]
    fn forged_and_foreign_checkpoints_are_refused() {
        let log = Log::new(4);
        let key = log.signer.verifier().to_string();
        let forged = log.checkpoint(4).replacen("\n4\n", "\n3\n", 1);
        assert!(matches!(
            verify(&key, &forged, None, log.events.clone()),
            Err(Failure::Checkpoint(NoteError::BadSignature(_)))
        ));
        let other = NoteSigner::from_seed("test/log", [6; 32]).expect("key");
        assert!(matches!(
            verify(
                &other.verifier().to_string(),
                &log.checkpoint(4),
                None,
                log.events.clone()
            ),
            Err(Failure::Checkpoint(NoteError::NotSigned(_)))
        ));
    }

    #[test]
    fn a_rewritten_history_is_inconsistent_with_the_earlier_checkpoint() {
        let mut log = Log::new(8);
        let earlier = log.checkpoint(5);
        // The operator rewrites leaf 2 everywhere (data and stored hash) and signs a new tree.
        let mut rewritten = event(12, 2);
        rewritten.user_id = "rewritten".into();
        let mut record = leaf::decode(&rewritten.leaf_data).expect("decodes").1;
        record.user_id = "rewritten".into();
        rewritten.leaf_data = leaf::encode(12, &record);
        rewritten.leaf_hash = merkle::leaf_hash(&rewritten.leaf_data).to_vec();
        log.events[2] = rewritten;
        let failure = verify(
            &log.signer.verifier().to_string(),
            &log.checkpoint(8),
            Some(&earlier),
            log.events.clone(),
        )
        .expect_err("fails");
        assert_eq!(failure, Failure::Inconsistent { earlier_size: 5 });
    }
}

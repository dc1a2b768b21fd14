//! The tamper-evident audit log, the disclosure log, the subject access report and consent expiry,
//! through the API and the auditor's offline verifier, on both databases.

use std::time::Duration as StdDuration;

use chrono::Duration;
use referral_exchange::{
    audit::merkle::{self, Hash},
    cli::audit::{Failure, verify},
    clock::Clock,
    proto::v1 as pb,
};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::helpers::*;

/// An app whose background sequencer runs only at start-up: the test decides when events enter
/// the tree.
pub(crate) async fn app_with_manual_sequencer(db: Db) -> TestApp {
    TestApp::spawn_with(db, default_start(), |s| {
        s.audit_log.sequencer_interval = StdDuration::from_secs(3600);
    })
    .await
}

/// Integrates everything pending (in rounds of at most `batch`) and returns the tree size.
pub(crate) async fn sequence(app: &TestApp, batch: i64) -> i64 {
    let mut size = 0;
    while let Some(round) = app
        .exchange()
        .integrate_audit_events(batch)
        .await
        .expect("sequencer round")
    {
        size = round.checkpoint.tree_size;
        if (round.integrated as i64) < batch {
            break;
        }
    }
    size
}

pub(crate) async fn checkpoint(auditor: &mut Clients) -> pb::GetCheckpointResponse {
    auditor
        .audit
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner()
}

pub(crate) async fn export(auditor: &mut Clients, start: i64, end: i64) -> Vec<pb::AuditEvent> {
    let mut stream = auditor
        .audit
        .export_audit_events(pb::ExportAuditEventsRequest {
            start_index: start,
            end_index: end,
        })
        .await
        .expect("export")
        .into_inner();
    let mut events = Vec::new();
    while let Some(e) = stream.message().await.expect("export stream") {
        events.push(e);
    }
    events
}

/// Some ordinary traffic: `n` listings of referrals by Kela, each an audit event (a directory read
/// touches no one's data and is counted, not audited).
async fn traffic(kela: &mut Clients, n: usize) {
    for _ in 0..n {
        kela.referrals
            .list_referrals(pb::ListReferralsRequest::default())
            .await
            .expect("list");
    }
}

fn hash(bytes: &[u8]) -> Hash {
    bytes.try_into().expect("32-byte hash")
}

/// RFC 6962 §2.1, written from the RFC's recursive definitions and nothing else: the independent
/// implementation the server's proofs are compared with.
mod rfc6962 {
    use super::*;

    fn leaf(d: &[u8]) -> Hash {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(d);
        h.finalize().into()
    }

    fn node(l: &Hash, r: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    }

    /// The largest power of two smaller than n (n > 1).
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    pub fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf(&d[0]),
            n => {
                let k = split(n);
                node(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    /// PATH(m, D[n]).
    pub fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    /// PROOF(m, D[n]) = SUBPROOF(m, D[n], true).
    pub fn proof(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        subproof(m, d, true)
    }

    fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { vec![mth(d)] };
        }
        let k = split(n);
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }
}

/// The values `count` picks from `1..=n`: all of them for small n, the edges and middle otherwise.
fn some_of(n: usize) -> Vec<usize> {
    if n <= 24 {
        (1..=n).collect()
    } else {
        vec![1, 2, n / 2, n - 1, n]
    }
}

both_engines!(proofs_verify_for_every_tree_size_and_equal_an_independent_rfc_6962_implementation);
async fn proofs_verify_for_every_tree_size_and_equal_an_independent_rfc_6962_implementation(
    db: Db,
) {
    let app = app_with_manual_sequencer(db).await;
    let mut kela = app.kela().await;
    let mut auditor = app.auditor().await;
    // Leaves arrive in rounds of irregular size, so stored subtrees span round boundaries.
    for (calls, batch) in [(1, 1), (2, 1), (5, 3), (9, 4), (13, 64), (4, 2), (11, 5)] {
        traffic(&mut kela, calls).await;
        sequence(&app, batch).await;
    }
    let signed = checkpoint(&mut auditor).await;
    let n = signed.tree_size as usize;
    assert!(n >= 45, "tree of {n}");
    let leaves = export(&mut auditor, 0, signed.tree_size).await;
    assert_eq!(leaves.len(), n);
    let data: Vec<Vec<u8>> = leaves.iter().map(|e| e.leaf_data.clone()).collect();
    for (i, e) in leaves.iter().enumerate() {
        assert_eq!(e.leaf_index, Some(i as i64));
        assert_eq!(
            e.leaf_hash,
            merkle::leaf_hash(&e.leaf_data).to_vec(),
            "leaf {i}"
        );
    }
    assert_eq!(hash(&signed.root_hash), rfc6962::mth(&data));

    for size in 1..=n {
        let root = rfc6962::mth(&data[..size]);
        let indexes: Vec<usize> = if size <= 24 {
            (0..size).collect()
        } else {
            vec![0, size / 2, size - 1]
        };
        for index in indexes {
            let proof = auditor
                .audit
                .get_inclusion_proof(pb::GetInclusionProofRequest {
                    leaf_index: index as i64,
                    tree_size: size as i64,
                })
                .await
                .expect("inclusion proof")
                .into_inner();
            let hashes: Vec<Hash> = proof.hashes.iter().map(|h| hash(h)).collect();
            assert_eq!(
                hashes,
                rfc6962::path(index, &data[..size]),
                "PATH({index}, D[{size}])"
            );
            merkle::verify_inclusion(&data[index], index as u64, size as u64, &root, &hashes)
                .expect("ct-merkle verifies the inclusion proof");
        }
    }
    for second in some_of(n) {
        let root = rfc6962::mth(&data[..second]);
        for first in some_of(second) {
            let proof = auditor
                .audit
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    first_tree_size: first as i64,
                    second_tree_size: second as i64,
                })
                .await
                .expect("consistency proof")
                .into_inner();
            let hashes: Vec<Hash> = proof.hashes.iter().map(|h| hash(h)).collect();
            assert_eq!(
                hashes,
                rfc6962::proof(first, &data[..second]),
                "PROOF({first}, D[{second}])"
            );
            merkle::verify_consistency(
                (first as u64, &rfc6962::mth(&data[..first])),
                (second as u64, &root),
                &hashes,
            )
            .expect("ct-merkle verifies the consistency proof");
        }
    }

    // Sizes and indexes outside the tree are the caller's mistake, named by field.
    let status = assert_code(
        auditor
            .audit
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf_index: n as i64,
                tree_size: n as i64,
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        vec![("leaf_index".to_string(), "IN_TREE".to_string())]
    );
    let status = assert_code(
        auditor
            .audit
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf_index: 0,
                tree_size: 1 << 40,
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        vec![("tree_size".to_string(), "TREE_SIZE".to_string())]
    );
    let status = assert_code(
        auditor
            .audit
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                first_tree_size: 0,
                second_tree_size: 3,
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        vec![("first_tree_size".to_string(), "POSITIVE".to_string())]
    );
    let status = assert_code(
        auditor
            .audit
            .export_audit_events(pb::ExportAuditEventsRequest {
                start_index: -1,
                end_index: 0,
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        vec![("start_index".to_string(), "NON_NEGATIVE".to_string())]
    );
    // The log is for auditors.
    assert_code(
        kela.audit.get_checkpoint(pb::GetCheckpointRequest {}).await,
        Code::PermissionDenied,
    );
    app.stop().await;
}

both_engines!(an_honest_export_verifies_offline);
async fn an_honest_export_verifies_offline(db: Db) {
    let app = app_with_manual_sequencer(db).await;
    let mut auditor = app.auditor().await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let referral = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    receive(&mut hva15, &referral.name).await;
    sequence(&app, 1000).await;
    let signed = checkpoint(&mut auditor).await;
    assert!(
        signed
            .checkpoint
            .starts_with(&format!("{}\n{}\n", signed.origin, signed.tree_size))
    );
    let leaves = export(&mut auditor, 0, 0).await;
    assert_eq!(
        leaves.len() as i64,
        signed.tree_size,
        "end 0 means the latest checkpoint"
    );
    let verified = verify(
        &signed.verifier_key,
        &signed.checkpoint,
        None,
        leaves.clone(),
    )
    .expect("verifies");
    assert_eq!(verified.tree_size, signed.tree_size as u64);
    // Leaves carry identifiers and pseudonyms only: never the identity code, nor free text.
    for leaf in &leaves {
        let text = String::from_utf8_lossy(&leaf.leaf_data);
        assert!(
            !text.contains(PIC) && !text.contains("Rent arrears"),
            "leaf {:?}",
            leaf.leaf_index
        );
    }
    // ListAuditEvents shows where each event sits in the tree.
    let listed = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .audit_events;
    assert!(listed.iter().filter(|e| e.leaf_index.is_some()).count() >= 4);
    app.stop().await;
}

both_engines!(changing_one_audit_row_makes_verify_fail_and_name_its_leaf);
async fn changing_one_audit_row_makes_verify_fail_and_name_its_leaf(db: Db) {
    let (app, signed, target) = logged_app(db).await;
    let sequence = event_sequence_of_leaf(&app, target).await;
    app.attack(&[
        &drop_triggers(app.engine, "audit_events"),
        &format!("UPDATE audit_events SET user_id = 'nobody' WHERE sequence = {sequence}"),
    ])
    .await;
    let mut auditor = app.auditor().await;
    let leaves = export(&mut auditor, 0, signed.tree_size).await;
    let failure = verify(
        &signed.verifier_key,
        &signed.checkpoint,
        None,
        leaves.clone(),
    )
    .expect_err("tampering is detected");
    assert!(
        matches!(&failure, Failure::Leaf { index, problem } if *index == target as u64 && problem.contains("proven")),
        "{failure}"
    );
    // The command line says the same and exits non-zero.
    let (code, stderr) = run_verify(&signed, &leaves);
    assert_ne!(code, 0);
    assert!(stderr.contains(&format!("leaf {target}:")), "{stderr}");
    app.stop().await;
}

both_engines!(deleting_one_audit_row_makes_verify_fail_and_name_its_leaf);
async fn deleting_one_audit_row_makes_verify_fail_and_name_its_leaf(db: Db) {
    let (app, signed, target) = logged_app(db).await;
    let sequence = event_sequence_of_leaf(&app, target).await;
    // SQLite's person and resource indexes are rows beside the event (PostgreSQL's are in it).
    let index_tables: &[&str] = match db {
        Db::Sqlite => &["audit_event_subjects", "audit_event_resources"],
        Db::Postgres => &[],
    };
    let mut attack = vec![drop_triggers(app.engine, "audit_events")];
    attack.extend(index_tables.iter().map(|t| drop_triggers(app.engine, t)));
    attack.push(without_foreign_keys(app.engine).to_string());
    attack.extend(
        index_tables
            .iter()
            .map(|t| format!("DELETE FROM {t} WHERE event_sequence = {sequence}")),
    );
    attack.push(format!(
        "DELETE FROM audit_events WHERE sequence = {sequence}"
    ));
    app.attack(&attack.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let mut auditor = app.auditor().await;
    let leaves = export(&mut auditor, 0, signed.tree_size).await;
    let failure = verify(&signed.verifier_key, &signed.checkpoint, None, leaves)
        .expect_err("deletion is detected");
    assert!(
        matches!(&failure, Failure::Leaf { index, problem } if *index == target as u64 && problem.contains("gone")),
        "{failure}"
    );

    // Deleting its leaf as well leaves a hole in the tree, named just the same.
    app.attack(&[
        &drop_triggers(app.engine, "audit_leaves"),
        &format!("DELETE FROM audit_leaves WHERE leaf_index = {target}"),
    ])
    .await;
    let leaves = export(&mut auditor, 0, signed.tree_size).await;
    let failure = verify(&signed.verifier_key, &signed.checkpoint, None, leaves)
        .expect_err("the hole is detected");
    assert!(
        matches!(&failure, Failure::Leaf { index, problem } if *index == target as u64 && problem.contains("missing")),
        "{failure}"
    );
    app.stop().await;
}

both_engines!(reordering_audit_rows_makes_verify_fail_and_name_the_first);
async fn reordering_audit_rows_makes_verify_fail_and_name_the_first(db: Db) {
    let (app, signed, target) = logged_app(db).await;
    let a = event_sequence_of_leaf(&app, target).await;
    let b = event_sequence_of_leaf(&app, target + 1).await;
    // Swap the two rows' contents, as if they had happened in the other order.
    let columns = "time, organization, user_id, method, resources, subject_pseudonyms, status_code, correlation_id, disclosures";
    app.attack(&[
        &drop_triggers(app.engine, "audit_events"),
        &format!("CREATE TEMPORARY TABLE swap AS SELECT sequence, {columns} FROM audit_events WHERE sequence IN ({a}, {b})"),
        &format!(
            "UPDATE audit_events SET ({columns}) = (SELECT {columns} FROM swap \
             WHERE swap.sequence = CASE WHEN audit_events.sequence = {a} THEN {b} ELSE {a} END) \
             WHERE sequence IN ({a}, {b})"
        ),
    ])
    .await;
    let mut auditor = app.auditor().await;
    let leaves = export(&mut auditor, 0, signed.tree_size).await;
    let failure = verify(&signed.verifier_key, &signed.checkpoint, None, leaves)
        .expect_err("reordering is detected");
    assert!(
        matches!(&failure, Failure::Leaf { index, .. } if *index == target as u64),
        "{failure}"
    );
    app.stop().await;
}

both_engines!(an_older_checkpoint_is_proven_consistent_and_forged_ones_are_refused);
async fn an_older_checkpoint_is_proven_consistent_and_forged_ones_are_refused(db: Db) {
    let app = app_with_manual_sequencer(db).await;
    let mut kela = app.kela().await;
    let mut auditor = app.auditor().await;
    traffic(&mut kela, 6).await;
    sequence(&app, 100).await;
    let older = checkpoint(&mut auditor).await;
    traffic(&mut kela, 9).await;
    sequence(&app, 100).await;
    let newer = checkpoint(&mut auditor).await;
    assert!(newer.tree_size > older.tree_size);

    let proof = auditor
        .audit
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            first_tree_size: older.tree_size,
            second_tree_size: 0,
        })
        .await
        .expect("proof")
        .into_inner();
    assert_eq!(
        proof.second_tree_size, newer.tree_size,
        "0 means the latest checkpoint"
    );
    let hashes: Vec<Hash> = proof.hashes.iter().map(|h| hash(h)).collect();
    merkle::verify_consistency(
        (older.tree_size as u64, &hash(&older.root_hash)),
        (newer.tree_size as u64, &hash(&newer.root_hash)),
        &hashes,
    )
    .expect("the older tree is a prefix of the newer");

    let leaves = export(&mut auditor, 0, newer.tree_size).await;
    let verified = verify(
        &newer.verifier_key,
        &newer.checkpoint,
        Some(&older.checkpoint),
        leaves.clone(),
    )
    .expect("consistent");
    assert_eq!(
        verified.consistent_with_earlier_size,
        Some(older.tree_size as u64)
    );

    // A checkpoint whose root was changed after signing.
    let root_line = newer
        .checkpoint
        .lines()
        .nth(2)
        .expect("root line")
        .to_owned();
    let forged = newer.checkpoint.replacen(
        &root_line,
        older.checkpoint.lines().nth(2).expect("root"),
        1,
    );
    assert!(matches!(
        verify(&newer.verifier_key, &forged, None, leaves.clone()),
        Err(Failure::Checkpoint(_))
    ));
    // A checkpoint signed by someone else under the log's name.
    let impostor =
        referral_exchange::audit::note::NoteSigner::generate(&newer.origin).expect("key");
    let body = newer
        .checkpoint
        .split("\n\n")
        .next()
        .expect("body")
        .to_owned()
        + "\n";
    let foreign = impostor.sign(&body).expect("sign");
    assert!(matches!(
        verify(&newer.verifier_key, &foreign, None, leaves.clone()),
        Err(Failure::Checkpoint(_))
    ));
    // The log's own key signing a different history (a fork): the auditor's older checkpoint
    // exposes it, and no consistency proof can join the two.
    let signer = app.exchange().log_signer().expect("signer").clone();
    let fork = referral_exchange::audit::note::Checkpoint {
        origin: newer.origin.clone(),
        size: older.tree_size as u64,
        root: merkle::leaf_hash(b"another history"),
        time: None,
    };
    let fork_note = signer.sign(&fork.text()).expect("sign");
    assert_eq!(
        verify(
            &newer.verifier_key,
            &newer.checkpoint,
            Some(&fork_note),
            leaves
        ),
        Err(Failure::Inconsistent {
            earlier_size: older.tree_size as u64
        })
    );
    assert!(
        merkle::verify_consistency(
            (fork.size, &fork.root),
            (newer.tree_size as u64, &hash(&newer.root_hash)),
            &hashes
        )
        .is_err()
    );
    app.stop().await;
}

both_engines!(the_subject_access_report_answers_who_what_to_whom_and_on_which_basis);
async fn the_subject_access_report_answers_who_what_to_whom_and_on_which_basis(db: Db) {
    let start = default_start() - Duration::days(3 * 365);
    let app = TestApp::spawn_at(db, start).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut helsinki = app.receiver("helsinki").await;
    let mut auditor = app.auditor().await;
    // Three years ago: an oral consent, long outside the default two-year window.
    let ancient = kela
        .consents
        .record_consent(oral_consent(PIC, &["hva-15"]))
        .await
        .expect("old consent")
        .into_inner();
    app.clock.set(default_start());

    let expire = app.clock.now() + Duration::days(180);
    let consent = kela
        .consents
        .record_consent(written_consent(PIC, &["hva-15", "helsinki"], expire))
        .await
        .expect("consent")
        .into_inner();
    let referral = kela
        .referrals
        .create_referral(referral(PIC, JYVASKYLA, &consent.name))
        .await
        .expect("refer")
        .into_inner();
    let received = receive(&mut hva15, &referral.name).await;
    let (name, etag, request_id) = change_fields(&received);
    hva15
        .referrals
        .forward_referral(pb::ForwardReferralRequest {
            name,
            etag,
            request_id,
            home_municipality_code: HELSINKI.into(),
        })
        .await
        .expect("forward");
    receive(&mut helsinki, &referral.name).await;
    drain(&mut kela).await;
    let notice = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("notify")
        .into_inner();
    receive(&mut hva15, &notice.name).await;
    // Someone else's referral must not appear.
    let other = consent_and_refer(&mut kela, "010594Y9032", JYVASKYLA, &["hva-15"]).await;
    receive(&mut hva15, &other.name).await;

    let report = auditor
        .audit
        .get_subject_access_report(pb::GetSubjectAccessReportRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("report")
        .into_inner();

    let who: std::collections::BTreeSet<(String, String)> = report
        .processing
        .iter()
        .map(|p| (p.organization.clone(), p.user_id.clone()))
        .collect();
    for org in [
        "organizations/kela",
        "organizations/hva-15",
        "organizations/helsinki",
    ] {
        assert!(
            who.iter().any(|(o, _)| o == org),
            "{org} processed the data: {who:?}"
        );
    }
    let methods: Vec<&str> = report
        .processing
        .iter()
        .map(|p| p.method.rsplit('/').next().unwrap_or_default())
        .collect();
    for m in [
        "RecordConsent",
        "CreateReferral",
        "PullMessages",
        "AcknowledgeMessages",
        "GetReferral",
        "ForwardReferral",
    ] {
        assert!(methods.contains(&m), "{m} in {methods:?}");
    }
    assert!(
        report
            .processing
            .iter()
            .all(|p| p.resources.iter().all(|r| !r.contains(&other.name)))
    );
    assert!(
        !report
            .processing
            .iter()
            .any(|p| p.resources.contains(&ancient.name)),
        "older than two years"
    );

    let disclosed = |recipient: &str, resource: &str, method: &str| {
        report
            .disclosures
            .iter()
            .find(|d| {
                d.recipient == recipient && d.resource == resource && d.method.ends_with(method)
            })
            .cloned()
    };
    let pulled = disclosed("organizations/hva-15", &referral.name, "PullMessages")
        .expect("the receiver's pull is a disclosure");
    assert_eq!(
        (pulled.basis.as_str(), pulled.consent_state.as_str()),
        (consent.name.as_str(), "ACTIVE")
    );
    assert_eq!(
        pulled.consent_version, 1,
        "as recorded: a written consent's uses are its events, not new versions"
    );
    assert_eq!(pulled.organization, "organizations/hva-15");
    let forwarded = disclosed("organizations/helsinki", &referral.name, "ForwardReferral")
        .expect("the forward is a disclosure");
    assert_eq!(
        (forwarded.organization.as_str(), forwarded.basis.as_str()),
        ("organizations/hva-15", consent.name.as_str())
    );
    disclosed("organizations/helsinki", &referral.name, "PullMessages")
        .expect("the new organiser's pull");
    disclosed("organizations/kela", &referral.name, "PullMessages")
        .expect("Kela pulling the state change");
    disclosed("organizations/hva-15", &referral.name, "GetReferral")
        .expect("a receiver reading it");
    let statutory =
        disclosed("organizations/hva-15", &notice.name, "PullMessages").expect("the notification");
    assert_eq!(
        (
            statutory.basis.as_str(),
            statutory.consent_state.as_str(),
            statutory.consent_version
        ),
        ("UNABLE_TO_CARE_FOR_SELF", "", 0)
    );

    let consent_events: Vec<(String, i32)> = report
        .consent_events
        .iter()
        .map(|e| (e.consent.clone(), e.r#type))
        .collect();
    assert_eq!(
        consent_events,
        vec![
            (
                consent.name.clone(),
                pb::consent_event::Type::Granted as i32
            ),
            (consent.name.clone(), pb::consent_event::Type::Used as i32),
        ]
    );

    // Widening the window brings back the old consent.
    let all = auditor
        .audit
        .get_subject_access_report(pb::GetSubjectAccessReportRequest {
            personal_identity_code: PIC.into(),
            start_time: Some(pbjson_types::Timestamp {
                seconds: start.timestamp() - 1,
                nanos: 0,
            }),
            end_time: None,
        })
        .await
        .expect("report")
        .into_inner();
    assert!(all.consent_events.iter().any(|e| e.consent == ancient.name));

    // Auditors only; the identity code is checked exactly.
    assert_code(
        kela.audit
            .get_subject_access_report(pb::GetSubjectAccessReportRequest {
                personal_identity_code: PIC.into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    let status = assert_code(
        auditor
            .audit
            .get_subject_access_report(pb::GetSubjectAccessReportRequest {
                personal_identity_code: "131052-308X".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(
        violations(&status)
            .iter()
            .all(|(field, _)| field == "personal_identity_code")
    );
    let status = assert_code(
        auditor
            .audit
            .get_subject_access_report(pb::GetSubjectAccessReportRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        vec![("personal_identity_code".to_string(), "REQUIRED".to_string())]
    );
    // The report itself is in the person's log.
    let again = auditor
        .audit
        .get_subject_access_report(pb::GetSubjectAccessReportRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("report")
        .into_inner();
    assert!(
        again
            .processing
            .iter()
            .any(|p| p.method.ends_with("GetSubjectAccessReport")
                && p.organization == "organizations/auditor-dpo")
    );
    app.stop().await;
}

both_engines!(a_consent_expires_by_the_clock_once_with_an_expired_event);
async fn a_consent_expires_by_the_clock_once_with_an_expired_event(db: Db) {
    let app = app_with_manual_sequencer(db).await;
    let mut kela = app.kela().await;
    let mut auditor = app.auditor().await;
    let expire = app.clock.now() + Duration::days(1);
    let consent = kela
        .consents
        .record_consent(written_consent(PIC, &["hva-15"], expire))
        .await
        .expect("consent")
        .into_inner();
    let lasting = kela
        .consents
        .record_consent(written_consent(
            PIC,
            &["hva-15"],
            expire + Duration::days(30),
        ))
        .await
        .expect("consent")
        .into_inner();
    assert_eq!(
        app.exchange().expire_consents().await.expect("round"),
        0,
        "not yet"
    );

    app.clock.advance(Duration::days(2));
    // The background task's first round is over before a test begins (`TestApp`): this one does it.
    assert_eq!(app.exchange().expire_consents().await.expect("round"), 1);
    assert_eq!(
        app.exchange().expire_consents().await.expect("round"),
        0,
        "expires once"
    );

    let events = auditor
        .consents
        .list_consent_events(pb::ListConsentEventsRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .consent_events;
    let expired: Vec<&pb::ConsentEvent> = events
        .iter()
        .filter(|e| e.r#type == pb::consent_event::Type::Expired as i32)
        .collect();
    assert_eq!(expired.len(), 1);
    let e = expired[0];
    assert_eq!(e.consent, consent.name);
    assert_eq!(
        e.time.as_ref().map(|t| t.seconds),
        Some(expire.timestamp()),
        "it expired at its expire_time"
    );
    assert_eq!(
        (e.organization.as_str(), e.user_id.as_str()),
        ("", "system:consent-expiry")
    );
    assert_eq!(e.consent_state, pb::consent::State::Expired as i32);
    let stored = get_consent(&mut kela, &consent.name).await;
    assert_eq!(
        (stored.state, stored.etag.as_str()),
        (pb::consent::State::Expired as i32, "v2")
    );
    let still = get_consent(&mut kela, &lasting.name).await;
    assert_eq!(still.state, pb::consent::State::Active as i32);

    // Filters: by the organisation that acted (expiry has none) and by time.
    let by_kela = auditor
        .consents
        .list_consent_events(pb::ListConsentEventsRequest {
            organization: "organizations/kela".into(),
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .consent_events;
    assert!(
        by_kela
            .iter()
            .all(|e| e.r#type != pb::consent_event::Type::Expired as i32)
            && by_kela.len() == 2
    );
    let after_grants = auditor
        .consents
        .list_consent_events(pb::ListConsentEventsRequest {
            start_time: Some(timestamp_after(&app.clock, -36 * 3600)),
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .consent_events;
    assert_eq!(after_grants.len(), 1, "only the expiry is after the grants");

    // The round is in the audit trail, under the person, by the exchange itself.
    let trail = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            method: "ExpireConsents".into(),
            ..Default::default()
        })
        .await
        .expect("trail")
        .into_inner()
        .audit_events;
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (trail[0].organization.as_str(), trail[0].user_id.as_str()),
        ("", "system:consent-expiry")
    );
    assert_eq!(trail[0].resources, vec![consent.name.clone()]);
    app.stop().await;
}

both_engines!(the_background_tasks_expire_consents_and_sign_checkpoints_without_a_call);
async fn the_background_tasks_expire_consents_and_sign_checkpoints_without_a_call(db: Db) {
    let app = TestApp::spawn_with(db, default_start(), |s| {
        s.background.interval = StdDuration::from_millis(50);
        s.audit_log.sequencer_interval = StdDuration::from_millis(50);
    })
    .await;
    let mut kela = app.kela().await;
    let mut auditor = app.auditor().await;
    let expire = app.clock.now() + Duration::hours(1);
    let consent = kela
        .consents
        .record_consent(written_consent(PIC, &["hva-15"], expire))
        .await
        .expect("consent")
        .into_inner();
    app.clock.advance(Duration::hours(2));
    let mut expired = false;
    let mut integrated = false;
    for _ in 0..200 {
        let events = auditor
            .consents
            .list_consent_events(pb::ListConsentEventsRequest {
                consent: consent.name.clone(),
                ..Default::default()
            })
            .await
            .expect("events")
            .into_inner()
            .consent_events;
        expired = events
            .iter()
            .any(|e| e.r#type == pb::consent_event::Type::Expired as i32);
        let grant = auditor
            .audit
            .list_audit_events(pb::ListAuditEventsRequest {
                method: "RecordConsent".into(),
                ..Default::default()
            })
            .await
            .expect("trail")
            .into_inner()
            .audit_events;
        integrated = grant.first().is_some_and(|e| e.leaf_index.is_some());
        if expired && integrated {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert!(expired, "the consent expired without anyone calling");
    assert!(integrated, "the sequencer put the grant in the tree");
    app.stop().await;
}

/// PostgreSQL hands out audit sequence numbers at insert time and makes them visible at commit, in
/// any order. An event that commits after later-numbered events are in the tree still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_commits_late_is_integrated_by_a_later_round() {
    let app = app_with_manual_sequencer(Db::Postgres).await;
    let mut kela = app.kela().await;
    let mut auditor = app.auditor().await;
    let store = app.exchange().store().clone();
    let mut slow = store.begin().await.expect("begin");
    let record = referral_exchange::audit::AuditRecord {
        time: app.clock.now(),
        organization: "kela".into(),
        user_id: "slow-handler".into(),
        method: "/referral_exchange.v1.ReferralService/GetReferral".into(),
        resources: vec![],
        subject_pseudonyms: vec![],
        status_code: 0,
        correlation_id: String::new(),
        disclosures: vec![],
    };
    slow.insert_audit_event(&record).await.expect("insert");
    slow.flush().await.expect("written, not committed");
    traffic(&mut kela, 3).await;
    // Two rounds at once, as two replicas might: the round lock makes them take turns.
    let (a, b) = tokio::join!(
        app.exchange().integrate_audit_events(1000),
        app.exchange().integrate_audit_events(1000)
    );
    a.expect("round a");
    b.expect("round b");
    let before = checkpoint(&mut auditor).await;
    let early_leaves = export(&mut auditor, 0, before.tree_size).await;
    assert!(
        early_leaves.iter().all(|e| e.user_id != "slow-handler"),
        "not committed, not in the tree"
    );

    slow.commit().await.expect("commit late");
    sequence(&app, 1000).await;
    let after = checkpoint(&mut auditor).await;
    let leaves = export(&mut auditor, 0, after.tree_size).await;
    let position = leaves
        .iter()
        .position(|e| e.user_id == "slow-handler")
        .expect("integrated after all");
    let late = leaves[position].sequence;
    assert!(position as i64 >= before.tree_size);
    assert!(
        early_leaves.iter().any(|e| e.sequence > late),
        "its number was taken before events the earlier round integrated"
    );
    verify(
        &after.verifier_key,
        &after.checkpoint,
        Some(&before.checkpoint),
        leaves,
    )
    .expect("and it verifies");
    app.stop().await;
}

/// A log with some history, its latest checkpoint, and a leaf in the middle to attack.
async fn logged_app(db: Db) -> (TestApp, pb::GetCheckpointResponse, i64) {
    let app = app_with_manual_sequencer(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut auditor = app.auditor().await;
    let referral = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    receive(&mut hva15, &referral.name).await;
    traffic(&mut kela, 4).await;
    sequence(&app, 1000).await;
    let signed = checkpoint(&mut auditor).await;
    let leaves = export(&mut auditor, 0, signed.tree_size).await;
    verify(&signed.verifier_key, &signed.checkpoint, None, leaves)
        .expect("verifies before the attack");
    // Leaf 2 is the receiver's pull, leaf 3 its acknowledgement: two different events.
    let target = 2;
    (app, signed, target)
}

async fn event_sequence_of_leaf(app: &TestApp, leaf: i64) -> i64 {
    app.sql(&format!(
        "SELECT CAST(event_sequence AS TEXT) FROM audit_leaves WHERE leaf_index = {leaf}"
    ))
    .await
    .expect("query")
    .first()
    .and_then(|s| s.parse().ok())
    .expect("the leaf exists")
}

/// What an attacker with database access runs first: the append-only triggers go.
fn drop_triggers(engine: Db, table: &str) -> String {
    match engine {
        Db::Sqlite => format!(
            "DROP TRIGGER IF EXISTS {table}_no_update; DROP TRIGGER IF EXISTS {table}_no_delete"
        ),
        Db::Postgres => format!("DROP TRIGGER IF EXISTS {table}_append_only ON {table}"),
    }
}

fn without_foreign_keys(engine: Db) -> &'static str {
    match engine {
        Db::Sqlite => "PRAGMA foreign_keys = OFF",
        Db::Postgres => "SET session_replication_role = replica",
    }
}

impl TestApp {
    /// Runs statements one after another on one raw connection to the database.
    async fn attack(&self, statements: &[&str]) {
        use sqlx::Connection;
        let statements: Vec<String> = statements
            .iter()
            .flat_map(|s| s.split("; "))
            .map(str::to_owned)
            .collect();
        match self.engine {
            Db::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(self.db.url())
                    .await
                    .expect("connect");
                for s in statements {
                    sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                        .execute(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
            }
            Db::Postgres => {
                let mut conn = sqlx::PgConnection::connect(self.db.url())
                    .await
                    .expect("connect");
                for s in statements {
                    sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                        .execute(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
            }
        }
    }
}

/// Runs `referral-exchange audit verify` on files, as an auditor would: (exit code, stderr).
fn run_verify(signed: &pb::GetCheckpointResponse, leaves: &[pb::AuditEvent]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("dir");
    let export = dir.path().join("export.jsonl");
    let lines: Vec<String> = leaves
        .iter()
        .map(|e| serde_json::to_string(e).expect("json"))
        .collect();
    std::fs::write(&export, lines.join("\n") + "\n").expect("write export");
    let checkpoint = dir.path().join("checkpoint");
    std::fs::write(&checkpoint, &signed.checkpoint).expect("write checkpoint");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-exchange"))
        .args(["audit", "verify", "--export"])
        .arg(&export)
        .arg("--checkpoint")
        .arg(&checkpoint)
        .args(["--public-key", &signed.verifier_key])
        .output()
        .expect("run the verifier");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

both_engines!(auditors_read_the_coded_skeleton_not_the_persons_content);
async fn auditors_read_the_coded_skeleton_not_the_persons_content(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let referral = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    let consent = match &referral.basis {
        Some(pb::referral::Basis::Consent(name)) => name.clone(),
        other => panic!("a consent: {other:?}"),
    };
    let mut auditor = app.auditor().await;

    let read = auditor
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: referral.name.clone(),
        })
        .await
        .expect("an auditor reads referrals")
        .into_inner();
    assert_eq!(read.subject, None, "no identity code");
    assert_eq!(read.reason_text, "", "no free text");
    // The skeleton stays: codes, routing, state, times.
    assert_eq!(read.kind, referral.kind);
    assert_eq!(read.reasons, referral.reasons);
    assert_eq!(read.recipient, referral.recipient);
    assert_eq!(read.state, referral.state);
    assert_eq!(read.create_time, referral.create_time);
    let listed = auditor
        .referrals
        .list_referrals(pb::ListReferralsRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .referrals;
    assert_eq!(
        listed.len(),
        1,
        "found by identity code, through its pseudonym"
    );
    assert_eq!(
        (listed[0].subject.clone(), listed[0].reason_text.as_str()),
        (None, "")
    );

    let consent_read = get_consent(&mut auditor, &consent).await;
    assert_eq!(consent_read.subject, None);
    assert_eq!(consent_read.state, pb::consent::State::Used as i32);
    let listed = auditor
        .consents
        .list_consents(pb::ListConsentsRequest::default())
        .await
        .expect("list consents")
        .into_inner()
        .consents;
    assert!(
        listed
            .iter()
            .all(|c| c.subject.is_none() && c.evidence_reference.is_empty())
    );

    // The same over HTTP; Kela still reads the content it sent.
    let mut auditor_http = app.rest("auditor-dpo", None).await;
    let answer = auditor_http
        .get(&format!("/v1/{}", referral.name))
        .await
        .expect(200);
    assert!(!answer.text.contains(PIC), "{}", answer.text);
    assert!(answer.json["subject"].is_null(), "{}", answer.text);
    let kela_read = kela
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: referral.name.clone(),
        })
        .await
        .expect("kela reads")
        .into_inner();
    assert_eq!(
        kela_read
            .subject
            .map(|s| s.personal_identity_code)
            .as_deref(),
        Some(PIC)
    );
    assert!(!kela_read.reason_text.is_empty());
    app.stop().await;
}

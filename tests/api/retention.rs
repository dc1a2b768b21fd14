//! Kept no longer than needed: `--content-retention-days` after a referral closes (after a consent
//! stops being ACTIVE) its personal content is erased, through the API and in the raw database; the
//! coded skeleton stays, open referrals keep everything, each erasure is an audit event, and the audit
//! log still verifies.

use chrono::Duration;
use referral_exchange::{cli::audit::verify, exchange::retention::ERASURE_METHOD, proto::v1 as pb};

use crate::{
    audit::{app_with_manual_sequencer, checkpoint, export, sequence},
    helpers::*,
    sealing::{CODE, seed},
};

async fn get(clients: &mut Clients, name: &str) -> pb::Referral {
    clients
        .referrals
        .get_referral(pb::GetReferralRequest { name: name.into() })
        .await
        .expect("get")
        .into_inner()
}

/// The raw database's answer to `sql` (one count).
async fn count(app: &TestApp, sql: &str) -> String {
    app.sql(sql).await.expect("raw query").join(",")
}

both_engines!(content_is_erased_after_its_retention_leaving_the_skeleton);
async fn content_is_erased_after_its_retention_leaving_the_skeleton(db: Db) {
    let app = app_with_manual_sequencer(db).await;
    // Closed on day 0: one rejected, one cancelled. The written consent expires on day 30.
    let (rejected, cancelled) = seed(&app).await;
    let mut kela = app.kela().await;
    let open = kela
        .referrals
        .create_referral(notification(CODE, JYVASKYLA))
        .await
        .expect("an open referral")
        .into_inner();

    // Day 89: everything is still within the 90 days.
    app.clock.advance(Duration::days(89));
    let round = app.exchange().erase_expired_content().await.expect("round");
    assert_eq!((round.referrals, round.consents), (0, 0));
    assert!(get(&mut kela, &rejected).await.subject.is_some());

    // Day 91: the closed referrals' content goes; the consent has been inactive only 61 days.
    app.clock.advance(Duration::days(2));
    let round = app.exchange().erase_expired_content().await.expect("round");
    assert_eq!((round.referrals, round.consents), (2, 0));
    assert!(round.requests_forgotten >= 4, "{round:?}");
    // Day 121: the consent's too. A second round finds nothing more.
    app.clock.advance(Duration::days(30));
    let round = app.exchange().erase_expired_content().await.expect("round");
    assert_eq!((round.referrals, round.consents), (0, 1));
    let round = app.exchange().erase_expired_content().await.expect("round");
    assert_eq!((round.referrals, round.consents), (0, 0));

    // Through the API: the skeleton, without the content.
    let r = get(&mut kela, &rejected).await;
    assert_eq!(r.subject, None);
    assert_eq!(
        (r.reason_text.as_str(), r.application_reference.as_str()),
        ("", "")
    );
    assert!(r.content_erase_time.is_some());
    assert_eq!(r.state, pb::referral::State::Rejected as i32);
    assert_eq!(r.kind, pb::referral::Kind::NeedForSocialWork as i32);
    assert_eq!(r.home_municipality_code, JYVASKYLA);
    assert_eq!(r.recipient, "organizations/hva-15");
    assert_eq!(r.reasons.len(), 2);
    assert!(r.history.len() >= 3, "{:?}", r.history);
    let mut hva15 = app.receiver("hva-15").await;
    let seen_by_receiver = get(&mut hva15, &rejected).await;
    assert_eq!(seen_by_receiver.rejection_text, "");
    assert_eq!(
        seen_by_receiver.rejection_reason,
        pb::referral::RejectionReason::Duplicate as i32,
        "coded reasons stay"
    );
    let c = get(&mut kela, &cancelled).await;
    assert_eq!((c.subject, c.cancellation_text.as_str()), (None, ""));
    assert_eq!(c.state, pb::referral::State::Cancelled as i32);
    // Messages that point at erased content (Kela's state changes, waiting in its mailbox since day
    // 0) deliver the skeleton.
    let delivered = drain(&mut kela).await;
    let about_erased: Vec<&pb::Referral> = delivered
        .iter()
        .filter_map(|m| m.referral.as_ref())
        .filter(|r| r.name == rejected || r.name == cancelled)
        .collect();
    assert!(!about_erased.is_empty(), "{delivered:?}");
    for r in about_erased {
        assert_eq!((r.subject.as_ref(), r.reason_text.as_str()), (None, ""));
        assert!(r.content_erase_time.is_some());
    }
    // The open referral keeps everything.
    let o = get(&mut kela, &open.name).await;
    assert_eq!(
        o.subject.map(|s| s.personal_identity_code).as_deref(),
        Some(CODE)
    );
    assert!(!o.reason_text.is_empty() && o.content_erase_time.is_none());
    // The consent: still found by the person (through the kept pseudonym), its content gone.
    let consents = kela
        .consents
        .list_consents(pb::ListConsentsRequest {
            personal_identity_code: CODE.into(),
            ..Default::default()
        })
        .await
        .expect("consents")
        .into_inner()
        .consents;
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0].subject, None);
    assert_eq!(consents[0].evidence_reference, "");
    assert!(consents[0].content_erase_time.is_some());

    // In the raw database: the columns are empty, not just unreadable.
    assert_eq!(
        count(
            &app,
            "SELECT CAST(COUNT(*) AS TEXT) FROM referrals WHERE content_erase_time IS NOT NULL \
             AND subject_code = '' AND reason_text = '' AND subject_name IS NULL \
             AND subject_phone IS NULL AND application_reference IS NULL \
             AND rejection_text IS NULL AND cancellation_text IS NULL",
        )
        .await,
        "2"
    );
    assert_eq!(
        count(
            &app,
            "SELECT CAST(COUNT(*) AS TEXT) FROM referrals WHERE content_erase_time IS NULL \
             AND subject_code <> '' AND reason_text <> ''",
        )
        .await,
        "1",
        "the open referral's content is there"
    );
    assert_eq!(
        count(
            &app,
            "SELECT CAST(COUNT(*) AS TEXT) FROM consents WHERE content_erase_time IS NOT NULL \
             AND subject_code = '' AND evidence_reference = ''",
        )
        .await,
        "1"
    );
    assert_eq!(
        count(&app, "SELECT CAST(COUNT(*) AS TEXT) FROM idempotency_keys").await,
        "0",
        "the stored responses are forgotten too"
    );

    // Each erasure is an audit event of its own, in the person's trail.
    let mut auditor = app.auditor().await;
    let events = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            personal_identity_code: CODE.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    let mut erased: Vec<String> = events
        .iter()
        .filter(|e| e.method == ERASURE_METHOD)
        .flat_map(|e| {
            assert_eq!(e.resources.len(), 1, "one event per erasure");
            e.resources.clone()
        })
        .collect();
    erased.sort();
    let mut expected = vec![
        rejected.clone(),
        cancelled.clone(),
        consents[0].name.clone(),
    ];
    expected.sort();
    assert_eq!(erased, expected);

    // And the log still verifies.
    sequence(&app, 1000).await;
    let signed = checkpoint(&mut auditor).await;
    let leaves = export(&mut auditor, 0, 0).await;
    verify(&signed.verifier_key, &signed.checkpoint, None, leaves).expect("the log verifies");
    app.stop().await;
}

both_engines!(a_stopping_server_ends_its_retention_round_after_the_batch_in_hand);
/// A backlog larger than one batch (100 referrals a transaction) is not worked off while the server
/// stops: the round ends after the batch it has begun, and the rest is erased by the next one.
async fn a_stopping_server_ends_its_retention_round_after_the_batch_in_hand(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    for _ in 0..101 {
        let created = kela
            .referrals
            .create_referral(notification(CODE, JYVASKYLA))
            .await
            .expect("create")
            .into_inner();
        kela.referrals
            .cancel_referral(pb::CancelReferralRequest {
                name: created.name,
                etag: String::new(),
                request_id: new_request_id(),
                reason_text: "Lähetetty vahingossa".into(),
            })
            .await
            .expect("cancel");
    }
    app.clock.advance(Duration::days(91));
    app.exchange().begin_shutdown();
    let round = app.exchange().erase_expired_content().await.expect("round");
    assert_eq!(round.referrals, 100, "one batch, then the round ends");
    let round = app.exchange().erase_expired_content().await.expect("round");
    assert_eq!(round.referrals, 1, "the next round erases the rest");
    app.stop().await;
}

//! The whole path, for all three users: Kela refers, the receiver takes it through its states, Kela
//! reads the coded loop back, the auditor reads who did what.

use referral_exchange::proto::v1 as pb;
use tonic::Code;

use crate::helpers::*;

both_engines!(kela_refers_receiver_completes_kela_reads_the_loop_auditor_reads_the_trail);
async fn kela_refers_receiver_completes_kela_reads_the_loop_auditor_reads_the_trail(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut auditor = app.auditor().await;

    // Kela: consent, then the referral; routed by home municipality.
    let consent = kela
        .consents
        .record_consent(oral_consent(PIC, &["hva-15"]))
        .await
        .expect("consent")
        .into_inner();
    assert_eq!(consent.state, pb::consent::State::Active as i32);
    let created = kela
        .referrals
        .create_referral(referral(PIC, JYVASKYLA, &consent.name))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.recipient, "organizations/hva-15");
    assert_eq!(created.state, pb::referral::State::Requested as i32);
    assert_eq!(created.state_reason, "ROUTED");
    let used = get_consent(&mut kela, &consent.name).await;
    assert_eq!(
        used.state,
        pb::consent::State::Used as i32,
        "an oral consent covers one referral"
    );
    assert_eq!(used.used_by, created.name);

    // The receiver pulls it, with the subject it needs.
    let messages = pull(&mut hva15, 10).await;
    assert_eq!(messages.len(), 1);
    let routed = &messages[0];
    assert_eq!(routed.r#type, pb::message::Type::ReferralRouted as i32);
    assert_eq!(routed.delivery_attempt, 1);
    assert_eq!(routed.sequence, 1);
    let delivered = routed.referral.as_ref().expect("referral attached");
    assert_eq!(delivered.name, created.name);
    assert_eq!(
        delivered
            .subject
            .as_ref()
            .map(|s| s.personal_identity_code.as_str()),
        Some(PIC)
    );

    // Acknowledging is taking delivery: RECEIVED, and deadlines start.
    let results = ack(&mut hva15, vec![routed.ack_id.clone()]).await;
    assert!(results[0].applied);
    let received = hva15
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: created.name.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(received.state, pb::referral::State::Received as i32);
    assert!(received.receive_time.is_some());

    let accepted = hva15
        .referrals
        .accept_referral(pb::AcceptReferralRequest {
            name: received.name.clone(),
            etag: received.etag.clone(),
            request_id: new_request_id(),
        })
        .await
        .expect("accept")
        .into_inner();
    let started = hva15
        .referrals
        .start_assessment(pb::StartAssessmentRequest {
            name: accepted.name.clone(),
            etag: accepted.etag.clone(),
            request_id: new_request_id(),
        })
        .await
        .expect("start")
        .into_inner();
    assert_eq!(started.state, pb::referral::State::InProgress as i32);
    let completed = hva15
        .referrals
        .complete_referral(pb::CompleteReferralRequest {
            name: started.name.clone(),
            etag: started.etag.clone(),
            request_id: new_request_id(),
            outcome: pb::referral::Outcome::ServicesStarted as i32,
        })
        .await
        .expect("complete")
        .into_inner();
    assert_eq!(completed.state, pb::referral::State::Completed as i32);
    assert_eq!(
        completed.outcome,
        pb::referral::Outcome::ServicesStarted as i32
    );
    assert_eq!(completed.history.len(), 5);

    // Kela reads the coded loop, in order, naming who changed what.
    let loop_back = drain(&mut kela).await;
    let states: Vec<(i32, String)> = loop_back
        .iter()
        .map(|m| {
            assert_eq!(m.r#type, pb::message::Type::ReferralStateChanged as i32);
            let change = m.state_change.as_ref().expect("coded change");
            assert_eq!(change.organization, "organizations/hva-15");
            (change.state, change.reason.clone())
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (
                pb::referral::State::Received as i32,
                "RECEIVED_BY_RECIPIENT".into()
            ),
            (pb::referral::State::Accepted as i32, "ACCEPTED".into()),
            (
                pb::referral::State::InProgress as i32,
                "ASSESSMENT_STARTED".into()
            ),
            (
                pb::referral::State::Completed as i32,
                "SERVICES_STARTED".into()
            ),
        ]
    );
    let sequences: Vec<i64> = loop_back.iter().map(|m| m.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4]);

    // The auditor: everything about the person, in order, reads included.
    let events = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    let methods: Vec<&str> = events
        .iter()
        .map(|e| e.method.rsplit('/').next().unwrap_or_default())
        .collect();
    assert_eq!(
        methods,
        vec![
            "RecordConsent",
            "CreateReferral",
            "GetConsent",
            "PullMessages",
            "AcknowledgeMessages",
            "GetReferral",
            "AcceptReferral",
            "StartAssessment",
            "CompleteReferral",
            "PullMessages",
        ]
    );
    assert!(events.iter().all(|e| e.status_code == 0));
    let pull_event = &events[3];
    assert_eq!(pull_event.organization, "organizations/hva-15");
    assert_eq!(pull_event.user_id, "worker-1");
    let disclosure = pull_event
        .disclosures
        .first()
        .expect("the pull is a disclosure");
    assert_eq!(disclosure.recipient, "organizations/hva-15");
    assert_eq!(disclosure.resource, created.name);
    assert_eq!(disclosure.basis, consent.name);
    assert_eq!(disclosure.consent_state, "USED");
    assert!(events[1].resources.contains(&created.name));
    assert!(events[1].resources.contains(&consent.name));
    let pseudonym = &events[0].subject_pseudonym;
    assert_eq!(pseudonym.len(), 64);
    assert!(events.iter().all(|e| &e.subject_pseudonym == pseudonym));

    // Filters: organisation, user, method, time.
    let by_org_and_method = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            organization: "organizations/hva-15".into(),
            method: "AcceptReferral".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    assert_eq!(by_org_and_method.len(), 1);
    let by_user = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            user_id: "handler-1".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    assert!(
        by_user
            .iter()
            .all(|e| e.organization == "organizations/kela")
    );
    assert_eq!(
        by_user.len(),
        5,
        "kela: record, create, get consent, pull, acknowledge"
    );
    let later = timestamp_after(&app.clock, 1);
    let none_yet = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            start_time: Some(later),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    assert!(none_yet.is_empty());

    // Nothing of the above put an identity code into the audit trail.
    assert!(!app.audit_table_text().await.contains("131052"));
    app.stop().await;
}

both_engines!(a_rejection_reaches_kela_as_a_code_without_the_receivers_text);
async fn a_rejection_reaches_kela_as_a_code_without_the_receivers_text(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let created = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    let received = receive(&mut hva15, &created.name).await;
    let (name, etag, request_id) = change_fields(&received);
    let rejected = hva15
        .referrals
        .reject_referral(pb::RejectReferralRequest {
            name,
            etag,
            request_id,
            reason: pb::referral::RejectionReason::Duplicate as i32,
            reason_text: "Same matter as our case 2025/123 of Mrs X.".into(),
        })
        .await
        .expect("reject")
        .into_inner();
    assert_eq!(
        rejected.rejection_text,
        "Same matter as our case 2025/123 of Mrs X."
    );

    let loop_back = drain(&mut kela).await;
    let last = loop_back.last().expect("state changes");
    let change = last.state_change.as_ref().expect("coded change");
    assert_eq!(change.state, pb::referral::State::Rejected as i32);
    assert_eq!(change.reason, "DUPLICATE");
    let as_kela_sees_it = last.referral.as_ref().expect("referral");
    assert_eq!(
        as_kela_sees_it.rejection_reason,
        pb::referral::RejectionReason::Duplicate as i32
    );
    assert_eq!(
        as_kela_sees_it.rejection_text, "",
        "the receiver's free text stays with receivers"
    );
    let got = kela
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: created.name.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.rejection_text, "");
    app.stop().await;
}

both_engines!(forwarding_moves_the_referral_and_the_forwarder_keeps_read_access_only);
async fn forwarding_moves_the_referral_and_the_forwarder_keeps_read_access_only(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut helsinki = app.receiver("helsinki").await;
    let created = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15", "helsinki"]).await;
    let received = receive(&mut hva15, &created.name).await;
    let (name, etag, request_id) = change_fields(&received);
    let forwarded = hva15
        .referrals
        .forward_referral(pb::ForwardReferralRequest {
            name,
            etag,
            request_id,
            home_municipality_code: HELSINKI.into(),
        })
        .await
        .expect("forward")
        .into_inner();
    assert_eq!(forwarded.recipient, "organizations/helsinki");
    assert_eq!(forwarded.state, pb::referral::State::Requested as i32);
    assert_eq!(forwarded.state_reason, "FORWARDED");

    // Helsinki receives it as a new referral in its mailbox.
    let at_helsinki = receive(&mut helsinki, &created.name).await;
    assert_eq!(at_helsinki.state, pb::referral::State::Received as i32);

    // The forwarder still reads what it had, but cannot change it any more.
    let as_forwarder = hva15
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: created.name.clone(),
        })
        .await
        .expect("forwarder reads")
        .into_inner();
    assert_eq!(as_forwarder.state_reason, "FORWARDED");
    assert_eq!(
        as_forwarder.history.len(),
        3,
        "routed, received, forwarded: nothing of Helsinki's"
    );
    let status = assert_code(
        hva15
            .referrals
            .accept_referral(pb::AcceptReferralRequest {
                name: created.name.clone(),
                etag: String::new(),
                request_id: new_request_id(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "REFERRAL_FORWARDED_AWAY");

    // Kela is told, with the new recipient.
    let loop_back = drain(&mut kela).await;
    let forward = loop_back
        .iter()
        .filter_map(|m| m.state_change.as_ref())
        .find(|c| c.reason == "FORWARDED")
        .expect("kela told of the forward");
    assert_eq!(forward.recipient, "organizations/helsinki");
    assert_eq!(forward.organization, "organizations/hva-15");
    app.stop().await;
}

both_engines!(forwarding_needs_a_consent_that_covers_the_new_organiser);
async fn forwarding_needs_a_consent_that_covers_the_new_organiser(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let created = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    let received = receive(&mut hva15, &created.name).await;
    let (name, etag, request_id) = change_fields(&received);
    let status = assert_code(
        hva15
            .referrals
            .forward_referral(pb::ForwardReferralRequest {
                name,
                etag,
                request_id,
                home_municipality_code: HELSINKI.into(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "CONSENT_RECIPIENT_NOT_COVERED");
    app.stop().await;
}

both_engines!(kela_cancels_and_the_receiver_is_told);
async fn kela_cancels_and_the_receiver_is_told(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let created = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    let (name, etag, request_id) = change_fields(&created);
    let cancelled = kela
        .referrals
        .cancel_referral(pb::CancelReferralRequest {
            name,
            etag,
            request_id,
            reason_text: "Client moved abroad".into(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.state, pb::referral::State::Cancelled as i32);
    assert_eq!(cancelled.state_reason, "CANCELLED_BY_REFERRER");
    let types: Vec<i32> = drain(&mut hva15).await.iter().map(|m| m.r#type).collect();
    assert_eq!(
        types,
        vec![
            pb::message::Type::ReferralRouted as i32,
            pb::message::Type::ReferralCancelled as i32
        ]
    );
    let status = assert_code(
        kela.referrals
            .cancel_referral(pb::CancelReferralRequest {
                name: created.name.clone(),
                etag: String::new(),
                request_id: new_request_id(),
                reason_text: String::new(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "ILLEGAL_TRANSITION");
    app.stop().await;
}

both_engines!(a_statutory_notification_needs_no_consent);
async fn a_statutory_notification_needs_no_consent(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut helsinki = app.receiver("helsinki").await;
    let created = kela
        .referrals
        .create_referral(notification(PIC, HELSINKI))
        .await
        .expect("notify")
        .into_inner();
    assert_eq!(created.recipient, "organizations/helsinki");
    let received = receive(&mut helsinki, &created.name).await;
    assert_eq!(
        received.assessment_due_date, "2025-03-03",
        "urgent: assessed the same (Helsinki) day it was received"
    );
    app.stop().await;
}

both_engines!(receivers_list_what_is_routed_to_them_and_kela_lists_everything);
async fn receivers_list_what_is_routed_to_them_and_kela_lists_everything(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut helsinki = app.receiver("helsinki").await;
    for _ in 0..3 {
        consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    }
    kela.referrals
        .create_referral(notification("010594Y9032", HELSINKI))
        .await
        .expect("notify");

    // Kela pages through all four, two at a time.
    let first = kela
        .referrals
        .list_referrals(pb::ListReferralsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(first.referrals.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = kela
        .referrals
        .list_referrals(pb::ListReferralsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(second.referrals.len(), 2);
    assert!(second.next_page_token.is_empty());
    let mut names: Vec<String> = first
        .referrals
        .iter()
        .chain(&second.referrals)
        .map(|r| r.name.clone())
        .collect();
    names.dedup();
    assert_eq!(names.len(), 4);

    // A token belongs to its query.
    let status = assert_code(
        kela.referrals
            .list_referrals(pb::ListReferralsRequest {
                page_size: 2,
                page_token: first.next_page_token.clone(),
                state: pb::referral::State::Cancelled as i32,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(reason(&status), "INVALID_PAGE_TOKEN");

    let by_subject = kela
        .referrals
        .list_referrals(pb::ListReferralsRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(by_subject.referrals.len(), 3);

    let mine = hva15
        .referrals
        .list_referrals(pb::ListReferralsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(mine.referrals.len(), 3);
    assert!(
        mine.referrals
            .iter()
            .all(|r| r.recipient == "organizations/hva-15")
    );
    let theirs = helsinki
        .referrals
        .list_referrals(pb::ListReferralsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(theirs.referrals.len(), 1);
    app.stop().await;
}

both_engines!(the_directory_resolves_organisers_by_municipality_and_date);
async fn the_directory_resolves_organisers_by_municipality_and_date(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let resolved = kela
        .directory
        .resolve_recipient(pb::ResolveRecipientRequest {
            home_municipality_code: "478".into(),
            date: String::new(),
        })
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(resolved.recipient, "organizations/aland-478");
    assert_eq!(resolved.municipality_name_fi, "Maarianhamina");
    let pertunmaa_2024 = kela
        .directory
        .resolve_recipient(pb::ResolveRecipientRequest {
            home_municipality_code: "588".into(),
            date: "2024-12-31".into(),
        })
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(pertunmaa_2024.recipient, "organizations/hva-12");
    assert_eq!(pertunmaa_2024.code_list_year, 2024);
    let status = assert_code(
        kela.directory
            .resolve_recipient(pb::ResolveRecipientRequest {
                home_municipality_code: "588".into(),
                date: "2025-01-01".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        vec![(
            "home_municipality_code".to_string(),
            "UNKNOWN_ON_DATE".to_string()
        )]
    );

    let all = kela
        .directory
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .organizations;
    assert_eq!(all.len(), 1 + 21 + 1 + 16);
    assert_eq!(all[0].name, "organizations/kela");
    let receivers = kela
        .directory
        .list_organizations(pb::ListOrganizationsRequest {
            role: pb::organization::Role::Receiver as i32,
        })
        .await
        .expect("list")
        .into_inner()
        .organizations;
    assert_eq!(receivers.len(), 38);
    app.stop().await;
}

both_engines!(the_correlation_id_and_the_acting_person_are_recorded);
async fn the_correlation_id_and_the_acting_person_are_recorded(db: Db) {
    let app = TestApp::spawn(db).await;
    let metadata = Metadata {
        user: Some("handler-9".into()),
        correlation: Some("kela-case-4711".into()),
    };
    let mut kela = Clients::new(app.channel("kela").await, metadata);
    let created = kela
        .referrals
        .create_referral(notification(PIC, HELSINKI))
        .await
        .expect("create")
        .into_inner();
    let mut auditor = app.auditor().await;
    let events = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            resource: created.name.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].correlation_id, "kela-case-4711");
    assert_eq!(events[0].user_id, "handler-9");
    assert_eq!(events[0].status, "OK");
    app.stop().await;
}

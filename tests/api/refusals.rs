//! Every refusal the issue names, each its own test, on both engines. A refusal changes nothing and
//! is itself audited.

use chrono::{Duration, TimeZone, Utc};
use referral_exchange::{clock::Clock, proto::v1 as pb, tls};
use tonic::{Code, transport::Endpoint};

use crate::helpers::*;

/// A call over a TLS connection that presents `cert_dir`'s certificate (or none) to the server.
async fn call_with(app: &TestApp, cert_dir: Option<&std::path::Path>) -> Result<(), tonic::Status> {
    let server_ca = std::fs::read(app.profile("kela").join("ca.pem")).expect("ca");
    let tls = match cert_dir {
        Some(dir) => tls::client_tls_config_pem(
            &server_ca,
            &std::fs::read(dir.join("cert.pem")).expect("cert"),
            &std::fs::read(dir.join("key.pem")).expect("key"),
            "localhost",
        ),
        None => tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(server_ca))
            .domain_name("localhost"),
    };
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", app.addr().port()))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = Clients::new(
        channel,
        Metadata {
            user: Some("handler-1".into()),
            correlation: None,
        },
    );
    // A listing of referrals: audited when it reaches the service (a directory read would not be).
    client
        .referrals
        .list_referrals(pb::ListReferralsRequest::default())
        .await
        .map(|_| ())
}

async fn refer(app: &TestApp, request: pb::CreateReferralRequest) -> tonic::Status {
    let mut kela = app.kela().await;
    assert_code(
        kela.referrals.create_referral(request).await,
        Code::InvalidArgument,
    )
}

fn with_code(code: &str) -> pb::CreateReferralRequest {
    let mut request = notification(code, HELSINKI);
    request.request_id = new_request_id();
    request
}

/// Refers with identity code `code` and expects exactly the rules `rules` to be named.
async fn identity_code_refused(db: Db, code: &str, rules: &[&str]) {
    let app = TestApp::spawn(db).await;
    let status = refer(&app, with_code(code)).await;
    let expected: Vec<(String, String)> = rules
        .iter()
        .map(|rule| {
            (
                "referral.subject.personal_identity_code".to_string(),
                rule.to_string(),
            )
        })
        .collect();
    assert_eq!(violations(&status), expected, "{code}");
    assert_eq!(reason(&status), "INVALID_ARGUMENT");
    assert!(
        !status.message().contains(code),
        "the refusal does not echo the code"
    );
    app.stop().await;
}

both_engines!(no_client_certificate_is_refused_at_the_handshake);
async fn no_client_certificate_is_refused_at_the_handshake(db: Db) {
    let app = TestApp::spawn(db).await;
    let before = app.audit_event_count().await;
    assert!(call_with(&app, None).await.is_err());
    assert!(
        call_with(&app, Some(&app.profile("kela"))).await.is_ok(),
        "a member still gets in"
    );
    assert_eq!(
        app.audit_event_count().await,
        before + 1,
        "only the member's call reached the service"
    );
    app.stop().await;
}

both_engines!(a_certificate_from_another_ca_is_refused_at_the_handshake);
async fn a_certificate_from_another_ca_is_refused_at_the_handshake(db: Db) {
    let app = TestApp::spawn(db).await;
    let other = tempfile::tempdir().expect("dir");
    tls::write_dev_pki(other.path(), &["kela"]).expect("other pki");
    let before = app.audit_event_count().await;
    assert!(
        call_with(
            &app,
            Some(&tls::PkiLayout::new(other.path()).client_dir("kela"))
        )
        .await
        .is_err()
    );
    assert_eq!(app.audit_event_count().await, before);
    app.stop().await;
}

both_engines!(an_organisation_outside_the_exchange_is_unauthenticated);
async fn an_organisation_outside_the_exchange_is_unauthenticated(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut stranger = app.as_user("hva-22", "w1").await;
    let status = assert_code(
        stranger
            .directory
            .list_organizations(pb::ListOrganizationsRequest::default())
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&status), "UNKNOWN_ORGANIZATION");
    app.stop().await;
}

both_engines!(a_call_without_the_acting_person_is_unauthenticated);
async fn a_call_without_the_acting_person_is_unauthenticated(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut anonymous = Clients::new(
        app.channel("kela").await,
        Metadata {
            user: None,
            correlation: None,
        },
    );
    let status = assert_code(
        anonymous
            .consents
            .record_consent(oral_consent(PIC, &["hva-15"]))
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&status), "USER_ID_MISSING");
    app.stop().await;
}

both_engines!(each_role_is_held_to_its_methods);
async fn each_role_is_held_to_its_methods(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut auditor = app.auditor().await;
    let mut kela = app.kela().await;
    let status = assert_code(
        hva15
            .referrals
            .create_referral(notification(PIC, JYVASKYLA))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "ROLE_NOT_ALLOWED");
    assert_code(
        auditor
            .consents
            .record_consent(oral_consent(PIC, &["hva-15"]))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        auditor
            .mailbox
            .pull_messages(pb::PullMessagesRequest::default())
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        kela.audit
            .list_audit_events(pb::ListAuditEventsRequest::default())
            .await,
        Code::PermissionDenied,
    );
    let created = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create")
        .into_inner();
    assert_code(
        kela.referrals
            .accept_referral(pb::AcceptReferralRequest {
                name: created.name,
                etag: String::new(),
                request_id: new_request_id(),
            })
            .await,
        Code::PermissionDenied,
    );
    app.stop().await;
}

both_engines!(another_receivers_referral_does_not_exist_for_you);
async fn another_receivers_referral_does_not_exist_for_you(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut helsinki = app.receiver("helsinki").await;
    let created = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create")
        .into_inner();
    let status = assert_code(
        helsinki
            .referrals
            .get_referral(pb::GetReferralRequest {
                name: created.name.clone(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "NOT_FOUND");
    assert_code(
        helsinki
            .referrals
            .accept_referral(pb::AcceptReferralRequest {
                name: created.name.clone(),
                etag: String::new(),
                request_id: new_request_id(),
            })
            .await,
        Code::NotFound,
    );
    let random = format!("referrals/{}", uuid::Uuid::new_v4());
    assert_code(
        helsinki
            .referrals
            .get_referral(pb::GetReferralRequest { name: random })
            .await,
        Code::NotFound,
    );
    assert!(pull(&mut helsinki, 10).await.is_empty());
    app.stop().await;
}

both_engines!(identity_code_of_wrong_length);
async fn identity_code_of_wrong_length(db: Db) {
    identity_code_refused(db, "131052-308", &["LENGTH"]).await;
}

both_engines!(identity_code_with_lower_case_or_spaces);
async fn identity_code_with_lower_case_or_spaces(db: Db) {
    // Lower case is refused, not repaired; a lower-case check character is no check character.
    identity_code_refused(db, "131052-308t", &["CHARACTERS", "CHECK_CHARACTER"]).await;
    identity_code_refused(db, " 131052-308T", &["LENGTH", "CHARACTERS"]).await;
}

both_engines!(identity_code_with_unknown_century_sign);
async fn identity_code_with_unknown_century_sign(db: Db) {
    identity_code_refused(db, "131052G308T", &["CENTURY_SIGN"]).await;
}

both_engines!(identity_code_with_a_date_that_did_not_exist);
async fn identity_code_with_a_date_that_did_not_exist(db: Db) {
    // 29 February 1900: 1900 was not a leap year. (Check character computed for these digits.)
    identity_code_refused(db, "290200-1239", &["DATE"]).await;
}

both_engines!(identity_code_with_individual_number_001);
async fn identity_code_with_individual_number_001(db: Db) {
    identity_code_refused(db, "131052-001W", &["INDIVIDUAL_NUMBER"]).await;
}

both_engines!(identity_code_with_wrong_check_character);
async fn identity_code_with_wrong_check_character(db: Db) {
    identity_code_refused(db, "131052-308U", &["CHECK_CHARACTER"]).await;
}

both_engines!(every_broken_field_rule_is_named_at_once);
async fn every_broken_field_rule_is_named_at_once(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut request = referral("131052-308U", "999", "not-a-consent");
    if let Some(r) = request.referral.as_mut() {
        r.kind = 0;
        r.deadline_group = 0;
        r.reasons.push(0);
    }
    let status = refer(&app, request).await;
    let mut got = violations(&status);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("referral.consent".to_string(), "RESOURCE_NAME".to_string()),
            (
                "referral.deadline_group".to_string(),
                "REQUIRED".to_string()
            ),
            ("referral.kind".to_string(), "REQUIRED".to_string()),
            ("referral.reasons[2]".to_string(), "REQUIRED".to_string()),
            (
                "referral.subject.personal_identity_code".to_string(),
                "CHECK_CHARACTER".to_string()
            ),
        ]
    );
    app.stop().await;
}

both_engines!(unknown_municipality);
async fn unknown_municipality(db: Db) {
    let app = TestApp::spawn(db).await;
    let status = refer(&app, notification(PIC, "999")).await;
    assert_eq!(
        violations(&status),
        vec![(
            "referral.home_municipality_code".into(),
            "UNKNOWN_ON_DATE".into()
        )]
    );
    app.stop().await;
}

both_engines!(pertunmaa_is_a_municipality_in_2024_and_not_in_2025);
async fn pertunmaa_is_a_municipality_in_2024_and_not_in_2025(db: Db) {
    let late_2024 = Utc
        .with_ymd_and_hms(2024, 12, 30, 10, 0, 0)
        .single()
        .expect("valid");
    let app = TestApp::spawn_at(db, late_2024).await;
    let mut kela = app.kela().await;
    let created = kela
        .referrals
        .create_referral(notification(PIC, "588"))
        .await
        .expect("2024")
        .into_inner();
    assert_eq!(created.recipient, "organizations/hva-12");
    // New Year in Helsinki: the 2025 list no longer has Pertunmaa (merged into Mäntyharju).
    app.clock.set(
        Utc.with_ymd_and_hms(2024, 12, 31, 22, 30, 0)
            .single()
            .expect("valid"),
    );
    let status = assert_code(
        kela.referrals
            .create_referral(notification(PIC, "588"))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        vec![(
            "referral.home_municipality_code".into(),
            "UNKNOWN_ON_DATE".into()
        )]
    );
    app.stop().await;
}

both_engines!(a_referral_without_any_basis);
async fn a_referral_without_any_basis(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut request = referral(PIC, JYVASKYLA, "");
    if let Some(r) = request.referral.as_mut() {
        r.basis = None;
    }
    let status = refer(&app, request).await;
    assert_eq!(
        violations(&status),
        vec![("referral.consent".into(), "REQUIRED".into())]
    );
    app.stop().await;
}

both_engines!(a_consent_that_does_not_exist);
async fn a_consent_that_does_not_exist(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let missing = format!("consents/{}", uuid::Uuid::new_v4());
    let status = assert_code(
        kela.referrals
            .create_referral(referral(PIC, JYVASKYLA, &missing))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "CONSENT_NOT_FOUND");
    app.stop().await;
}

both_engines!(a_withdrawn_consent);
async fn a_withdrawn_consent(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let consent = kela
        .consents
        .record_consent(oral_consent(PIC, &["hva-15"]))
        .await
        .expect("c")
        .into_inner();
    kela.consents
        .withdraw_consent(pb::WithdrawConsentRequest {
            name: consent.name.clone(),
            ..Default::default()
        })
        .await
        .expect("withdraw");
    let status = assert_code(
        kela.referrals
            .create_referral(referral(PIC, JYVASKYLA, &consent.name))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "CONSENT_WITHDRAWN");
    app.stop().await;
}

both_engines!(an_expired_consent);
async fn an_expired_consent(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let expire = app.clock.now() + Duration::days(30);
    let consent = kela
        .consents
        .record_consent(written_consent(PIC, &["hva-15"], expire))
        .await
        .expect("c")
        .into_inner();
    kela.referrals
        .create_referral(referral(PIC, JYVASKYLA, &consent.name))
        .await
        .expect("while valid");
    app.clock.advance(Duration::days(31));
    let status = assert_code(
        kela.referrals
            .create_referral(referral(PIC, JYVASKYLA, &consent.name))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "CONSENT_EXPIRED");
    let read = kela
        .consents
        .get_consent(pb::GetConsentRequest { name: consent.name })
        .await
        .expect("get");
    assert_eq!(read.into_inner().state, pb::consent::State::Expired as i32);
    app.stop().await;
}

both_engines!(a_consent_that_does_not_name_the_recipient);
async fn a_consent_that_does_not_name_the_recipient(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let consent = kela
        .consents
        .record_consent(oral_consent(PIC, &["helsinki"]))
        .await
        .expect("c")
        .into_inner();
    let status = assert_code(
        kela.referrals
            .create_referral(referral(PIC, JYVASKYLA, &consent.name))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "CONSENT_RECIPIENT_NOT_COVERED");
    app.stop().await;
}

both_engines!(a_consent_of_another_person);
async fn a_consent_of_another_person(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    // Same digits, another century sign: another person.
    let consent = kela
        .consents
        .record_consent(oral_consent("131052A308T", &["hva-15"]))
        .await
        .expect("c")
        .into_inner();
    let status = assert_code(
        kela.referrals
            .create_referral(referral(PIC, JYVASKYLA, &consent.name))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "CONSENT_SUBJECT_MISMATCH");
    app.stop().await;
}

both_engines!(an_oral_consent_already_used);
async fn an_oral_consent_already_used(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let consent = kela
        .consents
        .record_consent(oral_consent(PIC, &["hva-15"]))
        .await
        .expect("c")
        .into_inner();
    kela.referrals
        .create_referral(referral(PIC, JYVASKYLA, &consent.name))
        .await
        .expect("first use");
    let status = assert_code(
        kela.referrals
            .create_referral(referral(PIC, JYVASKYLA, &consent.name))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "CONSENT_ALREADY_USED");
    app.stop().await;
}

both_engines!(an_illegal_transition);
async fn an_illegal_transition(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let created = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("c")
        .into_inner();
    // Not yet received: nothing to accept.
    let (name, etag, request_id) = change_fields(&created);
    let status = assert_code(
        hva15
            .referrals
            .accept_referral(pb::AcceptReferralRequest {
                name,
                etag,
                request_id,
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "ILLEGAL_TRANSITION");
    let received = receive(&mut hva15, &created.name).await;
    let (name, etag, request_id) = change_fields(&received);
    assert_code(
        hva15
            .referrals
            .start_assessment(pb::StartAssessmentRequest {
                name,
                etag,
                request_id,
            })
            .await,
        Code::FailedPrecondition,
    );
    let unchanged = hva15
        .referrals
        .get_referral(pb::GetReferralRequest { name: created.name })
        .await
        .expect("get");
    assert_eq!(
        unchanged.into_inner().state,
        pb::referral::State::Received as i32
    );
    app.stop().await;
}

both_engines!(a_stale_etag);
async fn a_stale_etag(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let created = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("c")
        .into_inner();
    let received = receive(&mut hva15, &created.name).await;
    let status = assert_code(
        hva15
            .referrals
            .accept_referral(pb::AcceptReferralRequest {
                name: created.name.clone(),
                etag: created.etag.clone(),
                request_id: new_request_id(),
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(reason(&status), "ETAG_MISMATCH");
    let (name, etag, request_id) = change_fields(&received);
    hva15
        .referrals
        .accept_referral(pb::AcceptReferralRequest {
            name,
            etag,
            request_id,
        })
        .await
        .expect("fresh etag");
    app.stop().await;
}

both_engines!(a_reused_request_id_returns_the_first_result_or_is_refused_for_another_body);
async fn a_reused_request_id_returns_the_first_result_or_is_refused_for_another_body(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let request = notification(PIC, JYVASKYLA);
    let first = kela
        .referrals
        .create_referral(request.clone())
        .await
        .expect("first")
        .into_inner();
    let retry = kela
        .referrals
        .create_referral(request.clone())
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retry, first, "a retry returns the first result");
    let mut other = notification("010594Y9032", JYVASKYLA);
    other.request_id = request.request_id.clone();
    let status = assert_code(
        kela.referrals.create_referral(other).await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&status), "REQUEST_ID_REUSED");
    assert_eq!(
        drain(&mut hva15).await.len(),
        1,
        "one referral, routed once"
    );

    // Changes too: a retried accept returns the first answer instead of an illegal transition.
    let received = hva15
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: first.name.clone(),
        })
        .await;
    let received = received.expect("get").into_inner();
    let accept = pb::AcceptReferralRequest {
        name: received.name.clone(),
        etag: received.etag.clone(),
        request_id: new_request_id(),
    };
    let accepted = hva15
        .referrals
        .accept_referral(accept.clone())
        .await
        .expect("accept")
        .into_inner();
    let again = hva15
        .referrals
        .accept_referral(accept)
        .await
        .expect("retried accept")
        .into_inner();
    assert_eq!(again, accepted);
    app.stop().await;
}

both_engines!(the_database_refuses_to_update_or_delete_audit_rows);
async fn the_database_refuses_to_update_or_delete_audit_rows(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    kela.referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create");
    let before = app.audit_event_count().await;
    assert!(before >= 1);
    let update = app
        .sql("UPDATE audit_events SET user_id = 'someone-else'")
        .await;
    assert!(update.is_err(), "UPDATE refused: {update:?}");
    let delete = app.sql("DELETE FROM audit_events").await;
    assert!(delete.is_err(), "DELETE refused: {delete:?}");
    if db == Db::Sqlite {
        // PostgreSQL's subject index is a GIN index over the event row itself.
        let delete_index = app.sql("DELETE FROM audit_event_subjects").await;
        assert!(
            delete_index.is_err(),
            "the subject index is append-only too"
        );
    }
    assert_eq!(app.audit_event_count().await, before);
    if db == Db::Postgres {
        assert!(
            app.sql("TRUNCATE audit_events CASCADE").await.is_err(),
            "TRUNCATE refused"
        );
    }
    let untouched = app.audit_table_text().await;
    assert!(!untouched.contains("someone-else"));
    app.stop().await;
}

both_engines!(every_refusal_is_audited_with_its_code);
async fn every_refusal_is_audited_with_its_code(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut auditor = app.auditor().await;
    assert_code(
        hva15
            .referrals
            .create_referral(notification(PIC, JYVASKYLA))
            .await,
        Code::PermissionDenied,
    );
    let mut kela = app.kela().await;
    assert_code(
        kela.referrals
            .create_referral(with_code("131052-308U"))
            .await,
        Code::InvalidArgument,
    );
    let events = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            method: "CreateReferral".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    let codes: Vec<(String, i32)> = events
        .iter()
        .map(|e| (e.organization.clone(), e.status_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            (
                "organizations/hva-15".to_string(),
                Code::PermissionDenied as i32
            ),
            (
                "organizations/kela".to_string(),
                Code::InvalidArgument as i32
            ),
        ]
    );
    // The refused receiver did name a person: the attempt is in that person's log.
    let about_subject = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    assert_eq!(about_subject.len(), 1);
    assert_eq!(about_subject[0].status_code, Code::PermissionDenied as i32);
    app.stop().await;
}

both_engines!(a_thousand_broken_fields_still_answer_invalid_argument_to_a_default_client);
async fn a_thousand_broken_fields_still_answer_invalid_argument_to_a_default_client(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut request = oral_consent(PIC, &["hva-15"]);
    if let Some(consent) = request.consent.as_mut() {
        consent.recipients = vec![String::new(); 1000];
    }
    // A default client accepts 16 KB of metadata; an unbounded error would exceed it and reach
    // the caller as its own RESOURCE_EXHAUSTED instead of the real refusal.
    let status = assert_code(
        kela.consents.record_consent(request).await,
        Code::InvalidArgument,
    );
    let listed = violations(&status);
    assert_eq!(listed.len(), 20, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|(field, _)| field.starts_with("consent.recipients["))
    );
    app.stop().await;
}

both_engines!(nul_characters_and_times_out_of_range_are_refused_alike_on_both_engines);
async fn nul_characters_and_times_out_of_range_are_refused_alike_on_both_engines(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;

    // A NUL in free text, in an identifier-like field, and in an auditor's filter.
    let mut request = notification(PIC, JYVASKYLA);
    if let Some(r) = request.referral.as_mut() {
        r.reason_text = "Rent\0arrears".into();
        r.application_reference = "K\0-1".into();
    }
    let status = assert_code(
        kela.referrals.create_referral(request).await,
        Code::InvalidArgument,
    );
    let mut found = violations(&status);
    found.sort();
    assert_eq!(
        found,
        [
            (
                "referral.application_reference".to_owned(),
                "CONTROL_CHARACTER".to_owned()
            ),
            (
                "referral.reason_text".to_owned(),
                "CONTROL_CHARACTER".to_owned()
            ),
        ]
    );
    // Line breaks in free text are fine.
    let mut request = notification(PIC, JYVASKYLA);
    if let Some(r) = request.referral.as_mut() {
        r.reason_text = "Rent arrears.\r\nAsked for help.\tUrgent.".into();
    }
    kela.referrals
        .create_referral(request)
        .await
        .expect("tabs and line breaks are text");

    let mut auditor = app.auditor().await;
    let status = assert_code(
        auditor
            .audit
            .list_audit_events(pb::ListAuditEventsRequest {
                resource: "referrals/\0".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        [("resource".to_owned(), "CONTROL_CHARACTER".to_owned())]
    );
    // The refusal is in the trail like any other.
    let events = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            method: "ListAuditEvents".into(),
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .audit_events;
    assert!(
        events.iter().any(|e| e.status == "INVALID_ARGUMENT"),
        "{events:?}"
    );

    // Times outside what a Timestamp holds (and PostgreSQL stores).
    for seconds in [-1_000_000_000_000, 253_402_300_800] {
        let status = assert_code(
            auditor
                .audit
                .list_audit_events(pb::ListAuditEventsRequest {
                    start_time: Some(pbjson_types::Timestamp { seconds, nanos: 0 }),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(
            violations(&status),
            [("start_time".to_owned(), "TIMESTAMP_RANGE".to_owned())]
        );
        let status = assert_code(
            kela.referrals
                .list_referrals(pb::ListReferralsRequest {
                    create_time_start: Some(pbjson_types::Timestamp { seconds, nanos: 0 }),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(
            violations(&status),
            [("create_time_start".to_owned(), "TIMESTAMP_RANGE".to_owned())]
        );
    }

    // Over HTTP the same: a NUL in JSON is \u0000.
    let mut rest = app.rest("kela", Some("handler-1")).await;
    let answer = rest
        .post(
            "/v1/referrals:search",
            &serde_json::json!({ "recipient": "organizations/hva-15\u{0}" }),
        )
        .await
        .expect(400);
    assert_eq!(
        answer.violations(),
        [("recipient".to_owned(), "CONTROL_CHARACTER".to_owned())]
    );
    app.stop().await;
}

/// Field 1 of `GetReferralRequest` (`name`, a string) sent as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawName {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
}

both_engines!(undecodable_and_oversized_requests_are_the_clients_mistake_and_audited);
async fn undecodable_and_oversized_requests_are_the_clients_mistake_and_audited(db: Db) {
    let app = TestApp::spawn(db).await;
    let send = async |name: Vec<u8>| {
        let mut grpc = tonic::client::Grpc::new(app.channel("kela").await);
        grpc.ready().await.expect("ready");
        let mut request = tonic::Request::new(RawName { name });
        request
            .metadata_mut()
            .insert("x-user-id", "handler-1".parse().expect("header"));
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/referral_exchange.v1.ReferralService/GetReferral",
        );
        grpc.unary::<_, pb::Referral, _>(request, path, tonic_prost::ProstCodec::default())
            .await
    };

    // A string that is not UTF-8: INVALID_ARGUMENT, not INTERNAL.
    let status = assert_code(send(vec![0xff, 0xfe, 0xfd]).await, Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        [("request".to_owned(), "PROTOBUF".to_owned())]
    );
    // Larger than the decoding limit (4 MiB): RESOURCE_EXHAUSTED, not OUT_OF_RANGE.
    let status = assert_code(
        send(vec![b'a'; 5 * 1024 * 1024]).await,
        Code::ResourceExhausted,
    );
    assert_eq!(reason(&status), "REQUEST_TOO_LARGE");

    // Both in the trail, under the caller the certificate names.
    let events = audit_events_of(&mut app.auditor().await, "GetReferral").await;
    let statuses: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.organization.as_str(), e.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("organizations/kela", "INVALID_ARGUMENT"),
            ("organizations/kela", "RESOURCE_EXHAUSTED")
        ]
    );
    app.stop().await;
}

both_engines!(a_second_message_on_a_call_that_takes_one_is_refused_and_audited);
async fn a_second_message_on_a_call_that_takes_one_is_refused_and_audited(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let created = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create")
        .into_inner();
    // GetReferral takes one message; a client-streaming call sends as many as it is given.
    let send = async |count: usize| {
        let mut grpc = tonic::client::Grpc::new(app.channel("kela").await);
        grpc.ready().await.expect("ready");
        let messages = vec![
            pb::GetReferralRequest {
                name: created.name.clone(),
            };
            count
        ];
        let mut request = tonic::Request::new(tokio_stream::iter(messages));
        request
            .metadata_mut()
            .insert("x-user-id", "handler-1".parse().expect("header"));
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/referral_exchange.v1.ReferralService/GetReferral",
        );
        let codec = tonic_prost::ProstCodec::<pb::GetReferralRequest, pb::Referral>::default();
        grpc.client_streaming(request, path, codec).await
    };
    let one = send(1).await.expect("one message is the call").into_inner();
    assert_eq!(one.name, created.name);
    let status = assert_code(send(2).await, Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        [("request".to_owned(), "ONE_MESSAGE".to_owned())]
    );
    let status = assert_code(send(3).await, Code::InvalidArgument);
    assert_eq!(reason(&status), "INVALID_ARGUMENT");

    let statuses: Vec<String> = audit_events_of(&mut app.auditor().await, "GetReferral")
        .await
        .into_iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, ["OK", "INVALID_ARGUMENT", "INVALID_ARGUMENT"]);
    app.stop().await;
}

//! The consent registry: withdrawal reaches every recipient; the consent log proves what happened.

use chrono::Duration;
use referral_exchange::{clock::Clock, proto::v1 as pb};
use tonic::Code;

use crate::helpers::*;

both_engines!(withdrawal_cancels_what_was_not_received_and_tells_those_who_received);
async fn withdrawal_cancels_what_was_not_received_and_tells_those_who_received(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut auditor = app.auditor().await;
    let expire = app.clock.now() + Duration::days(180);
    let consent = kela
        .consents
        .record_consent(written_consent(PIC, &["hva-15"], expire))
        .await
        .expect("c")
        .into_inner();

    let first = kela
        .referrals
        .create_referral(referral(PIC, JYVASKYLA, &consent.name))
        .await
        .expect("1")
        .into_inner();
    receive(&mut hva15, &first.name).await;
    let second = kela
        .referrals
        .create_referral(referral(PIC, JYVASKYLA, &consent.name))
        .await
        .expect("2")
        .into_inner();
    drain(&mut kela).await;

    // A written consent is not rewritten by its uses (they are its events, below): the etag Kela
    // read when it was recorded still withdraws it.
    let now_stored = get_consent(&mut kela, &consent.name).await;
    assert_eq!(
        (now_stored.etag.as_str(), now_stored.update_time),
        (consent.etag.as_str(), consent.update_time),
        "two uses leave the written consent as it was"
    );
    let withdrawn = kela
        .consents
        .withdraw_consent(pb::WithdrawConsentRequest {
            name: consent.name.clone(),
            reason_text: "Client withdrew by phone".into(),
            request_id: new_request_id(),
            etag: consent.etag.clone(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    assert_eq!(withdrawn.state, pb::consent::State::Withdrawn as i32);
    assert!(withdrawn.withdraw_time.is_some());

    // Not yet received: cancelled. Received: stays (what was lawfully done stays done).
    let get = |name: &str| pb::GetReferralRequest { name: name.into() };
    let second_now = kela
        .referrals
        .get_referral(get(&second.name))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(second_now.state, pb::referral::State::Cancelled as i32);
    assert_eq!(second_now.state_reason, "CONSENT_WITHDRAWN");
    let first_now = kela
        .referrals
        .get_referral(get(&first.name))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(first_now.state, pb::referral::State::Received as i32);

    let to_receiver = drain(&mut hva15).await;
    let kinds: Vec<(i32, String, String)> = to_receiver
        .iter()
        .map(|m| {
            (
                m.r#type,
                m.referral
                    .as_ref()
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
                m.consent.clone(),
            )
        })
        .collect();
    assert!(kinds.contains(&(
        pb::message::Type::ReferralCancelled as i32,
        second.name.clone(),
        String::new()
    )));
    assert!(kinds.contains(&(
        pb::message::Type::ConsentWithdrawn as i32,
        first.name.clone(),
        consent.name.clone()
    )));

    let to_kela = drain(&mut kela).await;
    assert_eq!(to_kela.len(), 1);
    assert_eq!(
        to_kela[0].state_change.as_ref().map(|c| c.reason.as_str()),
        Some("CONSENT_WITHDRAWN")
    );

    // The consent log, for Kela and the auditor alike.
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
    let types: Vec<i32> = events.iter().map(|e| e.r#type).collect();
    use pb::consent_event::Type;
    assert_eq!(
        types,
        vec![
            Type::Granted as i32,
            Type::Used as i32,
            Type::Used as i32,
            Type::Withdrawn as i32
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.organization == "organizations/kela" && e.user_id == "handler-1")
    );
    assert_eq!(events[1].referral, first.name);
    assert_eq!(
        events[3].consent_state,
        pb::consent::State::Withdrawn as i32
    );
    let by_subject = kela
        .consents
        .list_consent_events(pb::ListConsentEventsRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .consent_events;
    assert_eq!(by_subject.len(), 4);
    let nobody = kela
        .consents
        .list_consent_events(pb::ListConsentEventsRequest {
            personal_identity_code: "010594Y9032".into(),
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .consent_events;
    assert!(nobody.is_empty());

    let status = assert_code(
        kela.consents
            .withdraw_consent(pb::WithdrawConsentRequest {
                name: consent.name.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "CONSENT_ALREADY_WITHDRAWN");
    app.stop().await;
}

both_engines!(consents_are_listed_by_person_and_state_and_receivers_see_only_their_own);
async fn consents_are_listed_by_person_and_state_and_receivers_see_only_their_own(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut helsinki = app.receiver("helsinki").await;
    let mut hva15 = app.receiver("hva-15").await;
    let a = kela
        .consents
        .record_consent(oral_consent(PIC, &["hva-15"]))
        .await
        .expect("a")
        .into_inner();
    kela.consents
        .record_consent(oral_consent(PIC, &["helsinki"]))
        .await
        .expect("b");
    kela.consents
        .record_consent(oral_consent("010594Y9032", &["hva-15"]))
        .await
        .expect("c");
    kela.consents
        .withdraw_consent(pb::WithdrawConsentRequest {
            name: a.name.clone(),
            ..Default::default()
        })
        .await
        .expect("withdraw");
    let list = |code: &str, state: pb::consent::State| pb::ListConsentsRequest {
        personal_identity_code: code.into(),
        state: state as i32,
        ..Default::default()
    };
    let all_of_person = kela
        .consents
        .list_consents(list(PIC, pb::consent::State::Unspecified))
        .await
        .expect("list");
    assert_eq!(all_of_person.into_inner().consents.len(), 2);
    let active = kela
        .consents
        .list_consents(list(PIC, pb::consent::State::Active))
        .await
        .expect("list");
    assert_eq!(active.into_inner().consents.len(), 1);

    assert_code(
        helsinki
            .consents
            .get_consent(pb::GetConsentRequest {
                name: a.name.clone(),
            })
            .await,
        Code::NotFound,
    );
    hva15
        .consents
        .get_consent(pb::GetConsentRequest {
            name: a.name.clone(),
        })
        .await
        .expect("named recipient reads it");
    assert_code(
        helsinki
            .consents
            .list_consents(pb::ListConsentsRequest::default())
            .await,
        Code::PermissionDenied,
    );
    app.stop().await;
}

both_engines!(a_consent_must_say_whom_it_covers_and_for_how_long);
async fn a_consent_must_say_whom_it_covers_and_for_how_long(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut request = written_consent(
        PIC,
        &["kela", "hva-15"],
        app.clock.now() + Duration::days(1),
    );
    if let Some(c) = request.consent.as_mut() {
        c.expire_time = None;
        c.given_by = 0;
    }
    let status = assert_code(
        kela.consents.record_consent(request).await,
        Code::InvalidArgument,
    );
    let mut got = violations(&status);
    got.sort();
    assert_eq!(
        got,
        vec![("consent.given_by".to_string(), "REQUIRED".to_string())],
        "field rules first; cross-field rules once fields are well-formed"
    );
    let mut request = written_consent(
        PIC,
        &["kela", "hva-15"],
        app.clock.now() + Duration::days(1),
    );
    if let Some(c) = request.consent.as_mut() {
        c.expire_time = None;
    }
    let status = assert_code(
        kela.consents.record_consent(request).await,
        Code::InvalidArgument,
    );
    let mut got = violations(&status);
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "consent.expire_time".to_string(),
                "REQUIRED_FOR_FORM".to_string()
            ),
            ("consent.recipients[0]".to_string(), "RECEIVER".to_string()),
        ]
    );
    app.stop().await;
}

//! Deadlines in Finnish working days, and the watch that tells Kela and the receiver when one passes.

use chrono::{Duration, TimeZone, Utc};
use referral_exchange::proto::v1 as pb;

use crate::helpers::*;

fn overdue_kinds(referral: &pb::Referral) -> Vec<(i32, String)> {
    referral
        .overdue
        .iter()
        .map(|d| (d.kind, d.due_date.clone()))
        .collect()
}

both_engines!(a_referral_nobody_takes_is_told_once_to_kela_and_the_receiver);
async fn a_referral_nobody_takes_is_told_once_to_kela_and_the_receiver(db: Db) {
    // Monday 3 March 2025: to be received by Thursday 6 March (three working days).
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut request = notification(PIC, JYVASKYLA);
    if let Some(r) = request.referral.as_mut() {
        r.urgent = false;
    }
    let created = kela
        .referrals
        .create_referral(request)
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.receive_due_date, "2025-03-06");

    app.clock.set(
        Utc.with_ymd_and_hms(2025, 3, 6, 20, 0, 0)
            .single()
            .expect("valid"),
    );
    assert_eq!(
        app.exchange().notice_overdue().await.expect("watch"),
        0,
        "the due day itself is not late"
    );
    app.clock.set(
        Utc.with_ymd_and_hms(2025, 3, 6, 22, 30, 0)
            .single()
            .expect("valid"),
    );
    assert_eq!(
        app.exchange().notice_overdue().await.expect("watch"),
        1,
        "past midnight in Helsinki"
    );
    assert_eq!(
        app.exchange().notice_overdue().await.expect("watch"),
        0,
        "once per deadline"
    );

    let to_kela = drain(&mut kela).await;
    assert_eq!(to_kela.len(), 1);
    assert_eq!(to_kela[0].r#type, pb::message::Type::ReferralOverdue as i32);
    let deadline = to_kela[0].deadline.as_ref().expect("deadline");
    assert_eq!(
        (deadline.kind, deadline.due_date.as_str()),
        (pb::deadline::Kind::Receipt as i32, "2025-03-06")
    );
    let to_receiver: Vec<i32> = drain(&mut hva15).await.iter().map(|m| m.r#type).collect();
    assert_eq!(
        to_receiver,
        vec![
            pb::message::Type::ReferralRouted as i32,
            pb::message::Type::ReferralOverdue as i32
        ]
    );

    let listed = kela
        .referrals
        .list_referrals(pb::ListReferralsRequest {
            overdue: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .referrals;
    assert!(
        listed.is_empty(),
        "received now (the drain acknowledged it): no longer overdue"
    );
    app.stop().await;
}

both_engines!(assessment_and_completion_deadlines_follow_receipt_in_working_days);
async fn assessment_and_completion_deadlines_follow_receipt_in_working_days(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut request = notification(PIC, JYVASKYLA);
    if let Some(r) = request.referral.as_mut() {
        r.urgent = false;
        r.kind = pb::referral::Kind::ChildWelfareNotification as i32;
        r.basis = Some(pb::referral::Basis::StatutoryGround(
            pb::referral::StatutoryGround::ChildWelfareActDuty as i32,
        ));
        r.deadline_group = pb::referral::DeadlineGroup::ChildNeedingSpecialSupport as i32;
    }
    let created = kela
        .referrals
        .create_referral(request)
        .await
        .expect("create")
        .into_inner();
    // Received Thursday 17 April 2025: Good Friday and Easter Monday are not working days.
    app.clock.set(
        Utc.with_ymd_and_hms(2025, 4, 17, 7, 0, 0)
            .single()
            .expect("valid"),
    );
    let received = receive(&mut hva15, &created.name).await;
    assert_eq!(received.assessment_due_date, "2025-04-30");
    assert_eq!(received.completion_due_date, "2025-07-17");

    app.clock.set(
        Utc.with_ymd_and_hms(2025, 5, 1, 9, 0, 0)
            .single()
            .expect("valid"),
    );
    let now = kela
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: created.name.clone(),
        })
        .await;
    assert_eq!(
        overdue_kinds(&now.expect("get").into_inner()),
        vec![(
            pb::deadline::Kind::AssessmentStart as i32,
            "2025-04-30".to_string()
        )]
    );
    assert_eq!(app.exchange().notice_overdue().await.expect("watch"), 1);
    let (name, etag, request_id) = change_fields(&received);
    let accepted = hva15
        .referrals
        .accept_referral(pb::AcceptReferralRequest {
            name,
            etag,
            request_id,
        })
        .await;
    let (name, etag, request_id) = change_fields(&accepted.expect("accept").into_inner());
    hva15
        .referrals
        .start_assessment(pb::StartAssessmentRequest {
            name,
            etag,
            request_id,
        })
        .await
        .expect("start");

    app.clock.set(
        Utc.with_ymd_and_hms(2025, 7, 18, 9, 0, 0)
            .single()
            .expect("valid"),
    );
    let overdue = kela
        .referrals
        .list_referrals(pb::ListReferralsRequest {
            overdue: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .referrals;
    assert_eq!(overdue.len(), 1);
    assert_eq!(
        overdue_kinds(&overdue[0]),
        vec![(
            pb::deadline::Kind::Completion as i32,
            "2025-07-17".to_string()
        )]
    );
    assert_eq!(app.exchange().notice_overdue().await.expect("watch"), 1);
    app.stop().await;
}

both_engines!(a_person_over_75_gets_the_7_working_day_group_whatever_the_handler_ticked);
async fn a_person_over_75_gets_the_7_working_day_group_whatever_the_handler_ticked(db: Db) {
    use referral_exchange::domain::PersonalIdentityCode;
    // The clock says Monday 3 March 2025. Born on 2 March 1949: 76 since yesterday.
    let born = chrono::NaiveDate::from_ymd_opt(1949, 3, 2).expect("date");
    let aged_76 = PersonalIdentityCode::from_birth_date(born, 123).expect("code");
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let ordinary = |code: &str| {
        let mut request = notification(code, JYVASKYLA);
        if let Some(r) = request.referral.as_mut() {
            r.urgent = false;
            r.deadline_group = pb::referral::DeadlineGroup::NoStatutoryGroup as i32;
        }
        request
    };

    let created = kela
        .referrals
        .create_referral(ordinary(aged_76.as_str()))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(
        created.deadline_group,
        pb::referral::DeadlineGroup::Over75 as i32,
        "the group the exchange applied, not the one asked for"
    );
    let received = receive(&mut hva15, &created.name).await;
    assert_eq!(
        received.deadline_group,
        pb::referral::DeadlineGroup::Over75 as i32
    );
    // Received on Monday 3 March: the 7th working day after it is Wednesday 12 March.
    assert_eq!(received.assessment_due_date, "2025-03-12");

    // PIC was born on 13 October 1952, 72 today: the handler's choice stands, no statutory day.
    let younger = kela
        .referrals
        .create_referral(ordinary(PIC))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(
        younger.deadline_group,
        pb::referral::DeadlineGroup::NoStatutoryGroup as i32
    );
    let received = receive(&mut hva15, &younger.name).await;
    assert_eq!(received.assessment_due_date, "");
    app.stop().await;
}

both_engines!(the_overdue_filter_and_the_overdue_field_agree);
async fn the_overdue_filter_and_the_overdue_field_agree(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut names = Vec::new();
    for (i, urgent) in [true, false, true, false, false].into_iter().enumerate() {
        let mut request = notification(PIC, JYVASKYLA);
        if let Some(r) = request.referral.as_mut() {
            r.urgent = urgent;
            if i == 4 {
                r.kind = pb::referral::Kind::SupplementaryOrPreventiveAssistance as i32;
                r.application_reference = "TOTU-2025-1".into();
                r.basis = None;
            }
        }
        if i == 4 {
            let consent = kela
                .consents
                .record_consent(oral_consent(PIC, &["hva-15"]))
                .await
                .expect("c")
                .into_inner();
            if let Some(r) = request.referral.as_mut() {
                r.basis = Some(pb::referral::Basis::Consent(consent.name));
            }
        }
        names.push(
            kela.referrals
                .create_referral(request)
                .await
                .expect("create")
                .into_inner()
                .name,
        );
    }
    // Take delivery of the first three; start the assessment of the transferred application only.
    app.clock.advance(Duration::hours(1));
    let messages = pull(&mut hva15, 10).await;
    let take: Vec<String> = messages
        .iter()
        .filter(|m| {
            m.referral
                .as_ref()
                .is_some_and(|r| names[..2].contains(&r.name) || r.name == names[4])
        })
        .map(|m| m.ack_id.clone())
        .collect();
    ack(&mut hva15, take).await;
    let transfer = hva15
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: names[4].clone(),
        })
        .await;
    let (name, etag, request_id) = change_fields(&transfer.expect("get").into_inner());
    let accepted = hva15
        .referrals
        .accept_referral(pb::AcceptReferralRequest {
            name,
            etag,
            request_id,
        })
        .await;
    let (name, etag, request_id) = change_fields(&accepted.expect("accept").into_inner());
    hva15
        .referrals
        .start_assessment(pb::StartAssessmentRequest {
            name,
            etag,
            request_id,
        })
        .await
        .expect("start");

    let mut last = Vec::new();
    for days in [0, 1, 4, 12, 40] {
        app.clock.advance(Duration::days(days));
        let all = kela
            .referrals
            .list_referrals(pb::ListReferralsRequest::default())
            .await
            .expect("list");
        let mut by_field: Vec<String> = all
            .into_inner()
            .referrals
            .into_iter()
            .filter(|r| !r.overdue.is_empty())
            .map(|r| r.name)
            .collect();
        let mut by_filter: Vec<String> = kela
            .referrals
            .list_referrals(pb::ListReferralsRequest {
                overdue: true,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .referrals
            .into_iter()
            .map(|r| r.name)
            .collect();
        by_field.sort();
        by_filter.sort();
        assert_eq!(by_filter, by_field, "after {days} more days");
        last = by_field;
    }
    // By the end: the urgent one received the same day (assessment), the one never received
    // (receipt), and the transferred application started but not decided.
    for i in [0, 2, 4] {
        assert!(
            last.contains(&names[i]),
            "referral {i} is overdue in the end: {last:?}"
        );
    }
    app.stop().await;
}

both_engines!(referrals_are_listed_by_state_kind_receiver_and_time);
async fn referrals_are_listed_by_state_kind_receiver_and_time(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let first = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    app.clock.advance(Duration::minutes(10));
    let later = timestamp_after(&app.clock, 0);
    kela.referrals
        .create_referral(notification(PIC, HELSINKI))
        .await
        .expect("create");
    let list = |request: pb::ListReferralsRequest| {
        let mut kela = kela.clone();
        async move {
            kela.referrals
                .list_referrals(request)
                .await
                .expect("list")
                .into_inner()
                .referrals
        }
    };
    let by_kind = list(pb::ListReferralsRequest {
        kind: pb::referral::Kind::NeedForSocialWork as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(
        by_kind.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        vec![first.name.clone()]
    );
    let by_receiver = list(pb::ListReferralsRequest {
        recipient: "organizations/helsinki".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_receiver.len(), 1);
    let since = list(pb::ListReferralsRequest {
        create_time_start: Some(later),
        ..Default::default()
    })
    .await;
    assert_eq!(since.len(), 1);
    assert_ne!(since[0].name, first.name);
    let requested = list(pb::ListReferralsRequest {
        state: pb::referral::State::Requested as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(requested.len(), 2);
    app.stop().await;
}

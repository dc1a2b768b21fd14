//! Mailbox delivery as far as the exchange needs it: leases, per-id ack results, long-poll.

use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use referral_exchange::proto::v1 as pb;

use crate::helpers::*;

use pb::ack_result::Reason as AckReason;

both_engines!(a_lease_is_one_delivery_and_every_ack_id_gets_an_answer);
async fn a_lease_is_one_delivery_and_every_ack_id_gets_an_answer(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    kela.referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create");

    let first = pull(&mut hva15, 10).await;
    assert_eq!(first.len(), 1);
    assert!(
        pull(&mut hva15, 10).await.is_empty(),
        "leased to one puller at a time"
    );

    // The lease runs out: the ack of that delivery no longer counts; the message comes again.
    app.clock.advance(Duration::seconds(61));
    let late = ack(&mut hva15, vec![first[0].ack_id.clone()]).await;
    assert_eq!(
        (late[0].applied, late[0].reason),
        (false, AckReason::LeaseExpired as i32)
    );
    let second = pull(&mut hva15, 10).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].delivery_attempt, 2);
    let stale = ack(&mut hva15, vec![first[0].ack_id.clone()]).await;
    assert_eq!(stale[0].reason, AckReason::LeaseSuperseded as i32);

    // Extend, then release for immediate redelivery.
    let extended = hva15
        .mailbox
        .modify_leases(pb::ModifyLeasesRequest {
            ack_ids: vec![second[0].ack_id.clone()],
            lease_duration: seconds(300),
        })
        .await
        .expect("extend")
        .into_inner()
        .results;
    assert!(extended[0].applied);
    app.clock.advance(Duration::seconds(120));
    assert!(
        pull(&mut hva15, 10).await.is_empty(),
        "still leased after 120 s of 300"
    );
    let released = hva15
        .mailbox
        .modify_leases(pb::ModifyLeasesRequest {
            ack_ids: vec![second[0].ack_id.clone()],
            lease_duration: seconds(0),
        })
        .await
        .expect("release")
        .into_inner()
        .results;
    assert!(released[0].applied);
    let third = pull(&mut hva15, 10).await;
    assert_eq!(third[0].delivery_attempt, 3);

    // Per-id answers, in request order.
    let results = ack(
        &mut hva15,
        vec![
            "garbage".into(),
            third[0].ack_id.clone(),
            format!("{}.1", uuid::Uuid::new_v4().simple()),
            third[0].ack_id.clone(),
        ],
    )
    .await;
    let answers: Vec<(String, bool, i32)> = results
        .iter()
        .map(|r| (r.ack_id.clone(), r.applied, r.reason))
        .collect();
    assert_eq!(
        answers[0],
        ("garbage".to_string(), false, AckReason::UnknownAckId as i32)
    );
    assert_eq!(
        answers[1],
        (third[0].ack_id.clone(), true, AckReason::Unspecified as i32)
    );
    assert_eq!(answers[2].2, AckReason::UnknownAckId as i32);
    // The same ack id twice in one request counts once, as it would in two requests.
    assert_eq!(
        answers[3],
        (
            third[0].ack_id.clone(),
            false,
            AckReason::AlreadyAcknowledged as i32
        )
    );
    let again = ack(&mut hva15, vec![third[0].ack_id.clone()]).await;
    assert_eq!(again[0].reason, AckReason::AlreadyAcknowledged as i32);

    // Another organisation's ack ids are not its to acknowledge.
    let mut helsinki = app.receiver("helsinki").await;
    let foreign = ack(&mut helsinki, vec![third[0].ack_id.clone()]).await;
    assert_eq!(foreign[0].reason, AckReason::UnknownAckId as i32);
    app.stop().await;
}

both_engines!(a_waiting_pull_returns_as_soon_as_a_message_arrives_and_empty_at_its_deadline);
async fn a_waiting_pull_returns_as_soon_as_a_message_arrives_and_empty_at_its_deadline(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut kela = app.kela().await;

    let started = Instant::now();
    let empty = hva15
        .mailbox
        .pull_messages(pb::PullMessagesRequest {
            max_messages: 1,
            lease_duration: seconds(30),
            wait_duration: seconds(1),
        })
        .await
        .expect("empty pull is not an error")
        .into_inner();
    assert!(empty.messages.is_empty());
    assert!(
        started.elapsed() >= StdDuration::from_millis(950),
        "waited for the deadline"
    );

    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let response = hva15
            .mailbox
            .pull_messages(pb::PullMessagesRequest {
                max_messages: 1,
                lease_duration: seconds(30),
                wait_duration: seconds(10),
            })
            .await
            .expect("pull")
            .into_inner();
        (response.messages.len(), started.elapsed())
    });
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    kela.referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create");
    let (count, elapsed) = waiting.await.expect("task");
    assert_eq!(count, 1);
    assert!(
        elapsed < StdDuration::from_secs(3),
        "woke on the write, not at the deadline: {elapsed:?}"
    );
    app.stop().await;
}

both_engines!(pull_parameters_are_bounded);
async fn pull_parameters_are_bounded(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut hva15 = app.receiver("hva-15").await;
    let status = assert_code(
        hva15
            .mailbox
            .pull_messages(pb::PullMessagesRequest {
                max_messages: 101,
                lease_duration: seconds(5),
                wait_duration: seconds(21),
            })
            .await,
        tonic::Code::InvalidArgument,
    );
    let mut got = violations(&status);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("lease_duration".to_string(), "RANGE".to_string()),
            ("max_messages".to_string(), "RANGE".to_string()),
            ("wait_duration".to_string(), "RANGE".to_string()),
        ]
    );
    app.stop().await;
}

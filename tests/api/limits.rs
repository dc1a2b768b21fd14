//! Per-organisation limits (`referral_exchange::limits`): one organisation over its rate is refused
//! RESOURCE_EXHAUSTED with RetryInfo (HTTP 429), audited, while another is served; it is served
//! again after the wait it was told.

use std::time::Duration;

use referral_exchange::{limits::LimitSettings, proto::v1 as pb};
use tonic::Code;

use crate::helpers::*;

async fn look_up(clients: &mut Clients) -> Result<(), tonic::Status> {
    clients
        .directory
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .map(drop)
}

both_engines!(an_organisation_over_its_rate_waits_and_others_are_served);
async fn an_organisation_over_its_rate_waits_and_others_are_served(db: Db) {
    let app = TestApp::spawn_with(db, default_start(), |settings| {
        settings.limits = LimitSettings {
            requests_per_second: 2,
            burst: 5,
            ..LimitSettings::default()
        };
    })
    .await;
    let mut kela = app.kela().await;
    let mut refused = None;
    for _ in 0..20 {
        if let Err(status) = look_up(&mut kela).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("kela went over 5 calls in a burst");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "RATE_LIMITED");
    let retry = tonic_types::StatusExt::get_details_retry_info(&refused)
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );

    // Another organisation is not held back by kela's calls.
    let mut hva15 = app.receiver("hva-15").await;
    look_up(&mut hva15).await.expect("hva-15 is served");
    // Over HTTP the same refusal is 429 with google.rpc.Status JSON.
    let mut rest = app.rest("kela", Some("handler-1")).await;
    let mut saw_429 = false;
    for _ in 0..10 {
        let answer = rest.get("/v1/organizations").await;
        if answer.status.as_u16() == 429 {
            assert!(
                answer.text.contains("RATE_LIMITED") && answer.text.contains("RetryInfo"),
                "{}",
                answer.text
            );
            saw_429 = true;
            break;
        }
    }
    assert!(saw_429, "the HTTP face applies the same limit");

    // The refusals are in the audit trail, under kela, within the second their tally is flushed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let refusals = app
            .sql(&format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM audit_events WHERE organization = 'kela' \
                 AND status_code = {}",
                Code::ResourceExhausted as i32
            ))
            .await
            .expect("count");
        if refusals != ["0"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "refusals are audited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // After the wait it was told, kela is served again.
    tokio::time::sleep(retry + Duration::from_millis(600)).await;
    look_up(&mut kela).await.expect("served after the wait");
    app.stop().await;
}

both_engines!(refusals_for_a_limit_are_audited_in_aggregate);
async fn refusals_for_a_limit_are_audited_in_aggregate(db: Db) {
    let app = TestApp::spawn_with(db, default_start(), |settings| {
        settings.limits = LimitSettings {
            requests_per_second: 1,
            burst: 1,
            ..LimitSettings::default()
        };
    })
    .await;
    let mut kela = app.kela().await;
    let mut refused = 0;
    let started = std::time::Instant::now();
    for _ in 0..40 {
        match kela
            .referrals
            .list_referrals(pb::ListReferralsRequest::default())
            .await
        {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    let flushes = started.elapsed().as_secs() + 2;
    assert!(
        refused >= 30,
        "kela was held to one call a second: {refused}"
    );

    // Within a second or so, every refused call is counted in an event, under kela and the
    // method: one event per flush (every second) that had any, not one per refusal.
    // (The auditor is held to one call a second too: it asks once a second.)
    let mut auditor = app.auditor().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let (events, counted) = loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let events: Vec<pb::AuditEvent> = audit_events_of(&mut auditor, "ListReferrals")
            .await
            .into_iter()
            .filter(|e| e.status == "RESOURCE_EXHAUSTED" && e.organization == "organizations/kela")
            .collect();
        let counted: u64 = events
            .iter()
            .flat_map(|e| &e.resources)
            .filter_map(|r| r.strip_prefix("refusedCalls/"))
            .map(|n| n.parse::<u64>().expect("a count"))
            .sum();
        if counted >= refused {
            break (events, counted);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{counted} of {refused} refusals audited"
        );
    };
    assert_eq!(counted, refused, "each refusal counted once");
    assert!(
        !events.is_empty() && events.len() as u64 <= flushes,
        "{} events for {refused} refusals",
        events.len()
    );
    for event in &events {
        assert_eq!(event.resources.len(), 1, "{event:?}");
        assert!(event.subject_pseudonyms.is_empty());
        assert_eq!(event.user_id, "handler-1");
    }
    app.stop().await;
}

/// PostgreSQL only: SQLite has one connection for everything by design (its one writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_fill_the_call_connections_leave_the_background_ones_free() {
    use sqlx::{Connection as _, Executor as _};
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    let app = TestApp::spawn_with(Db::Postgres, default_start(), |settings| {
        settings.health_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let health_addr = app
        .server
        .as_ref()
        .and_then(|s| s.health_addr)
        .expect("health");
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{health_addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("health channel"),
    );
    let mut kela = app.kela().await;
    let created = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create")
        .into_inner();

    // Another session locks the referrals, as a long migration or a stuck operator would: every
    // call that reads them waits, holding its connection. Statistics read in a transaction of
    // their own (ordinary calls share the group commit's four), so enough of them take every
    // connection the calls have.
    let mut blocker = sqlx::PgConnection::connect(app.db.url())
        .await
        .expect("connect");
    blocker.execute("BEGIN").await.expect("begin");
    blocker
        .execute("LOCK TABLE referrals IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let waiting: Vec<_> = (0..24)
        .map(|_| {
            let mut kela = kela.clone();
            let request = pb::GetReferralStatisticsRequest {
                start_time: created.create_time,
                end_time: Some(timestamp_after(&app.clock, 86_400)),
                group_by: vec![pb::Dimension::Recipient as i32],
            };
            tokio::spawn(async move {
                kela.reporting
                    .get_referral_statistics(request)
                    .await
                    .map(drop)
            })
        })
        .collect();
    // Until all the calls' connections wait on the lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stuck = app
            .sql(
                "SELECT count(*)::text FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await
            .expect("activity");
        // All the calls' connections but the one the mailbox listener keeps.
        let stuck_calls: u32 = stuck.first().and_then(|n| n.parse().ok()).unwrap_or(0);
        if stuck_calls + 1 >= referral_exchange::store::postgres::CALL_CONNECTIONS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the calls did not fill the pool: {stuck:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Readiness asks the database on the background tasks' connections every second and gives up
    // after two: through four rounds the replica stays ready, because the database does answer.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = health
            .check(HealthCheckRequest {
                service: "readiness".into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "busy is not unready");
    }
    let background = app
        .sql(
            "SELECT count(*)::text FROM pg_stat_activity \
             WHERE datname = current_database() \
               AND application_name LIKE 'referral-exchange/%/background'",
        )
        .await
        .expect("activity");
    assert_ne!(background, ["0"], "the background tasks have connections");

    blocker.execute("ROLLBACK").await.expect("rollback");
    for call in waiting {
        // Each call either waited its turn or, after 3 s without a connection, was told to retry.
        match call.await.expect("task") {
            Ok(()) => {}
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
    }
    app.stop().await;
}

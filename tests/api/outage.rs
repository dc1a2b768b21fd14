//! A PostgreSQL that goes away and comes back, on a private cluster this test starts itself (initdb
//! in a temporary directory, its own port on 127.0.0.1): calls meanwhile are UNAVAILABLE with a
//! RetryInfo, on both edges, readiness turns NOT_SERVING and liveness stays SERVING, and everything
//! recovers when the database is back.

use std::time::{Duration, Instant};

use referral_exchange::proto::v1 as pb;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{cluster::PrivateCluster, helpers::*};

async fn status(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(ServingStatus::Unknown as i32)
}

/// Waits up to `within` for `service` to report `wanted`.
async fn wait_for(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    wanted: ServingStatus,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    while status(health, service).await != wanted as i32 {
        assert!(
            Instant::now() < deadline,
            "{service:?} is not {wanted:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_unavailable_and_not_ready_and_then_recovers() {
    let cluster = PrivateCluster::start();
    let db = TestDb::External { url: cluster.url() };
    let app = TestApp::spawn_on(Db::Postgres, db, default_start(), |settings| {
        settings.health_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let health_addr = app
        .server
        .as_ref()
        .and_then(|s| s.health_addr)
        .expect("health");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{health_addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("health channel");
    let mut health = HealthClient::new(channel);
    let mut kela = app.kela().await;
    let mut kela_http = app.rest("kela", Some("handler-1")).await;
    let list = pb::ListReferralsRequest::default();
    kela.referrals
        .list_referrals(list.clone())
        .await
        .expect("before the outage");
    assert_eq!(
        status(&mut health, "readiness").await,
        ServingStatus::Serving as i32
    );

    cluster.down();
    let refused = assert_code(
        kela.referrals.list_referrals(list.clone()).await,
        tonic::Code::Unavailable,
    );
    assert_eq!(reason(&refused), "DATABASE_UNAVAILABLE");
    use tonic_types::StatusExt as _;
    assert_eq!(
        refused
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay),
        Some(Duration::from_secs(1)),
        "with RetryInfo"
    );
    let answer = kela_http.get("/v1/referrals").await.expect(503);
    assert_eq!(answer.reason(), "DATABASE_UNAVAILABLE");
    assert!(
        answer.text.contains("google.rpc.RetryInfo"),
        "{}",
        answer.text
    );
    wait_for(
        &mut health,
        "readiness",
        ServingStatus::NotServing,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        status(&mut health, "").await,
        ServingStatus::Serving as i32,
        "liveness stays up: a restart would not bring the database back"
    );

    let outage_ended = Instant::now();
    cluster.up();
    wait_for(
        &mut health,
        "readiness",
        ServingStatus::Serving,
        Duration::from_secs(15),
    )
    .await;
    // Calls work again (a pooled connection from before the outage may fail once: UNAVAILABLE too,
    // never another code).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match kela.referrals.list_referrals(list.clone()).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "not back within 15 s: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    kela_http.get("/v1/referrals").await.expect(200);
    assert!(outage_ended.elapsed() < Duration::from_secs(15));

    // The calls refused during the outage could not be audited then; they are now, with their
    // own status, once the database answers again.
    let mut auditor = app.auditor().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = audit_events_of(&mut auditor, "ListReferrals")
            .await
            .into_iter()
            .filter(|e| e.status == "UNAVAILABLE" && e.organization == "organizations/kela")
            .count();
        if refused >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refused} refusals of the outage audited"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
    drop(cluster);
}

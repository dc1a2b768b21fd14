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

    // The refusals are in the audit trail, under kela.
    let refusals = app
        .sql(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM audit_events WHERE organization = 'kela' \
             AND status_code = {}",
            Code::ResourceExhausted as i32
        ))
        .await
        .expect("count");
    assert_ne!(refusals, vec!["0".to_owned()], "refusals are audited");

    // After the wait it was told, kela is served again.
    tokio::time::sleep(retry + Duration::from_millis(600)).await;
    look_up(&mut kela).await.expect("served after the wait");
    app.stop().await;
}

//! Operating it: migrations as their own step, a server that refuses a schema that is behind, and
//! health that turns NOT_SERVING before the server stops.

use std::{process::Command, time::Duration};

use referral_exchange::proto::v1 as pb;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::*;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_referral-exchange"))
}

both_engines!(serve_without_migrating_refuses_a_schema_that_is_behind_until_migrate_has_run);
async fn serve_without_migrating_refuses_a_schema_that_is_behind_until_migrate_has_run(db: Db) {
    let database = TestDb::create(db).await;
    let dir = tempfile::tempdir().expect("dir");
    let refused = binary()
        .args([
            "serve",
            "--no-migrate",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--database-url", database.url()])
        .output()
        .expect("run");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("schema is behind"), "{stderr}");

    let migrated = binary()
        .args(["migrate", "--database-url", database.url()])
        .output()
        .expect("run migrate");
    let said = String::from_utf8_lossy(&migrated.stderr);
    assert!(migrated.status.success(), "{said}");
    // It says what it did, in plain text when its stderr is not a terminal.
    assert!(said.contains("migrated"), "{said}");
    assert!(
        !said.contains('\u{1b}'),
        "colour escapes in a pipe: {said:?}"
    );
    let again = binary()
        .args(["migrate", "--database-url", database.url()])
        .output()
        .expect("run migrate again");
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && !said.contains("migrated"),
        "{said}"
    );
    assert!(said.contains("up to date"), "{said}");

    let app = TestApp::spawn_on(db, database, default_start(), |settings| {
        settings.schema = referral_exchange::store::Schema::RequireCurrent;
    })
    .await;
    let mut kela = app.kela().await;
    kela.referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("serves once migrated");
    app.stop().await;
}

both_engines!(health_turns_not_serving_before_the_server_stops);
async fn health_turns_not_serving_before_the_server_stops(db: Db) {
    let app = TestApp::spawn_with(db, default_start(), |settings| {
        settings.health_listen = Some("127.0.0.1:0".parse().expect("addr"));
        settings.drain = Duration::from_secs(2);
    })
    .await;
    let health_addr = app
        .server
        .as_ref()
        .and_then(|s| s.health_addr)
        .expect("health port");
    // Plaintext, no client certificate: what a Kubernetes probe can do.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{health_addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let serving = health
        .check(status(""))
        .await
        .expect("check")
        .into_inner()
        .status;
    assert_eq!(serving, ServingStatus::Serving as i32);
    assert!(
        health
            .check(status("referral_exchange.v1.ReferralService"))
            .await
            .is_ok(),
        "per-service status too"
    );

    let mut kela = app.kela().await;
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let draining = health
        .check(status(""))
        .await
        .expect("check while draining")
        .into_inner()
        .status;
    assert_eq!(draining, ServingStatus::NotServing as i32);
    // While draining, calls still get answers.
    kela.referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("served while draining");
    stopping.await.expect("stopped");
}

both_engines!(after_a_pseudonym_key_rotation_a_persons_history_is_still_found);
async fn after_a_pseudonym_key_rotation_a_persons_history_is_still_found(db: Db) {
    let database = TestDb::create(db).await;
    let url = database.url().to_owned();
    // Before the rotation: key 7…7 (the harness default).
    let before = TestApp::spawn_on(db, database, default_start(), |_| {}).await;
    let mut kela = before.kela().await;
    let first = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create")
        .into_inner();
    let database = before.stop_keeping_db().await;
    assert_eq!(database.url(), url);

    // After: a new key writes, the old one is kept for lookups.
    let after = TestApp::spawn_on(db, database, default_start(), |settings| {
        settings.pseudonym_key = vec![9; 32];
        settings.previous_pseudonym_keys = vec![vec![7; 32]];
    })
    .await;
    let mut kela = after.kela().await;
    let second = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create")
        .into_inner();
    let found = kela
        .referrals
        .list_referrals(pb::ListReferralsRequest {
            personal_identity_code: PIC.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .referrals;
    let names: Vec<&str> = found.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&first.name.as_str()) && names.contains(&second.name.as_str()));

    let mut auditor = after.auditor().await;
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
    let pseudonyms: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e.subject_pseudonym.as_str())
        .collect();
    assert!(
        events.iter().any(|e| e.resources.contains(&first.name)),
        "the old key's events are found"
    );
    assert!(
        events.iter().any(|e| e.resources.contains(&second.name)),
        "the new key's events are found"
    );
    assert_eq!(pseudonyms.len(), 2, "one pseudonym per key");
    after.stop().await;
}

/// The local tools print JSON with the API's key style (camelCase), as the client does.
#[test]
fn the_local_tools_print_camel_case_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = binary()
        .args(["dev-pki", "--org", "kela", "--dir"])
        .arg(dir.path().join("pki"))
        .output()
        .expect("run dev-pki");
    let key = binary()
        .args([
            "audit",
            "generate-key",
            "--origin",
            "example/audit-log",
            "--out",
        ])
        .arg(dir.path().join("signing.key"))
        .output()
        .expect("run generate-key");
    for (tool, output, expected) in [
        ("dev-pki", pki, &["dir", "createdCa", "issued"][..]),
        ("generate-key", key, &["signingKeyFile", "verifierKey"][..]),
    ] {
        assert!(output.status.success(), "{tool}: {output:?}");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        let keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in expected {
            assert!(keys.contains(key), "{tool}: {key} in {keys:?}");
        }
        assert!(
            keys.iter().all(|k| !k.contains('_')),
            "{tool}: snake_case key in {keys:?}"
        );
    }
}

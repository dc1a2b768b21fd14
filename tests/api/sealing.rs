//! Personal content at rest (`referral_exchange::sealing`): what a copy of the database discloses —
//! the SQLite file and its WAL as bytes, a `pg_dump` — holds none of the identity codes, names,
//! phones and free texts the API was given; the API still returns them. And a data key rotation:
//! `referral-exchange keys rewrap` moves everything to the new key while a server runs, an
//! interrupted run loses nothing, and afterwards the old key can go.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use referral_exchange::{proto::v1 as pb, sealing::DataKeys};

use crate::helpers::*;

/// A valid identity code that no other value in the test contains.
pub(crate) const CODE: &str = "131052-308T";
pub(crate) const NAME: &str = "Marker Zqvist";
pub(crate) const PHONE: &str = "+358 40 555 0199";
pub(crate) const REASON: &str = "zq-marker reason: rent arrears";
pub(crate) const APPLICATION: &str = "ZQ-APPLICATION-0042";
pub(crate) const EVIDENCE: &str = "ZQ-EVIDENCE-0017";
pub(crate) const REJECTION: &str = "zq-marker rejection: our case already";
pub(crate) const CANCELLATION: &str = "zq-marker cancellation: moved abroad";
const MARKERS: &[&str] = &[
    CODE,
    NAME,
    PHONE,
    REASON,
    APPLICATION,
    EVIDENCE,
    REJECTION,
    CANCELLATION,
];

/// Referrals and a consent carrying every marker: one rejected by the receiver, one cancelled by
/// Kela. Returns their names.
pub(crate) async fn seed(app: &TestApp) -> (String, String) {
    let mut kela = app.kela().await;
    let mut consent = written_consent(
        CODE,
        &["hva-15"],
        default_start() + chrono::Duration::days(30),
    );
    if let Some(c) = consent.consent.as_mut() {
        c.evidence_reference = EVIDENCE.into();
    }
    let consent = kela
        .consents
        .record_consent(consent)
        .await
        .expect("consent")
        .into_inner();
    let create = |basis_consent: &str| {
        let mut request = referral(CODE, JYVASKYLA, basis_consent);
        if let Some(r) = request.referral.as_mut() {
            r.subject = Some(pb::Subject {
                personal_identity_code: CODE.into(),
                name: NAME.into(),
                contact_phone: PHONE.into(),
                preferred_language: "fi".into(),
            });
            r.reason_text = REASON.into();
            r.application_reference = APPLICATION.into();
        }
        request
    };
    let first_request = create(&consent.name);
    let rejected = kela
        .referrals
        .create_referral(first_request.clone())
        .await
        .expect("create")
        .into_inner();
    // A retry of the same request is answered from the stored (sealed) response.
    let retried = kela
        .referrals
        .create_referral(first_request)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried, rejected, "the retry gets the first response");
    let cancelled = kela
        .referrals
        .create_referral(create(&consent.name))
        .await
        .expect("create")
        .into_inner();

    let mut hva15 = app.receiver("hva-15").await;
    let received = receive(&mut hva15, &rejected.name).await;
    hva15
        .referrals
        .reject_referral(pb::RejectReferralRequest {
            name: received.name.clone(),
            etag: received.etag.clone(),
            request_id: new_request_id(),
            reason: pb::referral::RejectionReason::Duplicate as i32,
            reason_text: REJECTION.into(),
        })
        .await
        .expect("reject");
    kela.referrals
        .cancel_referral(pb::CancelReferralRequest {
            name: cancelled.name.clone(),
            etag: String::new(),
            request_id: new_request_id(),
            reason_text: CANCELLATION.into(),
        })
        .await
        .expect("cancel");
    (rejected.name, cancelled.name)
}

/// Everything the API was given comes back to those who may read it.
async fn api_shows_the_content(app: &TestApp, (rejected, cancelled): &(String, String)) {
    let mut kela = app.kela().await;
    let r = kela
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: rejected.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    let subject = r.subject.expect("subject");
    assert_eq!(
        (
            subject.personal_identity_code.as_str(),
            subject.name.as_str(),
            subject.contact_phone.as_str()
        ),
        (CODE, NAME, PHONE)
    );
    assert_eq!(
        (r.reason_text.as_str(), r.application_reference.as_str()),
        (REASON, APPLICATION)
    );
    let c = kela
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: cancelled.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(c.cancellation_text, CANCELLATION);
    let mut hva15 = app.receiver("hva-15").await;
    let r = hva15
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: rejected.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(r.rejection_text, REJECTION);
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
    assert_eq!(consents[0].evidence_reference, EVIDENCE);
}

/// The database as a thief of a copy would have it: the SQLite file and its WAL, or a `pg_dump`.
fn raw_copy(app: &TestApp) -> Vec<u8> {
    match app.engine {
        Db::Sqlite => {
            let file = app
                .db
                .url()
                .strip_prefix("sqlite:")
                .expect("an sqlite url")
                .to_owned();
            let mut bytes = std::fs::read(&file).expect("the database file");
            if let Ok(wal) = std::fs::read(format!("{file}-wal")) {
                bytes.extend(wal);
            }
            bytes
        }
        Db::Postgres => {
            let dump = Command::new("pg_dump")
                .args(["--dbname", app.db.url()])
                .stderr(Stdio::inherit())
                .output()
                .expect("run pg_dump");
            assert!(dump.status.success(), "pg_dump");
            dump.stdout
        }
    }
}

fn assert_no_marker(bytes: &[u8]) {
    assert!(bytes.len() > 10_000, "a real copy: {} bytes", bytes.len());
    for marker in MARKERS {
        let found = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
        assert!(!found, "{marker:?} is in the raw database");
    }
}

both_engines!(a_copy_of_the_database_discloses_no_personal_content);
async fn a_copy_of_the_database_discloses_no_personal_content(db: Db) {
    let app = TestApp::spawn(db).await;
    let names = seed(&app).await;
    api_shows_the_content(&app, &names).await;
    // The test's own search finds what is there: the coded skeleton, in clear.
    let copy = raw_copy(&app);
    assert!(
        copy.windows(b"NEED_FOR_SOCIAL_WORK".len())
            .any(|w| w == b"NEED_FOR_SOCIAL_WORK"),
        "the search sees the coded columns"
    );
    assert_no_marker(&copy);
}

/// Runs `referral-exchange keys rewrap` (or `--check`) with these key files.
fn rewrap_command(url: &str, dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_referral-exchange"));
    command
        .args(["keys", "rewrap", "--database-url", url, "--data-dir"])
        .arg(dir)
        .arg("--data-key-file")
        .arg(dir.join("new.key"))
        .arg("--previous-data-key-file")
        .arg(dir.join("old.key"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

both_engines!(a_rewrap_moves_everything_to_the_new_data_key_while_serving);
async fn a_rewrap_moves_everything_to_the_new_data_key_while_serving(db: Db) {
    let database = TestDb::create(db).await;
    let url = database.url().to_owned();
    let before = TestApp::spawn_on(db, database, default_start(), |_| {}).await;
    let names = seed(&before).await;
    let database = before.stop_keeping_db().await;

    // The rotation: the new key current, the old one (the harness's 9…9) previous.
    let keys_dir = tempfile::tempdir().expect("dir");
    let new_key = [4u8; 32];
    std::fs::write(keys_dir.path().join("old.key"), hex::encode([9u8; 32])).expect("old key");
    std::fs::write(keys_dir.path().join("new.key"), hex::encode(new_key)).expect("new key");
    let new_id = DataKeys::new(&new_key, &[]).current_id().to_owned();
    let app = TestApp::spawn_on(db, database, default_start(), |settings| {
        settings.data_keys = std::sync::Arc::new(DataKeys::new(&new_key, &[vec![9; 32]]));
    })
    .await;
    api_shows_the_content(&app, &names).await;

    // Nothing is under the new key yet: `--check` says how much is left and exits 2.
    let check = rewrap_command(&url, keys_dir.path(), &["--check"])
        .output()
        .expect("check");
    let said = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{said}");
    assert!(
        said.contains("referrals.subject_code: 2 of 2 values not under the current key"),
        "{said}"
    );

    // Interrupted half-way (one value per batch, slowly): everything still reads.
    let mut slow = rewrap_command(
        &url,
        keys_dir.path(),
        &["--batch", "1", "--pause-ms", "300"],
    )
    .spawn()
    .expect("start rewrap");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = Command::new("kill")
        .args(["-KILL", &slow.id().to_string()])
        .status();
    let _ = slow.wait();
    api_shows_the_content(&app, &names).await;

    // Run to the end, while the server serves: progress shown, nothing left.
    let started = Instant::now();
    let done = rewrap_command(&url, keys_dir.path(), &["--batch", "2"])
        .output()
        .expect("rewrap");
    let said = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{said}");
    assert!(said.contains("re-sealed"), "progress is shown: {said}");
    assert!(
        said.contains("every sealed value is under the current key"),
        "{said}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let sealed = app
        .sql(
            "SELECT subject_code FROM referrals UNION ALL SELECT reason_text FROM referrals \
             UNION ALL SELECT subject_code FROM consents UNION ALL SELECT evidence_reference FROM consents",
        )
        .await
        .expect("raw");
    assert_eq!(sealed.len(), 6);
    for value in &sealed {
        assert!(value.starts_with(&format!("s1.{new_id}.")), "{value}");
    }
    api_shows_the_content(&app, &names).await;
    assert_no_marker(&raw_copy(&app));

    // The old key can go: a server with the new key alone reads everything.
    let database = app.stop_keeping_db().await;
    let after = TestApp::spawn_on(db, database, default_start(), |settings| {
        settings.data_keys = std::sync::Arc::new(DataKeys::new(&new_key, &[]));
    })
    .await;
    api_shows_the_content(&after, &names).await;
}

both_engines!(a_server_refuses_a_data_key_the_database_was_not_written_with);
async fn a_server_refuses_a_data_key_the_database_was_not_written_with(db: Db) {
    let database = TestDb::create(db).await;
    let first = TestApp::spawn_on(db, database, default_start(), |_| {}).await;
    let names = seed(&first).await;
    let database = first.stop_keeping_db().await;
    let url = database.url().to_owned();

    // Another key, not given the one the database was written with: refused before anything is
    // written, saying which key and how to rotate.
    let refused = TestApp::try_spawn_on(db, database, default_start(), |settings| {
        settings.data_keys = std::sync::Arc::new(DataKeys::new(&[5; 32], &[]));
    })
    .await;
    let (error, database) = match refused {
        Ok(_) => panic!("a server started with a data key the database does not know"),
        Err(refused) => refused,
    };
    let said = format!("{error:#}");
    assert!(
        said.contains("data key") && said.contains("--previous-data-key-file"),
        "{said}"
    );
    assert_eq!(database.url(), url, "the same database comes back");

    // With the right key the content is all there.
    let again = TestApp::spawn_on(db, database, default_start(), |_| {}).await;
    api_shows_the_content(&again, &names).await;
}

//! The database remembers the pseudonym key it was written with: the real binary refuses another key
//! (saying which file and how to rotate) and rotates to a new one given the old as a previous key.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use referral_exchange::proto::v1 as pb;

use crate::{
    helpers::*,
    server::{ServerChild, binary_client, start_binary_with},
};

const KEY_FILE: &str = "REFERRAL_EXCHANGE_PSEUDONYM_KEY_FILE";
const PREVIOUS_KEY_FILES: &str = "REFERRAL_EXCHANGE_PREVIOUS_PSEUDONYM_KEY_FILES";

/// The first column of each row `sql` returns, as text, read straight from the database.
async fn rows(engine: Db, url: &str, sql: &str) -> Vec<String> {
    use sqlx::{Connection, Row};
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match engine {
        Db::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect");
            let rows = sqlx::query(sql).fetch_all(&mut conn).await.expect("query");
            rows.iter()
                .map(|r| r.try_get::<String, _>(0).expect("text"))
                .collect()
        }
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            let rows = sqlx::query(sql).fetch_all(&mut conn).await.expect("query");
            rows.iter()
                .map(|r| r.try_get::<String, _>(0).expect("text"))
                .collect()
        }
    }
}

/// What a refused start must leave unchanged: the events and the recorded fingerprint.
async fn database_state(engine: Db, url: &str) -> Vec<String> {
    let mut state = rows(
        engine,
        url,
        "SELECT CAST(COUNT(*) AS TEXT) FROM audit_events",
    )
    .await;
    state.extend(
        rows(
            engine,
            url,
            "SELECT fingerprint FROM key_fingerprints WHERE purpose = 'pseudonym'",
        )
        .await,
    );
    state
}

/// Stops a server started by [`start_binary_with`] as an orchestrator would.
async fn stop(child: ServerChild) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut child = child;
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

/// Starts `serve` with `env` and expects it to exit by itself; its exit code and stderr.
fn refused_start(dir: &Path, url: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let log = dir.join("refused.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_referral-exchange"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .args(["--database-url", url])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start the binary");
    let mut child = ServerChild(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not refuse to start: it is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&log).expect("read the log"),
    )
}

async fn events_of(auditor: &mut Clients) -> Vec<pb::AuditEvent> {
    auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            personal_identity_code: PIC.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list audit events")
        .into_inner()
        .audit_events
}

both_engines!(
    a_server_refuses_a_pseudonym_key_it_was_not_written_with_and_rotates_given_the_old_one
);
async fn a_server_refuses_a_pseudonym_key_it_was_not_written_with_and_rotates_given_the_old_one(
    db: Db,
) {
    let dir = tempfile::tempdir().expect("dir");
    let database = TestDb::create(db).await;
    let url = database.url();
    let old = dir.path().join("old-pseudonym.key");
    let new = dir.path().join("new-pseudonym.key");
    std::fs::write(&old, hex::encode([0x11u8; 32])).expect("old key");
    std::fs::write(&new, hex::encode([0x22u8; 32])).expect("new key");
    let (old, new) = (old.to_str().expect("utf-8"), new.to_str().expect("utf-8"));

    // Written under the old key.
    let (child, addr) = start_binary_with(dir.path(), Some(url), &[(KEY_FILE, old)]);
    let mut kela = binary_client(dir.path(), addr, "kela", "handler-1").await;
    let referral = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create")
        .into_inner();
    let mut auditor = binary_client(dir.path(), addr, "auditor-dpo", "dpo-1").await;
    let written = events_of(&mut auditor).await;
    assert!(
        written.iter().any(|e| e.resources.contains(&referral.name)),
        "the referral's events are found under the key they were written with"
    );
    drop((kela, auditor));
    stop(child).await;
    let before = database_state(db, url).await;
    assert_eq!(
        before.len(),
        2,
        "events counted and one fingerprint recorded"
    );

    // Another key: refused, saying which file and how to rotate, and nothing is written.
    let (code, stderr) = refused_start(dir.path(), url, &[(KEY_FILE, new)]);
    assert_ne!(code, Some(0), "a refused start exits non-zero: {stderr}");
    assert!(code.is_some(), "exited by itself, not by a signal");
    for needed in [new, "--previous-pseudonym-key-file", "deploy/README.md"] {
        assert!(
            stderr.contains(needed),
            "the error names {needed}: {stderr}"
        );
    }
    assert!(
        !stderr.contains(&hex::encode([0x22u8; 32]))
            && !stderr.contains(&hex::encode([0x11u8; 32])),
        "no key material in the error: {stderr}"
    );
    assert_eq!(
        database_state(db, url).await,
        before,
        "a refused start writes nothing"
    );

    // Rotation: the new key current, the old one previous. The old events are still found.
    let (child, addr) = start_binary_with(
        dir.path(),
        Some(url),
        &[(KEY_FILE, new), (PREVIOUS_KEY_FILES, old)],
    );
    let mut auditor = binary_client(dir.path(), addr, "auditor-dpo", "dpo-1").await;
    let found = events_of(&mut auditor).await;
    for event in &written {
        assert!(
            found.iter().any(|e| e.sequence == event.sequence),
            "event {} written under the old key is found after the rotation",
            event.sequence
        );
    }
    drop(auditor);
    stop(child).await;
    let after = database_state(db, url).await;
    assert_ne!(after[1], before[1], "the new key's fingerprint is recorded");

    // So now the old key alone is the unknown one.
    let (code, stderr) = refused_start(dir.path(), url, &[(KEY_FILE, old)]);
    assert_ne!(
        code,
        Some(0),
        "the rotated-out key alone is refused: {stderr}"
    );
    assert!(stderr.contains(old), "{stderr}");
}

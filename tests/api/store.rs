//! The store's contract, at the store itself, on both engines: what every use case relies on from a
//! `Tx`, whichever database is behind it. The API tests exercise the same through the server; these
//! pin each operation's meaning (who gets which message, when a lease is live, what a claim
//! returns) so that an engine or a query can be changed against them alone.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use referral_exchange::{
    audit::AuditRecord,
    domain::OrganizationId,
    mailbox::{MailboxSignals, MessageType, NewMessage},
    store::{self, Recorded, Schema, Store, Tx},
};
use uuid::Uuid;

use crate::helpers::*;

const MAILBOX: &str = "hva-15";

/// A store on a fresh database of `db`, with the mailbox's counter in place.
async fn open(db: Db) -> (TestDb, Arc<dyn Store>) {
    let database = TestDb::create(db).await;
    let store = store::connect(
        database.url(),
        Schema::Migrate,
        Arc::new(MailboxSignals::default()),
        Some(crate::helpers::data_keys()),
    )
    .await
    .expect("open the store");
    let mut tx = store.begin().await.expect("begin");
    tx.ensure_mailboxes(&[MAILBOX.to_owned()])
        .await
        .expect("mailbox counter");
    tx.commit().await.expect("commit");
    (database, store)
}

async fn begin(store: &Arc<dyn Store>) -> Box<dyn Tx> {
    store.begin().await.expect("begin")
}

/// A message about nothing in particular (no referral, no consent) published at `at`.
fn message(at: DateTime<Utc>) -> NewMessage {
    NewMessage {
        id: referral_exchange::domain::new_id(at),
        mailbox: OrganizationId::parse(MAILBOX).expect("organization id"),
        message_type: MessageType::ReferralStateChanged,
        referral_id: None,
        consent_id: None,
        state_change: None,
        deadline: None,
        failed: None,
        publish_time: at,
    }
}

/// Commits `n` messages, one transaction each, and returns their ids in commit order.
async fn publish(store: &Arc<dyn Store>, n: usize, at: DateTime<Utc>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let m = message(at + Duration::milliseconds(i as i64));
        let mut tx = begin(store).await;
        tx.insert_message(&m).await.expect("insert message");
        tx.commit().await.expect("commit");
        ids.push(m.id);
    }
    ids
}

both_engines!(a_request_id_is_recorded_once_and_its_retries_get_the_first_response);
async fn a_request_id_is_recorded_once_and_its_retries_get_the_first_response(db: Db) {
    let (_database, store) = open(db).await;
    let now = default_start();

    let mut tx = begin(&store).await;
    let first = tx.find_request("kela", "r-1").await;
    assert_eq!(first.expect("find"), None);
    tx.record_request("kela", "r-1", "fp-a", "{\"done\":1}", now)
        .await
        .expect("record");
    let recorded = Recorded {
        fingerprint: "fp-a".into(),
        response: "{\"done\":1}".into(),
    };
    assert_eq!(
        tx.find_request("kela", "r-1").await.expect("find"),
        Some(recorded.clone()),
        "later in the same transaction (a batch-mate) finds it"
    );
    tx.commit().await.expect("commit");

    let mut tx = begin(&store).await;
    assert_eq!(
        tx.find_request("kela", "r-1").await.expect("find again"),
        Some(recorded),
        "a retry sees the first request's fingerprint and response"
    );
    assert_eq!(
        tx.find_request("hva-15", "r-1").await.expect("find"),
        None,
        "request ids are each organisation's own"
    );
    // A second record of the id fails the call where it is sent: ABORTED, never a second commit.
    tx.record_request("kela", "r-1", "fp-a", "{\"done\":2}", now)
        .await
        .expect("held");
    let twice = tx.flush().await.expect_err("recorded twice");
    assert_eq!(twice.code(), tonic::Code::Aborted, "{twice:?}");
    assert_eq!(twice.reason().as_str(), "REQUEST_IN_PROGRESS");
    drop(tx);

    // A record rolled back is no record.
    let mut tx = begin(&store).await;
    tx.record_request("hva-15", "r-1", "fp-a", "{}", now)
        .await
        .expect("record");
    tx.flush().await.expect("sent");
    drop(tx);
    let mut tx = begin(&store).await;
    assert_eq!(tx.find_request("hva-15", "r-1").await.expect("find"), None);
}

/// Two first tries of one request at once on PostgreSQL (SQLite has one writer): both find
/// nothing, the later record waits for the earlier transaction and fails ABORTED once it commits.
#[tokio::test]
async fn two_first_tries_of_one_request_at_once_commit_once_postgres() {
    let (_database, store) = open(Db::Postgres).await;
    let now = default_start();
    let mut first = begin(&store).await;
    let mut second = begin(&store).await;
    for tx in [&mut first, &mut second] {
        assert_eq!(tx.find_request("kela", "r-1").await.expect("find"), None);
    }
    first
        .record_request("kela", "r-1", "fp", "{\"by\":1}", now)
        .await
        .expect("record");
    first.flush().await.expect("sent");
    second
        .record_request("kela", "r-1", "fp", "{\"by\":2}", now)
        .await
        .expect("held");
    let waiting = tokio::spawn(async move { second.flush().await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the second waits for the first");
    first.commit().await.expect("commit");
    let refused = waiting
        .await
        .expect("joined")
        .expect_err("recorded meanwhile");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    let mut tx = begin(&store).await;
    let kept = tx.find_request("kela", "r-1").await.expect("find");
    assert_eq!(kept.map(|r| r.response).as_deref(), Some("{\"by\":1}"));
}

both_engines!(messages_are_numbered_in_commit_order_and_leased_in_sequence);
async fn messages_are_numbered_in_commit_order_and_leased_in_sequence(db: Db) {
    let (_database, store) = open(db).await;
    let now = default_start();
    let ids = publish(&store, 3, now).await;

    let mut tx = begin(&store).await;
    assert_eq!(tx.number_messages(MAILBOX).await.expect("number"), 3);
    assert_eq!(
        tx.number_messages(MAILBOX).await.expect("number again"),
        0,
        "what is numbered is not numbered again"
    );
    let lease_until = now + Duration::seconds(60);
    let first = tx
        .lease_messages(MAILBOX, 2, 10, now, lease_until)
        .await
        .expect("lease");
    let second = tx
        .lease_messages(MAILBOX, 10, 10, now, lease_until)
        .await
        .expect("lease the rest");
    tx.commit().await.expect("commit");

    let sequences: Vec<i64> = first.iter().chain(&second).map(|m| m.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3], "numbered in commit order");
    let leased: Vec<Uuid> = first.iter().chain(&second).map(|m| m.id).collect();
    assert_eq!(leased, ids, "each message leased once, in sequence");
    assert!(
        first
            .iter()
            .chain(&second)
            .all(|m| m.delivery_attempt == 1 && m.lease_expire_time == Some(lease_until))
    );

    // Another mailbox's pull sees none of them.
    let mut tx = begin(&store).await;
    let elsewhere = tx
        .lease_messages("helsinki", 10, 10, now, lease_until)
        .await
        .expect("lease elsewhere");
    assert!(elsewhere.is_empty());
}

both_engines!(a_lease_is_live_until_its_end_then_the_message_is_delivered_again);
async fn a_lease_is_live_until_its_end_then_the_message_is_delivered_again(db: Db) {
    let (_database, store) = open(db).await;
    let now = default_start();
    let ids = publish(&store, 2, now).await;
    let end = now + Duration::seconds(30);

    let mut tx = begin(&store).await;
    tx.number_messages(MAILBOX).await.expect("number");
    let leased = tx
        .lease_messages(MAILBOX, 10, 10, now, end)
        .await
        .expect("lease");
    tx.commit().await.expect("commit");
    let attempts: Vec<(Uuid, i32)> = leased.iter().map(|m| (m.id, m.delivery_attempt)).collect();

    let mut tx = begin(&store).await;
    let live_before = tx.live_leases(MAILBOX, &attempts, end - Duration::milliseconds(1));
    assert_eq!(live_before.await.expect("live"), ids);
    let live_at_end = tx.live_leases(MAILBOX, &attempts, end).await;
    assert!(
        live_at_end.expect("live").is_empty(),
        "a lease is over at its end"
    );
    let during = tx.lease_messages(MAILBOX, 10, 10, end - Duration::seconds(1), end);
    assert!(
        during.await.expect("lease").is_empty(),
        "nothing to lease while leased"
    );
    let again = tx
        .lease_messages(MAILBOX, 10, 10, end, end + Duration::seconds(30))
        .await
        .expect("lease again");
    tx.commit().await.expect("commit");
    assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert!(again.iter().all(|m| m.delivery_attempt == 2));

    // The first delivery's attempt no longer names a live lease; the second's does.
    let mut tx = begin(&store).await;
    let old = tx
        .live_leases(MAILBOX, &attempts, end + Duration::seconds(1))
        .await;
    assert!(old.expect("live").is_empty());
    let renewed: Vec<(Uuid, i32)> = again.iter().map(|m| (m.id, 2)).collect();
    let new = tx
        .live_leases(MAILBOX, &renewed, end + Duration::seconds(1))
        .await;
    assert_eq!(new.expect("live"), ids);
}

both_engines!(an_acknowledged_message_is_never_delivered_again_and_stays_in_the_history);
async fn an_acknowledged_message_is_never_delivered_again_and_stays_in_the_history(db: Db) {
    let (_database, store) = open(db).await;
    let now = default_start();
    let ids = publish(&store, 2, now).await;

    let mut tx = begin(&store).await;
    tx.number_messages(MAILBOX).await.expect("number");
    tx.lease_messages(MAILBOX, 10, 10, now, now + Duration::seconds(10))
        .await
        .expect("lease");
    let got = tx
        .get_messages(MAILBOX, &[ids[0]])
        .await
        .expect("get messages");
    assert_eq!(got.len(), 1);
    let not_ours = tx.get_messages("helsinki", &[ids[0]]).await;
    assert!(
        not_ours.expect("get messages").is_empty(),
        "an id of another mailbox is left out"
    );
    tx.acknowledge_messages(&[ids[0]], now + Duration::seconds(1))
        .await
        .expect("acknowledge");
    tx.commit().await.expect("commit");

    let mut tx = begin(&store).await;
    let later = now + Duration::seconds(60);
    let redelivered = tx
        .lease_messages(MAILBOX, 10, 10, later, later + Duration::seconds(10))
        .await
        .expect("lease after expiry");
    assert_eq!(
        redelivered.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ids[1]],
        "only the unacknowledged message comes again"
    );
    let history = tx.mailbox_history(MAILBOX, 0, 10).await.expect("history");
    assert_eq!(history.len(), 2);
    assert!(history[0].ack_time.is_some() && history[1].ack_time.is_none());
    let counts = tx.mailbox_stats(MAILBOX, later).await.expect("stats");
    assert_eq!((counts.pending, counts.leased, counts.dead), (0, 1, 0));

    // Retention forgets acknowledged messages only.
    let forgotten = tx.delete_acknowledged_before(later).await.expect("forget");
    assert_eq!(forgotten, 1);
    let history = tx.mailbox_history(MAILBOX, 0, 10).await.expect("history");
    assert_eq!(
        history.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
}

both_engines!(a_message_out_of_attempts_goes_to_the_dead_letters_until_redriven);
async fn a_message_out_of_attempts_goes_to_the_dead_letters_until_redriven(db: Db) {
    let (_database, store) = open(db).await;
    let now = default_start();
    let ids = publish(&store, 1, now).await;
    let max_attempts = 1;
    let end = now + Duration::seconds(10);

    let mut tx = begin(&store).await;
    tx.number_messages(MAILBOX).await.expect("number");
    tx.lease_messages(MAILBOX, 10, max_attempts, now, end)
        .await
        .expect("lease");
    let early = tx.dead_letter_exhausted(None, max_attempts, end - Duration::seconds(1));
    assert!(
        early.await.expect("dead letters").is_empty(),
        "not while its last lease is live"
    );
    let dead = tx
        .dead_letter_exhausted(Some(MAILBOX), max_attempts, end)
        .await
        .expect("dead letters");
    assert_eq!(dead.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    let out_of_attempts =
        tx.lease_messages(MAILBOX, 10, max_attempts, end, end + Duration::seconds(10));
    assert!(out_of_attempts.await.expect("lease").is_empty());
    let listed = tx.list_dead_letters(MAILBOX, 0, 10).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].dead_letter_time.is_some());
    let counts = tx.mailbox_stats(MAILBOX, end).await.expect("stats");
    assert_eq!((counts.pending, counts.leased, counts.dead), (0, 0, 1));

    let redriven = tx
        .redrive_dead_letters(MAILBOX, Some(&ids))
        .await
        .expect("redrive");
    assert_eq!(redriven, 1);
    let again = tx
        .lease_messages(MAILBOX, 10, max_attempts, end, end + Duration::seconds(10))
        .await
        .expect("lease after redrive");
    assert_eq!(again.len(), 1, "a redriven message gets new attempts");
    assert_eq!(again[0].delivery_attempt, 2);
    assert!(
        tx.list_dead_letters(MAILBOX, 0, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

both_engines!(the_audit_tables_take_inserts_and_refuse_every_change);
async fn the_audit_tables_take_inserts_and_refuse_every_change(db: Db) {
    let (database, store) = open(db).await;
    let record = AuditRecord {
        time: default_start(),
        organization: "kela".into(),
        user_id: "handler-1".into(),
        method: "/referral_exchange.v1.ReferralService/GetReferral".into(),
        resources: vec!["referrals/x".into()],
        subject_pseudonyms: vec!["p1".into()],
        status_code: 0,
        correlation_id: String::new(),
        disclosures: Vec::new(),
    };
    let mut tx = begin(&store).await;
    tx.insert_audit_event(&record).await.expect("insert");
    tx.commit().await.expect("commit");

    let mut tx = begin(&store).await;
    let query = referral_exchange::audit::AuditQuery {
        subject_pseudonyms: vec!["p1".into()],
        limit: 10,
        ..Default::default()
    };
    let found = tx.list_audit_events(&query).await.expect("list");
    assert_eq!(found.len(), 1, "found through the subject index");
    assert_eq!(found[0].record, record);
    // Whole names only, any of a person's pseudonyms, and the resource index likewise.
    for (subjects, resource, expected) in [
        (vec!["p"], None, 0),
        (vec!["p1x"], None, 0),
        (vec!["p0", "p1"], None, 1),
        (vec![], Some("referrals/x"), 1),
        (vec![], Some("referrals"), 0),
        (vec!["p1"], Some("referrals/y"), 0),
    ] {
        let query = referral_exchange::audit::AuditQuery {
            subject_pseudonyms: subjects.iter().map(|s| s.to_string()).collect(),
            resource: resource.map(str::to_owned),
            limit: 10,
            ..Default::default()
        };
        let found = tx.list_audit_events(&query).await.expect("list");
        assert_eq!(found.len(), expected, "{subjects:?} {resource:?}");
    }
    drop(tx);

    // SQLite's person and resource indexes are rows beside the event; PostgreSQL's are GIN
    // indexes over the event row itself (migration 0012).
    let mut changes = vec![
        "UPDATE audit_events SET user_id = 'someone-else'",
        "DELETE FROM audit_events",
    ];
    if db == Db::Sqlite {
        changes.extend([
            "DELETE FROM audit_event_subjects",
            "UPDATE audit_event_resources SET resource = 'x'",
        ]);
    }
    for change in changes {
        let refused = raw_sql(&database, db, change).await;
        assert!(
            refused.is_err_and(|e| e.contains("append-only")),
            "{change} must be refused by the database"
        );
    }
}

both_engines!(audit_events_written_before_migration_0012_are_found_after_it);
async fn audit_events_written_before_migration_0012_are_found_after_it(db: Db) {
    let database = TestDb::create(db).await;
    let url = database.url().to_owned();
    migrate(db, &url, Some(11)).await;
    let time = match db {
        Db::Sqlite => "0",
        Db::Postgres => "now()",
    };
    for (resource, subject) in [("referrals/x", "p1"), ("referrals/y", "p2")] {
        sql_text(
            db,
            &url,
            &format!(
                "INSERT INTO audit_events (time, organization, user_id, method, resources, \
                   subject_pseudonyms, status_code, correlation_id, disclosures) \
                 VALUES ({time}, 'kela', 'handler-1', '/m', '[\"{resource}\"]', '[\"{subject}\"]', \
                   0, '', '[]')"
            ),
        )
        .await
        .expect("an event before 0012");
    }
    // Opening the store migrates the rest (PostgreSQL: the index tables become GIN indexes).
    let store = store::connect(
        &url,
        Schema::Migrate,
        Arc::new(MailboxSignals::default()),
        Some(crate::helpers::data_keys()),
    )
    .await
    .expect("open the store");
    let mut tx = begin(&store).await;
    for (subject, resource, expected) in [
        (Some("p1"), None, "referrals/x"),
        (None, Some("referrals/y"), "referrals/y"),
    ] {
        let query = referral_exchange::audit::AuditQuery {
            subject_pseudonyms: subject.into_iter().map(str::to_owned).collect(),
            resource: resource.map(str::to_owned),
            limit: 10,
            ..Default::default()
        };
        let found = tx.list_audit_events(&query).await.expect("list");
        assert_eq!(found.len(), 1, "{subject:?} {resource:?}: {found:?}");
        assert_eq!(found[0].record.resources, [expected]);
    }
    drop(tx);
    if db == Db::Postgres {
        let gone = sql_text(
            db,
            &url,
            "SELECT COALESCE(CAST(to_regclass('audit_event_subjects') AS TEXT), 'gone') \
               || ' ' || COALESCE(CAST(to_regclass('audit_event_resources') AS TEXT), 'gone')",
        )
        .await
        .expect("the catalog");
        assert_eq!(gone, ["gone gone"], "PostgreSQL keeps no index tables");
    }
}

/// Runs one statement on the test database outside the store; its error, as text.
async fn raw_sql(database: &TestDb, db: Db, sql: &str) -> Result<(), String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    let result = match db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(database.url()).await;
            let pool = pool.expect("connect");
            sqlx::raw_sql(sql).execute(&pool).await.map(drop)
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(database.url()).await;
            let pool = pool.expect("connect");
            sqlx::raw_sql(sql).execute(&pool).await.map(drop)
        }
    };
    result.map_err(|e| e.to_string())
}

async fn connect_error(url: &str) -> String {
    let signals = Arc::new(MailboxSignals::default());
    match store::connect(
        url,
        Schema::Migrate,
        signals,
        Some(crate::helpers::data_keys()),
    )
    .await
    {
        Ok(_) => panic!("connected to {url}"),
        Err(e) => format!("{e:#}"),
    }
}

/// A connection that fails says which step failed and what to do, for each of the three.
#[tokio::test]
async fn a_failed_postgres_connection_says_whether_server_login_or_database_failed() {
    let missing = format!("rx_missing_{}", Uuid::new_v4().simple());
    let no_database = connect_error(&with_database(&postgres_url(), &missing)).await;
    assert!(
        no_database.contains(&format!("has no database \"{missing}\""))
            && no_database.contains("createdb"),
        "{no_database}"
    );

    let no_server = connect_error("postgres://postgres@127.0.0.1:1/test").await;
    assert!(
        no_server.contains("cannot reach PostgreSQL at 127.0.0.1:1"),
        "{no_server}"
    );

    // The same server and database as a role that does not exist.
    let url = postgres_url();
    let server = url
        .split_once('@')
        .map_or(url.as_str(), |(_, server)| server);
    let server = server.trim_start_matches("postgres://");
    let stranger = format!("postgres://rx_no_such_role@{server}");
    let no_login = connect_error(&stranger).await;
    assert!(
        no_login.contains("refused the login of user \"rx_no_such_role\""),
        "{no_login}"
    );
}

/// A fresh PostgreSQL has no `test` database: the tests' admin connection creates the one its URL
/// names instead of failing.
#[tokio::test]
async fn the_tests_create_their_database_when_it_is_missing() {
    let missing = format!("rx_missing_{}", Uuid::new_v4().simple());
    let mut connection = admin_connection(&with_database(&postgres_url(), &missing)).await;
    let (current,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&mut connection)
        .await
        .expect("query");
    assert_eq!(current, missing);
    drop(connection);
    let mut admin = admin_connection(&with_database(&postgres_url(), "postgres")).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {missing} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop");
}

/// A SQLite file in a directory that does not exist yet: the directory is made, as the file is.
#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_is_created_with_it() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("not").join("yet").join("exchange.db");
    let store = store::connect(
        &format!("sqlite:{}", file.display()),
        Schema::Migrate,
        Arc::new(MailboxSignals::default()),
        Some(crate::helpers::data_keys()),
    )
    .await
    .expect("open a store in a new directory");
    store.close().await;
    assert!(file.exists());
}

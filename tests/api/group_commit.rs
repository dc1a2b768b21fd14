//! Group commit: members of one batch share a transaction and a commit, each stays atomic, a failing
//! member leaves nothing and fails no one else, and no member hears "committed" before the batch is.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use referral_exchange::{
    audit::AuditRecord,
    domain::{
        OrganizationId, PersonalIdentityCode,
        consent::{Consent, Form, GivenBy, NewConsent, Purpose},
    },
    error::Error,
    mailbox::MailboxSignals,
    proto::v1 as pb,
    store::{self, Schema, Store, group::GroupCommit},
};
use tonic::Code;

use crate::helpers::*;

fn record(user: &str) -> AuditRecord {
    AuditRecord {
        time: Utc::now(),
        organization: "kela".into(),
        user_id: user.into(),
        method: "/test/GroupCommit".into(),
        resources: vec![],
        subject_pseudonyms: vec![],
        status_code: 0,
        correlation_id: String::new(),
        disclosures: vec![],
    }
}

fn consent() -> Consent {
    Consent::record(
        uuid::Uuid::new_v4(),
        NewConsent {
            subject: PersonalIdentityCode::parse(PIC).expect("valid"),
            purpose: Purpose::SocialWelfareReferral,
            recipients: vec![OrganizationId::parse("hva-15").expect("valid")],
            form: Form::Oral,
            given_by: GivenBy::Subject,
            valid_from: None,
            expire_time: None,
            evidence_reference: String::new(),
        },
        Utc::now(),
    )
}

/// Users of the audit rows the test wrote, as stored (committed).
async fn committed_users(db: &TestDb, engine: Db) -> Vec<String> {
    use sqlx::Connection;
    let sql =
        "SELECT user_id FROM audit_events WHERE method = '/test/GroupCommit' ORDER BY user_id";
    match engine {
        Db::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(db.url())
                .await
                .expect("connect");
            sqlx::query_scalar(sql)
                .fetch_all(&mut conn)
                .await
                .expect("query")
        }
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(db.url())
                .await
                .expect("connect");
            sqlx::query_scalar(sql)
                .fetch_all(&mut conn)
                .await
                .expect("query")
        }
    }
}

both_engines!(a_batch_commits_once_each_member_stays_atomic_and_a_failing_member_fails_no_one_else);
async fn a_batch_commits_once_each_member_stays_atomic_and_a_failing_member_fails_no_one_else(
    db: Db,
) {
    let database = TestDb::create(db).await;
    let store: Arc<dyn Store> = store::connect(
        database.url(),
        Schema::Migrate,
        Arc::new(MailboxSignals::default()),
        Some(crate::helpers::data_keys()),
    )
    .await
    .expect("open");
    // One lane: all members go to the same batch.
    let group = Arc::new(GroupCommit::new(store.clone(), 64, 1));

    // The first member holds its turn while the others arrive: they all join its batch.
    let mut first = group.begin().await.expect("first");
    first
        .insert_audit_event(&record("member-1"))
        .await
        .expect("write");
    let duplicate = consent();
    let mut members = Vec::new();
    for i in 2..=6 {
        let group = group.clone();
        let duplicate = duplicate.clone();
        members.push(tokio::spawn(async move {
            let mut tx = group.begin().await?;
            tx.insert_audit_event(&record(&format!("member-{i}")))
                .await?;
            match i {
                // Refused after writing twice: neither write may remain.
                3 => {
                    tx.insert_audit_event(&record("member-3-again")).await?;
                    return Err(Error::invalid_field(
                        "test",
                        "refused",
                        "refused on purpose",
                    ));
                }
                // Fails inside the database (a duplicate key aborts the statement): the batch must
                // recover and the members after it still commit.
                4 => {
                    tx.insert_consent(&duplicate, "pseudonym").await?;
                    tx.insert_consent(&duplicate, "pseudonym").await?;
                }
                // A write the engine may hold back (SQLite does, see `store/sqlite.rs`) fails
                // where it is sent, at the latest at the member's commit: it fails that member.
                6 => {
                    let nobody = OrganizationId::parse("hva-15").expect("valid");
                    tx.insert_route(uuid::Uuid::new_v4(), &nobody, Utc::now())
                        .await?;
                }
                _ => {}
            }
            tx.commit().await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(group.counters(), (1, 6), "six members joined one batch");
    assert!(
        committed_users(&database, db).await.is_empty(),
        "nothing is committed while the batch runs"
    );

    // The first member's commit returns only once the whole batch has committed.
    first.commit().await.expect("the batch commits");
    assert_eq!(
        committed_users(&database, db).await,
        vec![
            "member-1".to_string(),
            "member-2".to_string(),
            "member-5".to_string()
        ],
        "every member that committed is there; the refused and the failed ones left nothing"
    );
    let outcomes: Vec<Option<Code>> = {
        let mut out = Vec::new();
        for member in members {
            out.push(member.await.expect("task").err().map(|e| e.code()));
        }
        out
    };
    assert_eq!(
        outcomes,
        vec![
            None,
            Some(Code::InvalidArgument),
            Some(Code::Internal),
            None,
            Some(Code::Internal)
        ]
    );
    store.close().await;
}

both_engines!(a_transaction_reads_its_own_writes_and_a_rollback_to_a_savepoint_undoes_them);
async fn a_transaction_reads_its_own_writes_and_a_rollback_to_a_savepoint_undoes_them(db: Db) {
    let database = TestDb::create(db).await;
    let store: Arc<dyn Store> = store::connect(
        database.url(),
        Schema::Migrate,
        Arc::new(MailboxSignals::default()),
        Some(crate::helpers::data_keys()),
    )
    .await
    .expect("open");
    let mut consent = consent();
    let mut tx = store.begin().await.expect("begin");
    tx.insert_consent(&consent, "pseudonym")
        .await
        .expect("insert");
    tx.savepoint(1).await.expect("savepoint");
    consent.version = 7;
    tx.update_consent(&consent).await.expect("update");
    let read = tx
        .get_consent(consent.id, false)
        .await
        .expect("read")
        .expect("there");
    assert_eq!(read.version, 7, "a read sees the update before it");
    tx.rollback_to_savepoint(1).await.expect("rollback");
    let read = tx
        .get_consent(consent.id, false)
        .await
        .expect("read")
        .expect("there");
    assert_eq!(read.version, 1, "the update is undone");
    tx.commit().await.expect("commit");
    let mut tx = store.begin().await.expect("begin");
    let stored = tx
        .get_consent(consent.id, false)
        .await
        .expect("read")
        .expect("committed");
    assert_eq!(stored.version, 1);
    drop(tx);
    store.close().await;
}

both_engines!(a_row_inserted_and_updated_by_held_writes_ends_as_updated);
async fn a_row_inserted_and_updated_by_held_writes_ends_as_updated(db: Db) {
    use referral_exchange::domain::referral::{
        Basis, DeadlineGroup, DeadlinePolicy, Kind, NewReferral, Reason, Referral, StatutoryGround,
        Subject,
    };
    let database = TestDb::create(db).await;
    let store: Arc<dyn Store> = store::connect(
        database.url(),
        Schema::Migrate,
        Arc::new(MailboxSignals::default()),
        Some(crate::helpers::data_keys()),
    )
    .await
    .expect("open");
    let new = NewReferral {
        kind: Kind::NeedForSocialWork,
        subject: Subject {
            personal_identity_code: PersonalIdentityCode::parse(PIC).expect("valid"),
            name: None,
            contact_phone: None,
            preferred_language: None,
        },
        home_municipality_code: JYVASKYLA.into(),
        current_municipality_code: None,
        reasons: vec![Reason::Housing],
        reason_text: String::new(),
        urgent: false,
        deadline_group: DeadlineGroup::NoStatutoryGroup,
        basis: Basis::Statutory(StatutoryGround::UnableToCareForSelf),
        personal_discussion_requested: false,
        application_reference: None,
    };
    let hva15 = OrganizationId::parse("hva-15").expect("valid");
    let kela = OrganizationId::parse("kela").expect("valid");
    let mut referral = Referral::create(
        uuid::Uuid::new_v4(),
        new,
        hva15,
        kela,
        Utc::now(),
        DeadlinePolicy::default(),
    );
    let mut tx = store.begin().await.expect("begin");
    tx.insert_referral(&referral, "pseudonym")
        .await
        .expect("insert");
    // No read in between: on PostgreSQL both could go as one statement, where the update would
    // not see the inserted row.
    referral.version = 2;
    tx.update_referral(&referral).await.expect("update");
    tx.commit().await.expect("commit");
    let mut tx = store.begin().await.expect("begin");
    let stored = tx
        .get_referral(referral.id, false)
        .await
        .expect("read")
        .expect("committed");
    assert_eq!(stored.version, 2, "the update took effect after the insert");
    drop(tx);
    store.close().await;
}

both_engines!(calls_through_the_api_are_batched_and_each_refusal_stays_its_own);
async fn calls_through_the_api_are_batched_and_each_refusal_stays_its_own(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    // Half the creates rest on a withdrawn consent (refused inside the transaction), half are fine.
    let withdrawn = kela
        .consents
        .record_consent(oral_consent(PIC, &["hva-15"]))
        .await
        .expect("c")
        .into_inner();
    kela.consents
        .withdraw_consent(pb::WithdrawConsentRequest {
            name: withdrawn.name.clone(),
            ..Default::default()
        })
        .await
        .expect("withdraw");
    let (batches_before, members_before) = app
        .exchange()
        .group_commit_counters()
        .expect("group commit is on");
    let mut calls = Vec::new();
    for i in 0..24 {
        let mut kela = kela.clone();
        let request = if i % 2 == 0 {
            notification(PIC, JYVASKYLA)
        } else {
            referral(PIC, JYVASKYLA, &withdrawn.name)
        };
        calls.push(tokio::spawn(async move {
            kela.referrals
                .create_referral(request)
                .await
                .map(|r| r.into_inner().name)
        }));
    }
    let mut created = Vec::new();
    let mut refused = 0;
    for call in calls {
        match call.await.expect("task") {
            Ok(name) => created.push(name),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition);
                assert_eq!(reason(&status), "CONSENT_WITHDRAWN");
                refused += 1;
            }
        }
    }
    assert_eq!((created.len(), refused), (12, 12));
    let (batches, members) = app
        .exchange()
        .group_commit_counters()
        .expect("group commit is on");
    assert!(
        members - members_before >= 24,
        "every call and every refusal's audit event went through batches"
    );
    assert!(
        batches - batches_before < members - members_before,
        "calls shared batches"
    );

    // Every created referral is there and routed; every refusal is audited.
    let mut hva15 = app.receiver("hva-15").await;
    let routed = drain(&mut hva15).await;
    assert_eq!(routed.len(), 12);
    let mut auditor = app.auditor().await;
    let refusals = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            method: "CreateReferral".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events
        .into_iter()
        .filter(|e| e.status_code == Code::FailedPrecondition as i32)
        .count();
    assert_eq!(refusals, 12);
    app.stop().await;
}

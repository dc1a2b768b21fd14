//! Deployment-wide tasks run on one replica at a time, and another takes over when it is gone.

use std::sync::Arc;

use referral_exchange::{
    mailbox::MailboxSignals,
    store::{self, Schema},
};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_a_task_and_another_takes_over_when_its_session_ends() {
    let db = TestDb::create(Db::Postgres).await;
    let replica_a = store::connect(
        db.url(),
        Schema::Migrate,
        Arc::new(MailboxSignals::default()),
        Some(crate::helpers::data_keys()),
    )
    .await
    .expect("a");
    let replica_b = store::connect(
        db.url(),
        Schema::Migrate,
        Arc::new(MailboxSignals::default()),
        Some(crate::helpers::data_keys()),
    )
    .await
    .expect("b");

    let mut leader = replica_a
        .try_lead("deadline-watch")
        .await
        .expect("ask")
        .expect("first asker leads");
    assert!(
        replica_b
            .try_lead("deadline-watch")
            .await
            .expect("ask")
            .is_none(),
        "one leader at a time"
    );
    assert!(
        replica_b
            .try_lead("audit-sequencer")
            .await
            .expect("ask")
            .is_some(),
        "locks are per task"
    );
    assert!(leader.still_leading().await);

    // The leader's session ends (as when its process is killed): the lock is free at once.
    drop(leader);
    let mut taken = None;
    for _ in 0..50 {
        taken = replica_b.try_lead("deadline-watch").await.expect("ask");
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(taken.is_some(), "another replica took over");
    replica_a.close().await;
    replica_b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_one_process_and_always_leads() {
    let db = TestDb::create(Db::Sqlite).await;
    let store = store::connect(
        db.url(),
        Schema::Migrate,
        Arc::new(MailboxSignals::default()),
        Some(crate::helpers::data_keys()),
    )
    .await
    .expect("open");
    assert!(
        store
            .try_lead("deadline-watch")
            .await
            .expect("ask")
            .is_some()
    );
    store.close().await;
}

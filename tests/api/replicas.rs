//! Several replicas on one PostgreSQL: two real server processes share delivery, run each background
//! task once between them, and the survivor takes the tasks over when the replica running them is
//! killed with SIGKILL.

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use referral_exchange::proto::v1 as pb;

use crate::{
    helpers::*,
    server::{ServerChild, binary_client, start_binary_with},
};

/// The deployment-wide tasks a server runs (see `server::background_jobs`).
const TASKS: usize = 6;

/// Which process (by pid) holds each granted advisory lock: one lock per background task.
async fn task_lock_holders(database_url: &str) -> Vec<u32> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database_url)
        .await
        .expect("connect");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()",
    )
    .fetch_all(&mut conn)
    .await
    .expect("pg_locks");
    names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("referral-exchange/")
                .and_then(|pid| pid.parse().ok())
        })
        .collect()
}

/// Waits until every task's lock is held, all by one process; returns that process and how long it took.
async fn wait_for_one_leader(database_url: &str, within: Duration) -> (u32, Duration) {
    let started = Instant::now();
    loop {
        let holders = task_lock_holders(database_url).await;
        if holders.len() == TASKS && holders.iter().all(|h| *h == holders[0]) {
            return (holders[0], started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "no single leader within {within:?}: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_delivery_run_each_task_once_and_take_over_from_a_killed_one() {
    let database = TestDb::create(Db::Postgres).await;
    // One data directory: the replicas share the PKI, the pseudonym key and the audit signing key,
    // as a real deployment's replicas do.
    let dir = tempfile::tempdir().expect("dir");
    let env = [
        ("REFERRAL_EXCHANGE_TAKEOVER_SECONDS", "1"),
        ("REFERRAL_EXCHANGE_BACKGROUND_INTERVAL_SECONDS", "1"),
    ];
    let (first, first_addr) = start_binary_with(dir.path(), Some(database.url()), &env);
    let (second, second_addr) = start_binary_with(dir.path(), Some(database.url()), &env);
    let addrs: HashMap<u32, std::net::SocketAddr> =
        HashMap::from([(first.id(), first_addr), (second.id(), second_addr)]);
    let mut replicas: HashMap<u32, ServerChild> =
        HashMap::from([(first.id(), first), (second.id(), second)]);

    // Each task runs on one replica.
    let (leader, _) = wait_for_one_leader(database.url(), Duration::from_secs(15)).await;
    assert!(replicas.contains_key(&leader));

    // Pullers on both replicas drain one mailbox: no message is held twice while its lease is valid.
    let mut kela = binary_client(dir.path(), first_addr, "kela", "handler-1").await;
    for _ in 0..80 {
        kela.referrals
            .create_referral(notification(PIC, JYVASKYLA))
            .await
            .expect("create");
    }
    let mut pullers = Vec::new();
    for (i, addr) in [
        first_addr,
        second_addr,
        first_addr,
        second_addr,
        first_addr,
        second_addr,
    ]
    .into_iter()
    .enumerate()
    {
        let mut puller = binary_client(dir.path(), addr, "hva-15", &format!("worker-{i}")).await;
        pullers.push(tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let messages = pull(&mut puller, 4).await;
                if messages.is_empty() {
                    return held;
                }
                ack(
                    &mut puller,
                    messages.iter().map(|m| m.ack_id.clone()).collect(),
                )
                .await;
                held.extend(
                    messages
                        .into_iter()
                        .map(|m| (m.message_id, m.delivery_attempt)),
                );
            }
        }));
    }
    let mut deliveries: HashMap<(String, i32), usize> = HashMap::new();
    for puller in pullers {
        for delivery in puller.await.expect("puller") {
            *deliveries.entry(delivery).or_default() += 1;
        }
    }
    assert_eq!(deliveries.len(), 80, "every message delivered");
    assert!(
        deliveries.values().all(|n| *n == 1),
        "no message held twice"
    );

    // A long-poll on one replica wakes for a write on the other.
    let mut waiter = binary_client(dir.path(), second_addr, "hva-15", "worker-9").await;
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let request = pb::PullMessagesRequest {
            max_messages: 1,
            lease_duration: seconds(30),
            wait_duration: seconds(20),
        };
        let messages = waiter
            .mailbox
            .pull_messages(request)
            .await
            .expect("pull")
            .into_inner()
            .messages;
        (messages.len(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    kela.referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create on the other");
    let (count, waited) = waiting.await.expect("waiter");
    assert_eq!(count, 1);
    assert!(waited < Duration::from_secs(3), "woke after {waited:?}");

    // Kill the leader outright: its tasks move to the survivor within the configured takeover time
    // (1 s) plus a round (1 s), with room for a loaded machine.
    let mut killed = replicas.remove(&leader).expect("leader process");
    Command::new("kill")
        .args(["-KILL", &leader.to_string()])
        .status()
        .expect("kill");
    let _ = killed.wait();
    let (survivor, took) = wait_for_one_leader(database.url(), Duration::from_secs(10)).await;
    assert_ne!(survivor, leader);
    println!("background tasks taken over in {took:?}");

    // The survivor's sequencer signs a checkpoint that includes what happens now.
    let survivor_addr = addrs[&survivor];
    let mut auditor = binary_client(dir.path(), survivor_addr, "auditor-dpo", "dpo-1").await;
    let before = auditor
        .audit
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner();
    // Something to integrate: reading the trail is processing, audited (a checkpoint is not).
    auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .expect("list audit events");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = auditor
            .audit
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .expect("checkpoint")
            .into_inner();
        if now.tree_size > before.tree_size {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new checkpoint after the takeover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (pid, mut child) in replicas {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = child.wait();
    }
}

//! `auditlog`: what the audit trail keeps, per referral lifecycle and per hour of an idle receiver
//! long-polling. Counts audit events and measures the bytes of every audit table (the events, their
//! subject and resource index rows, pending queue, Merkle leaves and tree nodes, signed checkpoints),
//! indexes included, after the sequencer has integrated everything.
//!
//! - **Lifecycle**: `--lifecycles` referrals one after another, each: Kela records a written consent
//!   and creates the referral; the receiver pulls (getting it), acknowledges, accepts, starts and
//!   completes it; Kela pulls the four state changes and acknowledges them. No empty pull: a pull that
//!   finds nothing is polling, measured next.
//! - **Idle receiver**: `--clients` receivers long-poll an empty mailbox (`PullMessages` waiting
//!   `--wait-seconds`, again as soon as it answers) for `--duration` seconds. The growth is divided by
//!   the receivers and scaled to an hour (× 3600 / seconds measured): a linear extrapolation, which
//!   holds because an idle receiver does the same thing every `--wait-seconds`.
//!
//! Bytes are measured twice. *Row bytes*: the stored rows of the audit tables, byte by byte
//! (PostgreSQL `pg_column_size` of each row, SQLite `dbstat` payload of the tables), indexes left out;
//! this is the figure to compare. *Disk bytes*: what the tables occupy with their indexes (PostgreSQL
//! `pg_total_relation_size`, SQLite pages from `dbstat`); they grow by whole pages (8 KiB, 4 KiB) when
//! the last one is full, so over a short run they say little.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, Row};

use super::{Outcome, server::Target};
use referral_exchange::proto::v1::{
    self as pb, mailbox_service_client::MailboxServiceClient,
    referral_service_client::ReferralServiceClient,
};

/// Audit events and bytes of the audit tables now.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    events: i64,
    row_bytes: i64,
    disk_bytes: i64,
}

async fn footprint(url: &str, postgres: bool) -> anyhow::Result<Footprint> {
    if postgres {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM audit_events), \
             (SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) \
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'r' AND c.relname LIKE 'audit%' AND n.nspname = current_schema())",
        )
        .fetch_one(&mut conn)
        .await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND c.relname LIKE 'audit%' AND n.nspname = current_schema()",
        )
        .fetch_all(&mut conn)
        .await?;
        let mut row_bytes = 0;
        for table in tables {
            // Names from the catalogue, of the schema's own tables.
            let sum = format!(
                "SELECT CAST(COALESCE(SUM(pg_column_size(t.*)), 0) AS BIGINT) FROM \"{table}\" t"
            );
            row_bytes += sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sum))
                .fetch_one(&mut conn)
                .await?;
        }
        Ok(Footprint {
            events: row.try_get(0)?,
            row_bytes,
            disk_bytes: row.try_get(1)?,
        })
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM audit_events), \
             (SELECT COALESCE(SUM(d.payload), 0) FROM dbstat d \
              JOIN sqlite_master m ON m.name = d.name \
              WHERE m.type = 'table' AND m.tbl_name LIKE 'audit%'), \
             (SELECT COALESCE(SUM(d.pgsize), 0) FROM dbstat d \
              JOIN sqlite_master m ON m.name = d.name WHERE m.tbl_name LIKE 'audit%')",
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(Footprint {
            events: row.try_get(0)?,
            row_bytes: row.try_get(1)?,
            disk_bytes: row.try_get(2)?,
        })
    }
}

/// Waits until the sequencer has put every committed event into the tree (and signed it), so that a
/// footprint includes the leaves and nodes of what was measured.
async fn settled(url: &str, postgres: bool) -> anyhow::Result<Footprint> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 = if postgres {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_pending")
                .fetch_one(&mut conn)
                .await?
        } else {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_pending")
                .fetch_one(&mut conn)
                .await?
        };
        if pending == 0 {
            // The round that emptied the queue signs its checkpoint in the same transaction.
            return footprint(url, postgres).await;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the audit sequencer left {pending} events pending for a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn wait(seconds: i64) -> Option<pbjson_types::Duration> {
    Some(pbjson_types::Duration { seconds, nanos: 0 })
}

/// One referral's whole life, with no pull that finds nothing.
async fn lifecycle(target: &Target, i: u64) -> anyhow::Result<()> {
    let consent = super::scenarios::written_consent(target, i).await?;
    let kela = target.channel("kela", "bench-audit").await?;
    let receiver = target.channel("hva-15", "worker-audit").await?;
    let created = ReferralServiceClient::new(kela.clone())
        .create_referral(super::scenarios::referral_with_consent(
            &super::scenarios::identity_code(i),
            &consent,
        ))
        .await?
        .into_inner();
    let mut mailbox = MailboxServiceClient::new(receiver.clone());
    let routed = pull_all(&mut mailbox, 1).await?;
    anyhow::ensure!(
        routed
            .iter()
            .any(|m| m.referral.as_ref().is_some_and(|r| r.name == created.name)),
        "the receiver did not get the referral"
    );
    let mut referrals = ReferralServiceClient::new(receiver);
    let accepted = referrals
        .accept_referral(pb::AcceptReferralRequest {
            name: created.name.clone(),
            etag: String::new(),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner();
    let started = referrals
        .start_assessment(pb::StartAssessmentRequest {
            name: created.name.clone(),
            etag: accepted.etag,
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner();
    referrals
        .complete_referral(pb::CompleteReferralRequest {
            name: created.name.clone(),
            etag: started.etag,
            request_id: uuid::Uuid::new_v4().to_string(),
            outcome: pb::referral::Outcome::ServicesStarted as i32,
        })
        .await?;
    // RECEIVED, ACCEPTED, IN_PROGRESS, COMPLETED.
    pull_all(&mut MailboxServiceClient::new(kela), 4).await?;
    Ok(())
}

/// Pulls (without waiting) and acknowledges until `expected` messages came, each pull finding some.
async fn pull_all(
    mailbox: &mut MailboxServiceClient<super::server::Authenticated>,
    expected: usize,
) -> anyhow::Result<Vec<pb::Message>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < expected {
        anyhow::ensure!(Instant::now() < deadline, "messages did not arrive");
        let messages = mailbox
            .pull_messages(pb::PullMessagesRequest {
                max_messages: 100,
                lease_duration: wait(60),
                // Waits for the next message rather than coming back empty.
                wait_duration: wait(5),
            })
            .await?
            .into_inner()
            .messages;
        if messages.is_empty() {
            continue;
        }
        mailbox
            .acknowledge_messages(pb::AcknowledgeMessagesRequest {
                ack_ids: messages.iter().map(|m| m.ack_id.clone()).collect(),
            })
            .await?;
        got.extend(messages);
    }
    Ok(got)
}

pub async fn run(
    target: Target,
    url: &str,
    postgres: bool,
    lifecycles: usize,
    receivers: usize,
    wait_seconds: i64,
    duration: Duration,
) -> anyhow::Result<Vec<Outcome>> {
    // Lifecycles.
    let before = settled(url, postgres).await?;
    let started = Instant::now();
    for i in 0..lifecycles {
        lifecycle(&target, i as u64)
            .await
            .with_context(|| format!("lifecycle {i}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = settled(url, postgres).await?;
    let mut per_lifecycle = Outcome::new("auditlog", 1, lifecycles, seconds);
    per_lifecycle.per = Some("lifecycle");
    per_lifecycle.audit_events_per =
        Some((after.events - before.events) as f64 / lifecycles as f64);
    per_lifecycle.audit_bytes_per =
        Some((after.row_bytes - before.row_bytes) as f64 / lifecycles as f64);
    per_lifecycle.audit_disk_bytes_per =
        Some((after.disk_bytes - before.disk_bytes) as f64 / lifecycles as f64);

    // An idle receiver's day: long-polls of an empty mailbox (hva-15's, drained above).
    let before = settled(url, postgres).await?;
    let started = Instant::now();
    let mut pollers = Vec::new();
    for i in 0..receivers {
        let channel = target.channel("hva-15", &format!("idle-{i}")).await?;
        pollers.push(tokio::spawn(async move {
            let mut mailbox = MailboxServiceClient::new(channel);
            let mut polls = 0usize;
            while started.elapsed() < duration {
                let pulled = mailbox
                    .pull_messages(pb::PullMessagesRequest {
                        max_messages: 10,
                        lease_duration: wait(60),
                        wait_duration: wait(wait_seconds),
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(pulled.messages.is_empty(), "the idle mailbox got a message");
                polls += 1;
            }
            Ok::<_, anyhow::Error>(polls)
        }));
    }
    let mut polls = 0;
    for poller in pollers {
        polls += poller.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = settled(url, postgres).await?;
    let hours = seconds / 3600.0 * receivers as f64;
    let mut idle = Outcome::new("auditlog", receivers, polls, seconds);
    idle.per = Some("idle receiver hour");
    idle.audit_events_per = Some((after.events - before.events) as f64 / hours);
    idle.audit_bytes_per = Some((after.row_bytes - before.row_bytes) as f64 / hours);
    idle.audit_disk_bytes_per = Some((after.disk_bytes - before.disk_bytes) as f64 / hours);
    Ok(vec![per_lifecycle, idle])
}

//! Latency as the data grows: with 10⁴, 10⁵ and 10⁶ referrals stored (with their audit events and
//! delivered messages), how long a receiver's pull and an auditor's query by subject take. Both are
//! index lookups and should not grow with the data.
//!
//! The stored rows are written with SQL (through the API, 10⁶ referrals would take hours), with the
//! server stopped; the server is then started and left to sign the backlog into the audit log before
//! anything is timed.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection;

use super::{
    Outcome, Percentiles,
    scenarios::{identity_code, notification},
    server::ServerProcess,
};
use referral_exchange::proto::v1::{
    self as pb, audit_service_client::AuditServiceClient,
    mailbox_service_client::MailboxServiceClient, referral_service_client::ReferralServiceClient,
};

/// Rows per INSERT … SELECT generate_series.
const CHUNK: u64 = 100_000;
/// Timed calls per measurement.
const SAMPLES: usize = 200;

/// Adds referrals `from..to` (completed, each with a delivered message in hva-15's mailbox and an audit
/// event about one of 10,000 people).
async fn add_rows(conn: &mut sqlx::PgConnection, from: u64, to: u64) -> anyhow::Result<()> {
    let code = identity_code(1);
    let mut start = from;
    while start < to {
        let end = (start + CHUNK).min(to);
        let (a, b) = (start as i64 + 1, end as i64);
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(
            "INSERT INTO referrals (id, kind, subject_code, subject_pseudonym, home_municipality_code, recipient, \
               reasons, reason_text, urgent, deadline_group, statutory_ground, personal_discussion_requested, state, \
               state_reason, outcome, history, create_time, update_time, receive_time, version, reason_bits) \
             SELECT md5('r' || g)::uuid, 'NEED_NOTIFICATION_WITHOUT_CONSENT', $3, md5('s' || g % 10000) || md5('t' || g % 10000), \
               '179', 'hva-15', '[\"HEALTH\"]', 'Preloaded', false, 'NO_STATUTORY_GROUP', 'UNABLE_TO_CARE_FOR_SELF', false, \
               'COMPLETED', 'SERVICES_STARTED', 'SERVICES_STARTED', '[]', now(), now(), now(), 5, 8 \
             FROM generate_series($1::bigint, $2::bigint) g",
        )
        .bind(a)
        .bind(b)
        .bind(&code)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO referral_routes (referral_id, recipient, routed_at) \
             SELECT md5('r' || g)::uuid, 'hva-15', now() FROM generate_series($1::bigint, $2::bigint) g",
        )
        .bind(a)
        .bind(b)
        .execute(&mut *tx)
        .await?;
        let base: i64 = sqlx::query_scalar(
            "INSERT INTO mailboxes (organization, last_sequence) VALUES ('hva-15', $1) \
             ON CONFLICT (organization) DO UPDATE SET last_sequence = mailboxes.last_sequence + $1 \
             RETURNING last_sequence - $1",
        )
        .bind(b - a + 1)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO messages (id, mailbox, sequence, message_type, referral_id, publish_time, delivery_attempt, ack_time) \
             SELECT md5('m' || g)::uuid, 'hva-15', $3 + g - $1 + 1, 'REFERRAL_ROUTED', md5('r' || g)::uuid, now(), 1, now() \
             FROM generate_series($1::bigint, $2::bigint) g",
        )
        .bind(a)
        .bind(b)
        .bind(base)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, status_code, \
               correlation_id, disclosures) \
             SELECT now(), 'hva-15', 'worker-1', '/referral_exchange.v1.ReferralService/GetReferral', \
               '[\"referrals/' || md5('r' || g)::uuid || '\"]', \
               '[\"' || md5('s' || g % 10000) || md5('t' || g % 10000) || '\"]', 0, '', '[]' \
             FROM generate_series($1::bigint, $2::bigint) g",
        )
        .bind(a)
        .bind(b)
        .execute(&mut *tx)
        .await?;
        // The subject and resource index rows come from the audit_events trigger.
        tx.commit().await?;
        start = end;
    }
    sqlx::query("ANALYZE").execute(&mut *conn).await?;
    Ok(())
}

/// Waits until the audit sequencer has signed everything stored into the log.
async fn wait_for_sequencer(conn: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_pending")
            .fetch_one(&mut *conn)
            .await?;
        if pending == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the audit sequencer did not catch up ({pending} pending)"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Measures at each of `sizes` (ascending). `start(name)` starts a server process on the database.
pub async fn run(
    url: &str,
    sizes: &[u64],
    start: impl Fn(&str) -> anyhow::Result<ServerProcess>,
) -> anyhow::Result<Vec<Outcome>> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // The first start creates the schema.
    start("schema")?.stop()?;
    let mut stored = 0;
    let mut outcomes = Vec::new();
    for &size in sizes {
        if size > stored {
            add_rows(&mut conn, stored, size)
                .await
                .context("preloading")?;
            stored = size;
        }
        let server = start(&format!("at-{size}"))?;
        wait_for_sequencer(&mut conn).await?;
        let target = server.target();
        let mut kela = ReferralServiceClient::new(target.channel("kela", "bench-kela").await?);
        let mut mailbox =
            MailboxServiceClient::new(target.channel("hva-15", "bench-worker").await?);
        let mut audit = AuditServiceClient::new(target.channel("auditor-dpo", "bench-dpo").await?);
        let subject = identity_code(0);
        let (mut pulls, mut queries) = (Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            kela.create_referral(notification(&subject)).await?;
            let started = Instant::now();
            let messages = mailbox
                .pull_messages(pb::PullMessagesRequest {
                    max_messages: 10,
                    lease_duration: Some(pbjson_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    wait_duration: None,
                })
                .await?
                .into_inner()
                .messages;
            pulls.push(started.elapsed());
            anyhow::ensure!(
                !messages.is_empty(),
                "the new referral was not in the mailbox"
            );
            let ack_ids = messages.into_iter().map(|m| m.ack_id).collect();
            mailbox
                .acknowledge_messages(pb::AcknowledgeMessagesRequest { ack_ids })
                .await?;
            let started = Instant::now();
            audit
                .list_audit_events(pb::ListAuditEventsRequest {
                    personal_identity_code: subject.clone(),
                    page_size: 100,
                    ..Default::default()
                })
                .await?;
            queries.push(started.elapsed());
        }
        let rss = server.peak_rss_mb();
        server.stop()?;
        for (scenario, samples) in [("pull@size", &mut pulls), ("audit@size", &mut queries)] {
            let mut outcome = Outcome::new(scenario, 1, samples.len(), 0.0);
            outcome.latency_ms = Percentiles::of(samples);
            outcome.stored_referrals = Some(size);
            outcome.server_peak_rss_mb = rss;
            outcomes.push(outcome);
        }
    }
    Ok(outcomes)
}

//! `GetReferralStatistics` over a year of referrals: 10⁶ by default (`--sizes`), spread over the 365
//! days before now, across the 21 wellbeing services counties, nine reasons (every third referral
//! with two), four states and 100,000 people. The rows are written with SQL, on either engine, with
//! the server stopped (as `datasize` does): the reasons also as their bits (`reason_bits`, as
//! `Skeleton::reason_bits` writes them), the person's number by the database's own trigger
//! (migration 0010). The server is then started and each table timed.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection;

use super::{Outcome, Percentiles, scenarios::identity_code, server::ServerProcess};
use referral_exchange::proto::v1::{self as pb, reporting_service_client::ReportingServiceClient};

/// What the server runs with here besides the run's own arguments. The preloaded referrals are up
/// to a year old; at the default content retention (90 days) the server would spend the run
/// erasing the content of the ~190,000 COMPLETED ones older than that, concurrently with the
/// timed calls (statistics never read content: what erasure costs is measured elsewhere).
pub const SERVER_ARGS: [&str; 2] = ["--content-retention-days", "3650"];

/// Rows per INSERT.
const CHUNK: u64 = 100_000;
/// Timed calls per table.
const SAMPLES: usize = 5;

/// The reason codes, as a JSON array the preload picks from.
///
/// The receipt due date of preloaded referrals lies far ahead: with real due dates the server's
/// deadline watch would spend the whole run telling Kela of 250,000 overdue referrals, competing
/// with what is timed (the statement evaluates the overdue rule for every referral either way).
const REASONS: &str = r#"["LIFE_MANAGEMENT","LIVELIHOOD","HOUSING","HEALTH","SUBSTANCE_USE","FAMILY_AND_CHILDREN","EMPLOYMENT","DEBT","OTHER"]"#;

async fn add_rows_postgres(url: &str, from: u64, to: u64) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let code = identity_code(1);
    let mut start = from;
    while start < to {
        let end = (start + CHUNK).min(to);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO referrals (id, kind, subject_code, subject_pseudonym, home_municipality_code, \
               recipient, reasons, reason_text, urgent, deadline_group, statutory_ground, \
               personal_discussion_requested, state, state_reason, outcome, history, create_time, \
               update_time, receive_time, version, receive_due_date, create_month, \
               receipt_working_days, received_within_deadline, reason_bits) \
             SELECT md5('r' || g)::uuid, 'NEED_NOTIFICATION_WITHOUT_CONSENT', $3, md5('s' || g % 100000), \
               '179', 'hva-' || lpad((g % 21 + 1)::text, 2, '0'), \
               CASE WHEN g % 3 = 0 THEN '[\"' || (r.j ->> (g % 9)::int) || '\",\"' || (r.j ->> ((g + 4) % 9)::int) || '\"]' \
                    ELSE '[\"' || (r.j ->> (g % 9)::int) || '\"]' END, \
               'Preloaded', false, 'NO_STATUTORY_GROUP', 'UNABLE_TO_CARE_FOR_SELF', false, \
               (ARRAY['REQUESTED','RECEIVED','IN_PROGRESS','COMPLETED'])[g % 4 + 1], 'ROUTED', \
               CASE WHEN g % 4 = 3 THEN 'SERVICES_STARTED' END, '[]', t, t, \
               CASE WHEN g % 4 > 0 THEN t + interval '1 day' END, 1, \
               DATE '2100-01-01', \
               to_char(t AT TIME ZONE 'Europe/Helsinki', 'YYYY-MM'), \
               CASE WHEN g % 4 > 0 THEN g % 5 END, CASE WHEN g % 4 > 0 THEN g % 5 <= 3 END, \
               (1 << (g % 9)::int) | CASE WHEN g % 3 = 0 THEN 1 << ((g + 4) % 9)::int ELSE 0 END \
             FROM (SELECT g, now() - (g % 365) * interval '1 day' - (g % 86400) * interval '1 second' AS t \
                   FROM generate_series($1::bigint, $2::bigint) g) s, \
                  (SELECT '{REASONS}'::jsonb AS j) r"
        )))
        .bind(start as i64 + 1)
        .bind(end as i64)
        .bind(&code)
        .execute(&mut conn)
        .await?;
        start = end;
    }
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    Ok(())
}

async fn add_rows_sqlite(url: &str, from: u64, to: u64) -> anyhow::Result<()> {
    let mut conn = sqlx::SqliteConnection::connect(url).await?;
    let code = identity_code(1);
    let now = chrono::Utc::now().timestamp_micros();
    let mut start = from;
    while start < to {
        let end = (start + CHUNK).min(to);
        let mut tx = conn.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH RECURSIVE n(g) AS (SELECT $1 UNION ALL SELECT g + 1 FROM n WHERE g < $2), \
               s(g, t) AS (SELECT g, $4 - (g % 365) * 86400000000 - (g % 86400) * 1000000 FROM n) \
             INSERT INTO referrals (id, kind, subject_code, subject_pseudonym, home_municipality_code, \
               recipient, reasons, reason_text, urgent, deadline_group, statutory_ground, \
               personal_discussion_requested, state, state_reason, outcome, history, create_time, \
               update_time, receive_time, version, receive_due_date, create_month, \
               receipt_working_days, received_within_deadline, reason_bits) \
             SELECT randomblob(16), 'NEED_NOTIFICATION_WITHOUT_CONSENT', $3, 's' || (g % 100000), '179', \
               'hva-' || printf('%02d', g % 21 + 1), \
               CASE WHEN g % 3 = 0 THEN json_array(json_extract('{REASONS}', '$[' || (g % 9) || ']'), \
                                                   json_extract('{REASONS}', '$[' || ((g + 4) % 9) || ']')) \
                    ELSE json_array(json_extract('{REASONS}', '$[' || (g % 9) || ']')) END, \
               'Preloaded', 0, 'NO_STATUTORY_GROUP', 'UNABLE_TO_CARE_FOR_SELF', 0, \
               CASE g % 4 WHEN 0 THEN 'REQUESTED' WHEN 1 THEN 'RECEIVED' WHEN 2 THEN 'IN_PROGRESS' ELSE 'COMPLETED' END, \
               'ROUTED', CASE WHEN g % 4 = 3 THEN 'SERVICES_STARTED' END, '[]', t, t, \
               CASE WHEN g % 4 > 0 THEN t + 86400000000 END, 1, \
               '2100-01-01', \
               strftime('%Y-%m', t / 1000000, 'unixepoch', '+2 hours'), \
               CASE WHEN g % 4 > 0 THEN g % 5 END, CASE WHEN g % 4 > 0 THEN g % 5 <= 3 END, \
               (1 << (g % 9)) | CASE WHEN g % 3 = 0 THEN 1 << ((g + 4) % 9) ELSE 0 END \
             FROM s"
        )))
        .bind(start as i64 + 1)
        .bind(end as i64)
        .bind(&code)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        start = end;
    }
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    Ok(())
}

/// Measures at each of `sizes` (ascending). `start(name)` starts a server process on the database.
pub async fn run(
    url: &str,
    postgres: bool,
    sizes: &[u64],
    start: impl Fn(&str) -> anyhow::Result<ServerProcess>,
) -> anyhow::Result<Vec<Outcome>> {
    // The first start creates the schema.
    start("schema")?.stop()?;
    let mut stored = 0;
    let mut outcomes = Vec::new();
    for &size in sizes {
        if size > stored {
            let began = Instant::now();
            if postgres {
                add_rows_postgres(url, stored, size).await
            } else {
                add_rows_sqlite(url, stored, size).await
            }
            .context("preloading")?;
            eprintln!(
                "preloaded {} referrals in {:.1} s",
                size - stored,
                began.elapsed().as_secs_f64()
            );
            stored = size;
        }
        let server = start(&format!("at-{size}"))?;
        let target = server.target();
        let mut reporting =
            ReportingServiceClient::new(target.channel("kela", "bench-kela").await?);
        let now = chrono::Utc::now();
        let at = |t: chrono::DateTime<chrono::Utc>| pbjson_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        };
        use pb::Dimension::{Month, Reason, Recipient};
        for (name, group_by) in [
            ("statistics[recipient,reason]", [Recipient, Reason]),
            ("statistics[month,recipient]", [Month, Recipient]),
        ] {
            let request = pb::GetReferralStatisticsRequest {
                start_time: Some(at(now - chrono::Duration::days(366))),
                end_time: Some(at(now + chrono::Duration::days(1))),
                group_by: group_by.iter().map(|d| *d as i32).collect(),
            };
            let mut samples: Vec<Duration> = Vec::new();
            let mut cells = 0;
            for _ in 0..SAMPLES {
                let started = Instant::now();
                let response = reporting
                    .get_referral_statistics(request.clone())
                    .await?
                    .into_inner();
                samples.push(started.elapsed());
                cells = response.cells.len();
            }
            let mut sorted = samples.clone();
            sorted.sort();
            let in_order: Vec<String> = samples
                .iter()
                .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
                .collect();
            eprintln!(
                "{name} at {size}: {cells} cells, p50 {:.0} ms, max {:.0} ms (in order: {} ms)",
                sorted[sorted.len() / 2].as_secs_f64() * 1000.0,
                sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                in_order.join(", ")
            );
            let mut outcome = Outcome::new(name, 1, samples.len(), 0.0);
            outcome.latency_ms = Percentiles::of(&mut samples);
            outcome.stored_referrals = Some(size);
            outcome.server_peak_rss_mb = server.peak_rss_mb();
            outcomes.push(outcome);
        }
        server.stop()?;
    }
    Ok(outcomes)
}

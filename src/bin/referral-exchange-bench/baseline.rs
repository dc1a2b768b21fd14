//! The baselines: pgbench committing the same rows as one CreateReferral (`bench/pgbench/create.sql`),
//! or as one whole lifecycle (that script, then `bench/pgbench/roundtrip.sql`), one transaction per
//! call, at the same concurrency against the same database. What PostgreSQL does when nothing else is
//! in the way is the honest limit of a durable call.

use std::{process::Command, time::Duration};

use anyhow::Context;
use sqlx::Connection;

use super::footprint::{self, Footprint};

/// The scripts, shipped inside the binary so that the benchmark runs from anywhere.
const CREATE: &str = include_str!("../../../bench/pgbench/create.sql");
const REST_OF_LIFECYCLE: &str = include_str!("../../../bench/pgbench/roundtrip.sql");
const MINIMAL_SETUP: &str = include_str!("../../../bench/pgbench/minimal_setup.sql");
const MINIMAL_CREATE: &str = include_str!("../../../bench/pgbench/minimal_create.sql");
const MINIMAL_REST_OF_LIFECYCLE: &str =
    include_str!("../../../bench/pgbench/minimal_roundtrip.sql");

/// Which rows the baseline commits for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// The rows the server writes today, statement for statement.
    Server,
    /// Only what a call must make durable: the referral, its message, its audit event (issue 19),
    /// in tables without triggers or secondary indexes.
    Minimal,
}

/// Which scenario's rows pgbench commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// One CreateReferral per pgbench transaction.
    Create,
    /// One lifecycle per pgbench transaction: eight transactions, one per call of the `roundtrip`.
    Roundtrip,
}

impl Baseline {
    fn script(self, rows: Rows) -> String {
        match (self, rows) {
            (Self::Create, Rows::Server) => CREATE.to_string(),
            (Self::Roundtrip, Rows::Server) => format!("{CREATE}\n{REST_OF_LIFECYCLE}"),
            (Self::Create, Rows::Minimal) => MINIMAL_CREATE.to_string(),
            (Self::Roundtrip, Rows::Minimal) => {
                format!("{MINIMAL_CREATE}\n{MINIMAL_REST_OF_LIFECYCLE}")
            }
        }
    }
}

/// What a baseline run did: scripts per second, and what they wrote per script.
pub struct Measured {
    pub per_second: f64,
    pub footprint: Footprint,
}

/// Runs the baseline of `rows` (see [`run_pgbench`]); for the minimal rows, in tables of its own
/// made for the run and dropped after it.
pub async fn run(
    url: &str,
    baseline: Baseline,
    rows: Rows,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    if rows == Rows::Server {
        return run_pgbench(url, baseline, rows, clients, duration).await;
    }
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(MINIMAL_SETUP).execute(&mut conn).await?;
    let tps = run_pgbench(url, baseline, rows, clients, duration).await;
    sqlx::raw_sql("DROP TABLE bench_min_referrals, bench_min_messages, bench_min_audit")
        .execute(&mut conn)
        .await?;
    tps
}

/// Runs the baseline for `duration` with `clients` connections; returns its scripts per second
/// (creates or lifecycles). Needs the written consents the scenario recorded (one per client) and,
/// for the lifecycle, the mailboxes' counter rows the server made at start.
async fn run_pgbench(
    url: &str,
    baseline: Baseline,
    rows: Rows,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(
        "CREATE TABLE bench_consents AS \
         SELECT row_number() OVER (ORDER BY id) AS n, id FROM consents WHERE form = 'WRITTEN'",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query("CREATE UNIQUE INDEX ON bench_consents (n)")
        .execute(&mut conn)
        .await?;
    let consents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bench_consents")
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(consents > 0, "no written consents to refer against");

    let dir = tempfile::tempdir()?;
    let script = dir.path().join("baseline.sql");
    std::fs::write(&script, baseline.script(rows))?;
    let before = footprint::take(url).await?;
    let output = Command::new("pgbench")
        .args([
            "--no-vacuum",
            // Parsed and planned once per connection, as the server's statements are.
            "--protocol",
            "prepared",
            "--client",
            &clients.to_string(),
            "--jobs",
            "2",
        ])
        .args(["--time", &duration.as_secs().max(1).to_string()])
        .args(["--define", &format!("consents={consents}")])
        .arg("--file")
        .arg(&script)
        .arg(url)
        // The server talks to PostgreSQL without TLS (sqlx's `tls-none`); so does its baseline, unless
        // the URL asks otherwise.
        .env("PGSSLMODE", "disable")
        .output()
        .context("running pgbench (Debian package postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let failed: u64 = figure(&stdout, "number of failed transactions: ").unwrap_or(0);
    anyhow::ensure!(failed == 0, "pgbench had {failed} failed transactions");
    let tps: f64 = figure(&stdout, "tps = ")
        .with_context(|| format!("no tps in pgbench's output:\n{stdout}"))?;
    let scripts: usize = figure(&stdout, "number of transactions actually processed: ")
        .with_context(|| format!("no transaction count in pgbench's output:\n{stdout}"))?;
    let footprint = footprint::since(url, &before, scripts).await?;
    sqlx::query("DROP TABLE bench_consents")
        .execute(&mut conn)
        .await?;
    Ok(Measured {
        per_second: tps,
        footprint,
    })
}

/// The number after `label` on the line of pgbench's report that starts with it.
fn figure<T: std::str::FromStr>(report: &str, label: &str) -> Option<T> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

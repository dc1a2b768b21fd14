//! `referral-exchange-bench`: drives a real server process over mutual TLS and reports what it
//! measured. Not a test: run it on purpose, and read `bench/README.md` for how to read the figures.
//!
//! Its own binary, not a subcommand of the server's: the production image carries only what operators
//! and users run, and the benchmark reaches the server only as a client would (the library's public
//! API, the proto clients, a child process), so what it measures is what ships.
//!
//! - [`server`]: the server under test as a child process, on a database of its own.
//! - [`scenarios`]: what the clients do (create, roundtrip, read, audit, transport, pull, wakeup).
//! - [`baseline`]: pgbench committing the same rows as a create or a lifecycle, for ours/pgbench.
//! - [`datasize`]: pull and subject-audit-query latency with 10⁴…10⁶ referrals stored.
//! - [`statistics`]: `GetReferralStatistics` over a year of 10⁴…10⁶ referrals, on either engine.
//! - [`delivery`]: messages created, pulled and acknowledged per second, beside RabbitMQ doing the
//!   same with the same durability.
//! - [`auditlog`]: audit events and bytes of the audit tables per referral lifecycle and per hour of
//!   an idle receiver long-polling.

mod auditlog;
mod baseline;
mod datasize;
mod delivery;
mod footprint;
mod rest;
mod scenarios;
mod server;
mod statistics;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use self::server::{BenchDatabase, ServerProcess};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Kela creates referrals resting on written consent.
    Create,
    /// Create, then the receiver pulls, acknowledges, accepts, starts and completes, then Kela pulls the
    /// state changes: one referral's whole life.
    Roundtrip,
    /// GetReferral of stored referrals.
    Read,
    /// ListAuditEvents by subject, as an auditor.
    Audit,
    /// Health checks over the same mutual TLS: a call's cost with no database, the floor under all.
    Transport,
    /// A mailbox drained by pullers that pull and acknowledge.
    Pull,
    /// A long-poll woken by a write through another server process.
    Wakeup,
    /// Pull and subject-audit-query latency with 10⁴, 10⁵ and 10⁶ referrals stored.
    Datasize,
    /// GetReferralStatistics over a year of referrals, at each of `--sizes`, on either engine.
    Statistics,
    /// One organisation over its per-organisation limit beside a quiet one (src/limits.rs).
    Limits,
    /// Half the clients create referrals, half pull and acknowledge their messages: messages
    /// delivered per second; with `--rabbitmq`, beside RabbitMQ's durable publish and consume.
    Delivery,
    /// Audit events and bytes of the audit tables per referral lifecycle (`--lifecycles`), and per
    /// hour of an idle receiver long-polling (`--clients` receivers, `--wait-seconds`, `--duration`).
    Auditlog,
}

impl Scenario {
    /// The pgbench script committing the same rows, for the scenarios that have one.
    fn baseline(self) -> Option<baseline::Baseline> {
        match self {
            Self::Create => Some(baseline::Baseline::Create),
            Self::Roundtrip => Some(baseline::Baseline::Roundtrip),
            _ => None,
        }
    }
}

/// The edge a scenario's clients call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    Grpc,
    Http,
}

/// Measure a real server process under load (see bench/README.md).
#[derive(Debug, Parser)]
#[command(name = "referral-exchange-bench", version)]
pub struct BenchArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// A PostgreSQL URL whose server may create a fresh database for the run (dropped afterwards).
    /// Default: a fresh SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Concurrent clients; several comma-separated values run one after another in one invocation.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    clients: Vec<usize>,
    /// Seconds each run lasts (create, roundtrip, read, audit).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// `create`, `roundtrip`: also run the pgbench baselines at the same concurrency (the same rows
    /// as the server's, and only the rows a call must make durable; one transaction per call) and
    /// print both ratios.
    #[arg(long)]
    baseline: bool,
    /// `create`: issue this many creates per second in all (open loop, spread over the clients) instead
    /// of as many as the server takes: latency at a given load.
    #[arg(long)]
    rate: Option<f64>,
    /// `create`: which edge the clients call, gRPC or the HTTP face (REST/JSON over HTTP/1.1, one
    /// kept-alive connection per client).
    #[arg(long, value_enum, default_value_t = Edge::Grpc)]
    edge: Edge,
    /// `pull`: messages in the mailbox per run.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// `wakeup`: how many wake-ups to time.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// `auditlog`: referral lifecycles to measure the audit trail's growth over.
    #[arg(long, default_value_t = 100)]
    lifecycles: usize,
    /// `auditlog`: how long each idle receiver's long-poll waits (the API allows 0–20 s).
    #[arg(long, default_value_t = 20)]
    wait_seconds: i64,
    /// `limits`: the calls a second the noisy organisation offers in all, paced evenly over its
    /// clients (0: each client as fast as it can). A fixed offered load makes servers comparable
    /// whatever their refusals cost: a faster refusal otherwise just invites more calls.
    #[arg(long, default_value_t = 0)]
    offered_rate: u32,
    /// `datasize`: numbers of stored referrals to measure at.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<u64>,
    /// `delivery`: also run the peer, a RabbitMQ already running at this AMQP URL (e.g.
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`; Debian's `rabbitmq-server`), at the same concurrency,
    /// and print ours / RabbitMQ.
    #[arg(long)]
    rabbitmq: Option<String>,
    /// The server binary (default: `referral-exchange` beside this one, as `cargo build` leaves it).
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Extra `serve` arguments for the server under test, e.g. `--server-arg=--group-commit-max=1`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one run measured. Written (`--json`) with the API's key style, as every tool's JSON is.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub scenario: String,
    pub engine: &'static str,
    pub clients: usize,
    /// Completed operations (creates, lifecycles, reads, queries, acknowledged messages, wake-ups).
    pub operations: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub latency_ms: Option<Percentiles>,
    /// `wakeup`: the create alone, to set the wake-up against.
    pub create_latency_ms: Option<Percentiles>,
    pub errors: usize,
    /// `roundtrip`: RPCs per completed lifecycle, to set against `transport`'s calls per second.
    pub calls_per_operation: Option<f64>,
    pub server_peak_rss_mb: Option<f64>,
    /// With `--baseline`: pgbench's creates or lifecycles per second for the same rows, and ours / it.
    pub baseline_per_second: Option<f64>,
    pub ratio_to_baseline: Option<f64>,
    /// With `--baseline`: pgbench committing only the rows a call must make durable (the referral,
    /// its message, its audit event per call), and ours / it.
    pub minimal_baseline_per_second: Option<f64>,
    pub ratio_to_minimal: Option<f64>,
    /// `datasize`: stored referrals.
    pub stored_referrals: Option<u64>,
    /// `auditlog`: what the two figures below are per ("lifecycle", "idle receiver hour").
    pub per: Option<&'static str>,
    /// `auditlog`: audit events written per `per`.
    pub audit_events_per: Option<f64>,
    /// `auditlog`: bytes the audit tables' rows grew by per `per` (indexes left out).
    pub audit_bytes_per: Option<f64>,
    /// `auditlog`: bytes the audit tables occupy on disk, indexes included, grew by per `per` (by
    /// whole pages: coarse over a short run).
    pub audit_disk_bytes_per: Option<f64>,
    /// PostgreSQL: rows, statements, WAL bytes and table+index bytes per operation.
    pub footprint: Option<footprint::Footprint>,
    /// With `--baseline`: the same per pgbench script of the minimal rows.
    pub minimal_footprint: Option<footprint::Footprint>,
    /// `delivery` with `--rabbitmq`: RabbitMQ's messages per second, and ours / it.
    pub peer_per_second: Option<f64>,
    pub ratio_to_peer: Option<f64>,
    /// `delivery`: the mean encoded size of a pulled message (the peer's bodies are as large).
    pub message_bytes: Option<usize>,
}

impl Outcome {
    pub fn new(scenario: &str, clients: usize, operations: usize, seconds: f64) -> Self {
        Self {
            scenario: scenario.to_owned(),
            engine: "",
            clients,
            operations,
            seconds,
            per_second: if seconds > 0.0 {
                operations as f64 / seconds
            } else {
                0.0
            },
            latency_ms: None,
            create_latency_ms: None,
            errors: 0,
            calls_per_operation: None,
            server_peak_rss_mb: None,
            baseline_per_second: None,
            ratio_to_baseline: None,
            minimal_baseline_per_second: None,
            ratio_to_minimal: None,
            stored_referrals: None,
            per: None,
            audit_events_per: None,
            audit_bytes_per: None,
            audit_disk_bytes_per: None,
            footprint: None,
            minimal_footprint: None,
            peer_per_second: None,
            ratio_to_peer: None,
            message_bytes: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort();
        let at = |q: f64| {
            let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index].as_secs_f64() * 1000.0
        };
        Some(Self {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(BenchArgs::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The server to measure when `--server-binary` is not given: the `referral-exchange` that the same
/// `cargo build` put beside this binary.
fn default_server_binary() -> anyhow::Result<PathBuf> {
    let name = format!("referral-exchange{}", std::env::consts::EXE_SUFFIX);
    Ok(std::env::current_exe()?.with_file_name(name))
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    referral_exchange::tls::install_crypto_provider();
    let binary = match &args.server_binary {
        Some(path) => path.clone(),
        None => default_server_binary()?,
    };
    // Checked before a run, not after it: the baseline runs only once ours is done.
    let baseline = match (args.baseline, args.scenario.baseline()) {
        (false, _) => None,
        (true, None) => anyhow::bail!("--baseline is for the create and roundtrip scenarios"),
        (true, Some(_)) if args.database_url.is_none() => {
            anyhow::bail!("the pgbench baseline needs --database-url postgres://…")
        }
        (true, baseline) => baseline,
    };
    // `cargo run --bin referral-exchange-bench` builds the benchmark alone: say what is missing before
    // a database is made for a run that cannot start.
    anyhow::ensure!(
        args.server_binary.is_some() || binary.exists(),
        "no server binary at {}: build it beside the benchmark (cargo build --release) or name one \
         with --server-binary",
        binary.display()
    );
    let duration = Duration::from_secs(args.duration);
    let mut outcomes = Vec::new();
    let client_counts = if matches!(args.scenario, Scenario::Wakeup | Scenario::Datasize) {
        vec![1]
    } else {
        args.clients.clone()
    };
    for clients in client_counts {
        let dir = tempfile::tempdir()?;
        let db = BenchDatabase::create(args.database_url.as_deref(), dir.path()).await?;
        let engine = if db.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        // A server on the run's database, with the run's arguments and `extra` after them.
        let start_with = |name: &str, extra: &[&str]| {
            let mut server_args = args.server_args.clone();
            server_args.extend(extra.iter().map(|a| a.to_string()));
            ServerProcess::start(&binary, &dir.path().join(name), &db.url, &server_args)
        };
        let start = |name: &str| start_with(name, &[]);
        let result: anyhow::Result<Vec<Outcome>> = async {
            Ok(match args.scenario {
                Scenario::Create => {
                    with_server(&db, start("server")?, |s| {
                        scenarios::create(s, clients, duration, args.rate, args.edge)
                    })
                    .await?
                }
                Scenario::Roundtrip => {
                    with_server(&db, start("server")?, |s| {
                        scenarios::roundtrip(s, clients, duration)
                    })
                    .await?
                }
                Scenario::Limits => {
                    // The limits at the server's defaults (the run otherwise lifts them).
                    let server = start_with(
                        "server",
                        &[
                            "--org-requests-per-second",
                            "200",
                            "--org-burst",
                            "400",
                            "--org-concurrent-calls",
                            "64",
                            "--max-concurrent-calls",
                            "256",
                        ],
                    )?;
                    let outcomes =
                        scenarios::limits(server.target(), clients, duration, args.offered_rate)
                            .await?;
                    server.stop()?;
                    outcomes
                }
                Scenario::Read => {
                    with_server(&db, start("server")?, |s| {
                        scenarios::read(s, clients, duration)
                    })
                    .await?
                }
                Scenario::Audit => {
                    with_server(&db, start("server")?, |s| {
                        scenarios::audit(s, clients, duration)
                    })
                    .await?
                }
                Scenario::Transport => {
                    with_server(&db, start("server")?, |s| {
                        scenarios::transport(s, clients, duration)
                    })
                    .await?
                }
                Scenario::Pull => {
                    with_server(&db, start("server")?, |s| {
                        scenarios::pull(s, clients, args.messages)
                    })
                    .await?
                }
                Scenario::Wakeup => {
                    let writer = start("writer")?;
                    // On PostgreSQL the waiter uses a second process: the wake-up must cross processes.
                    let waiter = if db.is_postgres() {
                        Some(start("waiter")?)
                    } else {
                        None
                    };
                    let waiting = waiter.as_ref().unwrap_or(&writer).target();
                    let mut outcome =
                        scenarios::wakeup(writer.target(), waiting, args.samples).await?;
                    outcome.server_peak_rss_mb = writer.peak_rss_mb();
                    writer.stop()?;
                    if let Some(waiter) = waiter {
                        waiter.stop()?;
                    }
                    vec![outcome]
                }
                Scenario::Datasize => {
                    anyhow::ensure!(
                        db.is_postgres(),
                        "the data-size mode preloads with PostgreSQL's generate_series"
                    );
                    datasize::run(&db.url, &args.sizes, |name| start(name)).await?
                }
                Scenario::Auditlog => {
                    let server = start("server")?;
                    let mut outcomes = auditlog::run(
                        server.target(),
                        &db.url,
                        db.is_postgres(),
                        args.lifecycles,
                        clients,
                        args.wait_seconds,
                        duration,
                    )
                    .await?;
                    for outcome in &mut outcomes {
                        outcome.server_peak_rss_mb = server.peak_rss_mb();
                    }
                    server.stop()?;
                    outcomes
                }
                Scenario::Delivery => {
                    let mut outcomes = with_server(&db, start("server")?, |s| {
                        delivery::exchange(s, clients, duration)
                    })
                    .await?;
                    if let Some(url) = &args.rabbitmq {
                        let bytes = outcomes[0]
                            .message_bytes
                            .context("delivery measures its messages' size")?;
                        let peer = delivery::rabbitmq(url, clients, duration, bytes).await?;
                        outcomes[0].peer_per_second = Some(peer.per_second);
                        outcomes[0].ratio_to_peer = Some(outcomes[0].per_second / peer.per_second);
                        outcomes.push(peer);
                    }
                    outcomes
                }
                Scenario::Statistics => {
                    statistics::run(&db.url, db.is_postgres(), &args.sizes, |name| {
                        start_with(name, &statistics::SERVER_ARGS)
                    })
                    .await?
                }
            })
        }
        .await;
        // pgbench runs after the server has stopped, on the database our run left.
        let result = match (result, baseline) {
            (Ok(outcomes), Some(baseline)) => {
                beside_baseline(outcomes, &db.url, baseline, clients, duration).await
            }
            (result, _) => result,
        };
        db.drop_database().await?;
        for mut outcome in result? {
            // A peer's outcome names itself (`rabbitmq`).
            if outcome.engine.is_empty() {
                outcome.engine = engine;
            }
            print_row(&outcome);
            outcomes.push(outcome);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&outcomes)?)?;
    }
    Ok(())
}

/// Runs pgbench's `baseline` and sets each outcome against it.
async fn beside_baseline(
    mut outcomes: Vec<Outcome>,
    url: &str,
    baseline: baseline::Baseline,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Vec<Outcome>> {
    let server_rows =
        baseline::run(url, baseline, baseline::Rows::Server, clients, duration).await?;
    let minimal = baseline::run(url, baseline, baseline::Rows::Minimal, clients, duration).await?;
    for outcome in &mut outcomes {
        outcome.baseline_per_second = Some(server_rows.per_second);
        outcome.ratio_to_baseline = Some(outcome.per_second / server_rows.per_second);
        outcome.minimal_baseline_per_second = Some(minimal.per_second);
        outcome.ratio_to_minimal = Some(outcome.per_second / minimal.per_second);
        outcome.minimal_footprint = Some(minimal.footprint.clone());
    }
    Ok(outcomes)
}

/// Runs `scenario` against `server`, then stops it; on PostgreSQL with what the run wrote per
/// operation ([`footprint`]).
async fn with_server<F, Fut>(
    db: &BenchDatabase,
    server: ServerProcess,
    scenario: F,
) -> anyhow::Result<Vec<Outcome>>
where
    F: FnOnce(server::Target) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Outcome>>,
{
    let before = if db.is_postgres() {
        Some(footprint::take(&db.url).await?)
    } else {
        None
    };
    let mut outcome = scenario(server.target()).await?;
    outcome.server_peak_rss_mb = server.peak_rss_mb();
    server.stop()?;
    if let Some(before) = before {
        outcome.footprint = Some(footprint::since(&db.url, &before, outcome.operations).await?);
    }
    Ok(vec![outcome])
}

fn print_row(o: &Outcome) {
    let latency = |p: &Option<Percentiles>| {
        p.as_ref().map_or("-".into(), |p| {
            format!(
                "p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms",
                p.p50, p.p99, p.p999
            )
        })
    };
    // Modes that time single operations (datasize) have no run length to divide by.
    let rate = if o.seconds > 0.0 {
        format!("in {:>5.1} s = {:>8.1}/s", o.seconds, o.per_second)
    } else {
        "timed one by one".to_owned()
    };
    let mut line = format!(
        "{:<9} {:<8} clients {:>3}  {:>7} ops {rate}  errors {}  latency {}",
        o.scenario,
        o.engine,
        o.clients,
        o.operations,
        o.errors,
        latency(&o.latency_ms),
    );
    if o.create_latency_ms.is_some() {
        line.push_str(&format!("  create {}", latency(&o.create_latency_ms)));
    }
    if let Some(calls) = o.calls_per_operation {
        line.push_str(&format!("  calls/op {calls:.2}"));
    }
    if let (Some(per), Some(events), Some(bytes), Some(disk)) = (
        o.per,
        o.audit_events_per,
        o.audit_bytes_per,
        o.audit_disk_bytes_per,
    ) {
        line.push_str(&format!(
            "  per {per}: {events:.2} audit events, {bytes:.0} bytes of audit rows \
             ({disk:.0} on disk with indexes)"
        ));
    }
    let footprint = |f: &footprint::Footprint| {
        let statements = f
            .statements
            .map_or("statements -".to_owned(), |n| format!("{n:.1} statements"));
        format!(
            "{:.1} rows, {statements}, {:.0} WAL bytes, {:.0} table+index bytes",
            f.rows, f.wal_bytes, f.table_and_index_bytes
        )
    };
    if let Some(f) = &o.footprint {
        line.push_str(&format!("  per op: {}", footprint(f)));
    }
    if let Some(stored) = o.stored_referrals {
        line.push_str(&format!("  stored {stored}"));
    }
    if let Some(rss) = o.server_peak_rss_mb {
        line.push_str(&format!("  server peak RSS {rss:.1} MB"));
    }
    if let (Some(tps), Some(ratio)) = (o.baseline_per_second, o.ratio_to_baseline) {
        line.push_str(&format!("  pgbench {tps:.1}/s  ours/pgbench {ratio:.2}"));
    }
    if let (Some(tps), Some(ratio)) = (o.minimal_baseline_per_second, o.ratio_to_minimal) {
        line.push_str(&format!(
            "  pgbench minimal rows {tps:.1}/s  ours/minimal {ratio:.2}"
        ));
    }
    if let Some(f) = &o.minimal_footprint {
        line.push_str(&format!("  minimal per script: {}", footprint(f)));
    }
    if let Some(bytes) = o.message_bytes {
        line.push_str(&format!("  {bytes} bytes per message"));
    }
    if let (Some(rate), Some(ratio)) = (o.peer_per_second, o.ratio_to_peer) {
        line.push_str(&format!("  RabbitMQ {rate:.1}/s  ours/RabbitMQ {ratio:.2}"));
    }
    println!("{line}");
    for (name, f) in [("ours", &o.footprint), ("minimal", &o.minimal_footprint)] {
        if let Some(f) = f {
            let tables: Vec<String> = f
                .tables
                .iter()
                .map(|(table, [ins, upd, del])| format!("{table} +{ins:.2}/~{upd:.2}/-{del:.2}"))
                .collect();
            println!(
                "    rows per op ({name}; inserted/updated/deleted): {}",
                tables.join(", ")
            );
        }
    }
}

//! `referral-exchange bench`: drives a real server process over mutual TLS and reports what it
//! measured. Not a test: run it on purpose, read `bench/README.md` for how to read the figures.
//!
//! Scenarios:
//! - `pull`: one mailbox filled with routed referrals, drained by N concurrent pullers that pull and
//!   acknowledge (each acknowledgement takes delivery of a referral): messages per second.
//! - `wakeup`: a long-poll waits on one server while a referral is created through another (two
//!   server processes on PostgreSQL, so the wake-up crosses processes; one on SQLite): the time from
//!   sending the create to the waiting pull's answer, and the create's own latency for comparison.

pub mod server;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use self::server::{BenchDatabase, ServerProcess, User};
use crate::proto::v1::{
    self as pb, mailbox_service_client::MailboxServiceClient,
    referral_service_client::ReferralServiceClient,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Pull,
    Wakeup,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// A PostgreSQL URL whose server may create a fresh database for the run (dropped afterwards).
    /// Default: a fresh SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Concurrent clients; several comma-separated values run one after another in one invocation.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// `pull`: messages in the mailbox per run.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// `wakeup`: how many wake-ups to time.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// The server binary (default: this one).
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Outcome {
    scenario: Scenario,
    engine: &'static str,
    clients: usize,
    operations: usize,
    seconds: f64,
    per_second: f64,
    latency_ms: Option<Percentiles>,
    /// `wakeup`: the create call alone, to set the wake-up latency against.
    create_latency_ms: Option<Percentiles>,
    errors: usize,
    server_peak_rss_mb: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
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

type Referrals = ReferralServiceClient<InterceptedService<Channel, User>>;
type Mailbox = MailboxServiceClient<InterceptedService<Channel, User>>;

fn user(name: &str) -> anyhow::Result<User> {
    Ok(User(name.parse().context("user id")?))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let binary = match &args.server_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let mut outcomes = Vec::new();
    for &clients in &args.clients {
        let dir = tempfile::tempdir()?;
        let db = BenchDatabase::create(args.database_url.as_deref(), dir.path()).await?;
        let engine = if db.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        let result = match args.scenario {
            Scenario::Pull => pull(&binary, dir.path(), &db, clients, args.messages).await,
            Scenario::Wakeup => wakeup(&binary, dir.path(), &db, args.samples).await,
        };
        db.drop_database().await?;
        let mut outcome = result?;
        outcome.engine = engine;
        print_row(&outcome);
        outcomes.push(outcome);
        if args.scenario == Scenario::Wakeup {
            break;
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&outcomes)?)?;
    }
    Ok(())
}

fn print_row(o: &Outcome) {
    let latency = |p: &Option<Percentiles>| {
        p.as_ref().map_or("-".into(), |p| {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
                p.p50, p.p99, p.p999
            )
        })
    };
    println!(
        "{:?} {} clients={} ops={} in {:.2} s = {:.0}/s, errors={}, latency {}, create {}, server peak RSS {}",
        o.scenario,
        o.engine,
        o.clients,
        o.operations,
        o.seconds,
        o.per_second,
        o.errors,
        latency(&o.latency_ms),
        latency(&o.create_latency_ms),
        o.server_peak_rss_mb
            .map_or("-".into(), |mb| format!("{mb:.1} MB")),
    );
}

fn notification(code: &str) -> pb::CreateReferralRequest {
    pb::CreateReferralRequest {
        referral: Some(pb::Referral {
            kind: pb::referral::Kind::NeedNotificationWithoutConsent as i32,
            subject: Some(pb::Subject {
                personal_identity_code: code.into(),
                ..Default::default()
            }),
            home_municipality_code: "179".into(),
            reasons: vec![pb::referral::Reason::Health as i32],
            reason_text: "Benchmark notification".into(),
            deadline_group: pb::referral::DeadlineGroup::NoStatutoryGroup as i32,
            basis: Some(pb::referral::Basis::StatutoryGround(
                pb::referral::StatutoryGround::UnableToCareForSelf as i32,
            )),
            ..Default::default()
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    }
}

async fn referral_client(
    server: &ServerProcess,
    org: &str,
    name: &str,
) -> anyhow::Result<Referrals> {
    Ok(ReferralServiceClient::with_interceptor(
        server.channel(org).await?,
        user(name)?,
    ))
}

async fn mailbox_client(server: &ServerProcess, org: &str, name: &str) -> anyhow::Result<Mailbox> {
    Ok(MailboxServiceClient::with_interceptor(
        server.channel(org).await?,
        user(name)?,
    ))
}

/// Fills hva-15's mailbox with `count` routed referrals, eight writers at a time.
async fn fill(server: &ServerProcess, count: usize) -> anyhow::Result<()> {
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut kela = referral_client(server, "kela", &format!("bench-{w}")).await?;
        let share = count / 8 + usize::from(w < count % 8);
        writers.push(tokio::spawn(async move {
            for _ in 0..share {
                kela.create_referral(notification("131052-308T")).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    Ok(())
}

async fn pull(
    binary: &std::path::Path,
    dir: &std::path::Path,
    db: &BenchDatabase,
    pullers: usize,
    messages: usize,
) -> anyhow::Result<Outcome> {
    let server = ServerProcess::start(binary, &dir.join("server"), &db.url)?;
    fill(&server, messages).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..pullers {
        let mut mailbox = mailbox_client(&server, "hva-15", &format!("worker-{p}")).await?;
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut errors) = (0usize, 0usize);
            loop {
                let request = pb::PullMessagesRequest {
                    max_messages: 10,
                    lease_duration: Some(pbjson_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    wait_duration: None,
                };
                let messages = match mailbox.pull_messages(request).await {
                    Ok(response) => response.into_inner().messages,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                if messages.is_empty() {
                    return (acked, errors);
                }
                let ack_ids = messages.into_iter().map(|m| m.ack_id).collect();
                match mailbox
                    .acknowledge_messages(pb::AcknowledgeMessagesRequest { ack_ids })
                    .await
                {
                    Ok(response) => {
                        acked += response
                            .into_inner()
                            .results
                            .iter()
                            .filter(|r| r.applied)
                            .count()
                    }
                    Err(_) => errors += 1,
                }
            }
        }));
    }
    let (mut acked, mut errors) = (0, 0);
    for task in tasks {
        let (a, e) = task.await?;
        acked += a;
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    if acked != messages {
        anyhow::bail!("{acked} of {messages} messages were acknowledged exactly once");
    }
    let rss = server.peak_rss();
    server.stop()?;
    Ok(Outcome {
        scenario: Scenario::Pull,
        engine: "",
        clients: pullers,
        operations: acked,
        seconds,
        per_second: acked as f64 / seconds,
        latency_ms: None,
        create_latency_ms: None,
        errors,
        server_peak_rss_mb: rss.map(|b| b as f64 / 1_048_576.0),
    })
}

async fn wakeup(
    binary: &std::path::Path,
    dir: &std::path::Path,
    db: &BenchDatabase,
    samples: usize,
) -> anyhow::Result<Outcome> {
    let writer_server = ServerProcess::start(binary, &dir.join("writer"), &db.url)?;
    // On PostgreSQL the waiter uses a second process: the wake-up must cross processes.
    let waiter_server = if db.is_postgres() {
        Some(ServerProcess::start(binary, &dir.join("waiter"), &db.url)?)
    } else {
        None
    };
    let mut kela = referral_client(&writer_server, "kela", "bench-writer").await?;
    let mut mailbox = mailbox_client(
        waiter_server.as_ref().unwrap_or(&writer_server),
        "hva-15",
        "bench-waiter",
    )
    .await?;
    let (mut wake, mut create, mut errors) = (Vec::new(), Vec::new(), 0);
    let started = Instant::now();
    for _ in 0..samples {
        let mut waiting_mailbox = mailbox.clone();
        let waiter = tokio::spawn(async move {
            let request = pb::PullMessagesRequest {
                max_messages: 1,
                lease_duration: Some(pbjson_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                wait_duration: Some(pbjson_types::Duration {
                    seconds: 20,
                    nanos: 0,
                }),
            };
            let response = waiting_mailbox.pull_messages(request).await;
            (Instant::now(), response)
        });
        // Let the pull reach the server and start waiting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        if kela
            .create_referral(notification("131052-308T"))
            .await
            .is_err()
        {
            errors += 1;
        }
        create.push(sent.elapsed());
        let (woke, response) = waiter.await?;
        match response.map(|r| r.into_inner().messages) {
            Ok(messages) if messages.len() == 1 => {
                wake.push(woke.duration_since(sent));
                let ack_ids = messages.into_iter().map(|m| m.ack_id).collect();
                mailbox
                    .acknowledge_messages(pb::AcknowledgeMessagesRequest { ack_ids })
                    .await?;
            }
            _ => errors += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rss = writer_server.peak_rss();
    writer_server.stop()?;
    if let Some(server) = waiter_server {
        server.stop()?;
    }
    Ok(Outcome {
        scenario: Scenario::Wakeup,
        engine: "",
        clients: 1,
        operations: wake.len(),
        seconds,
        per_second: wake.len() as f64 / seconds,
        latency_ms: Percentiles::of(&mut wake),
        create_latency_ms: Percentiles::of(&mut create),
        errors,
        server_peak_rss_mb: rss.map(|b| b as f64 / 1_048_576.0),
    })
}

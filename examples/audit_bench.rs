//! Measures the audit log on PostgreSQL: (1) the delay from an event's commit to its inclusion in a
//! signed checkpoint, under a steady write load through the real gRPC API, and (2) how many events
//! per second the sequencer integrates from a backlog.
//!
//!     cargo run --release --example audit_bench -- \
//!         --admin-url postgres://postgres@127.0.0.1:5432/postgres --rate 200 --seconds 60
//!
//! It creates a database of its own (dropped at the end), a development PKI in a temporary
//! directory, and a server on 127.0.0.1:0; all traffic stays on this machine and stops by itself.
//! Not a test: `cargo test` builds it but never runs it.
//!
//! Delay: an event's `time` is taken just before its transaction commits, a checkpoint's `time`
//! just before the sequencer's transaction commits; the delay of an event is the time of the first
//! checkpoint whose tree contains its leaf minus the event's time.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use referral_exchange::{
    access::USER_ID_HEADER,
    audit::Pseudonymizer,
    config::TlsFiles,
    exchange::Exchange,
    mailbox::{DeliveryPolicy, MailboxSignals},
    proto::v1::{self as pb, consent_service_client::ConsentServiceClient},
    server, store, tls,
};
use sqlx::Connection;
use tonic::{Request, Status, transport::Endpoint};

#[derive(Debug, Parser)]
struct Args {
    /// A PostgreSQL database to connect to for creating (and dropping) the benchmark's own.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,
    /// Calls per second (each one audit event), spread over the writers.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// How long the steady load runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    writers: u64,
    /// The sequencer's interval.
    #[arg(long, default_value_t = 1000)]
    sequencer_interval_ms: u64,
    /// Events in the backlog for the integration-rate measurement.
    #[arg(long, default_value_t = 200_000)]
    backlog: i64,
    /// Events per sequencer round in the backlog measurement.
    #[arg(long, default_value_t = 10_000)]
    batch: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    referral_exchange::tls::install_crypto_provider();
    let name = format!("rx_bench_{}", chrono::Utc::now().timestamp());
    let mut admin = sqlx::PgConnection::connect(&args.admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let url = match args.admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => anyhow::bail!("the admin URL names no database"),
    };
    let result = run(&args, &url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    result
}

async fn run(args: &Args, url: &str) -> anyhow::Result<()> {
    let data_keys = Arc::new(referral_exchange::sealing::DataKeys::generate());
    let pki = tempfile::tempdir()?;
    tls::write_dev_pki(pki.path(), &["kela"])?;
    let layout = tls::PkiLayout::new(pki.path());
    let mut settings = server::Settings::new(
        "127.0.0.1:0".parse()?,
        url.to_owned(),
        TlsFiles {
            cert: layout.server_cert(),
            key: layout.server_key(),
            client_ca: layout.ca_cert(),
            crls: Vec::new(),
        },
        vec![7; 32],
        data_keys.clone(),
    );
    settings.audit_log.sequencer_interval = Duration::from_millis(args.sequencer_interval_ms);
    let signer = settings.audit_log.signer.clone();
    let running = server::start(settings).await?;
    let addr = running.addr;

    // --- 1. steady load through the API
    let dir = layout.client_dir("kela");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))?
        .tls_config(tls::client_tls_config(
            &dir.join("ca.pem"),
            &dir.join("cert.pem"),
            &dir.join("key.pem"),
            "localhost",
        )?)?
        .connect()
        .await?;
    let per_writer = Duration::from_secs_f64(args.writers as f64 / args.rate as f64);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let writers = args.writers;
    for w in 0..writers {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = ConsentServiceClient::with_interceptor(channel, user);
            let mut tick = tokio::time::interval(per_writer);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Spread the writers' ticks over one period.
            tokio::time::sleep(per_writer.mul_f64(w as f64 / writers as f64)).await;
            let mut done = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                client.record_consent(consent()).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut calls = 0;
    for t in tasks {
        calls += t.await??;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    // Let the sequencer catch up.
    let store = running.exchange.store().clone();
    let mut conn = sqlx::PgConnection::connect(url).await?;
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_pending")
            .fetch_one(&mut conn)
            .await?;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delays: Vec<f64> = sqlx::query_scalar(
        "SELECT CAST(EXTRACT(EPOCH FROM (c.time - e.time)) AS DOUBLE PRECISION) \
         FROM audit_leaves l JOIN audit_events e ON e.sequence = l.event_sequence \
         CROSS JOIN LATERAL (SELECT time FROM audit_checkpoints c WHERE c.tree_size > l.leaf_index \
                             ORDER BY c.tree_size LIMIT 1) c \
         WHERE e.method LIKE '%/RecordConsent' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    let checkpoints: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints")
        .fetch_one(&mut conn)
        .await?;
    let pct = |p: f64| -> f64 {
        let i = ((delays.len() as f64 - 1.0) * p).round() as usize;
        delays.get(i).copied().unwrap_or(f64::NAN) * 1000.0
    };
    println!(
        "steady load: {calls} RecordConsent calls in {load_seconds:.1} s = {:.0} events/s, {} writers, sequencer every {} ms, {checkpoints} checkpoints",
        calls as f64 / load_seconds,
        args.writers,
        args.sequencer_interval_ms
    );
    println!(
        "commit -> signed checkpoint delay over {} events: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        delays.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    running.shutdown().await?;
    drop(store);

    // --- 2. integration rate from a backlog, sequencer alone on the database
    sqlx::query(
        "INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, \
         status_code, correlation_id, disclosures) \
         SELECT now(), 'kela', 'handler-' || (g % 50), '/referral_exchange.v1.ReferralService/GetReferral', \
         '[\"referrals/' || gen_random_uuid() || '\"]', '[\"' || md5(g::text) || md5(g::text) || '\"]', 0, '', '[]' \
         FROM generate_series(1, $1) g",
    )
    .bind(args.backlog)
    .execute(&mut conn)
    .await?;
    let store = store::connect(
        url,
        store::Schema::RequireCurrent,
        Arc::new(MailboxSignals::default()),
        Some(data_keys.clone()),
    )
    .await?;
    let exchange = Exchange::new(
        store.clone(),
        Arc::new(referral_exchange::clock::SystemClock),
        Pseudonymizer::new(vec![7; 32])?,
        DeliveryPolicy::default(),
        referral_exchange::domain::referral::DeadlinePolicy::default(),
    )
    .with_log_signer(signer);
    let started = Instant::now();
    let mut integrated = 0usize;
    let mut rounds = 0;
    while let Some(round) = exchange.integrate_audit_events(args.batch).await? {
        integrated += round.integrated;
        rounds += 1;
        if round.integrated == 0 {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "integration: {integrated} backlog events in {rounds} rounds of up to {} in {seconds:.2} s = {:.0} events/s",
        args.batch,
        integrated as f64 / seconds
    );
    store.close().await;
    Ok(())
}

fn user(mut request: Request<()>) -> Result<Request<()>, Status> {
    request.metadata_mut().insert(
        USER_ID_HEADER,
        tonic::metadata::MetadataValue::from_static("bench-1"),
    );
    Ok(request)
}

fn consent() -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        consent: Some(pb::Consent {
            subject: Some(pb::Subject {
                personal_identity_code: "131052-308T".into(),
                ..Default::default()
            }),
            purpose: pb::consent::Purpose::SocialWelfareReferral as i32,
            recipients: vec!["organizations/hva-15".into()],
            form: pb::consent::Form::Oral as i32,
            given_by: pb::consent::GivenBy::Subject as i32,
            ..Default::default()
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    }
}

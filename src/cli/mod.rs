//! The command line: `serve`, `dev-pki`, `client` (one subcommand per API method), `audit`
//! (the auditor's offline verification) and `keys` (rewrapping after a data key rotation).

pub mod audit;
pub mod client;
pub mod keys;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::{config::ServeArgs, server, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "referral-exchange",
    version,
    about = "Closed-loop referrals from Kela to social welfare"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: gRPC, and the HTTP face (REST/JSON) beside it.
    Serve(Box<ServeArgs>),
    /// Write a development PKI: a CA, a server certificate for localhost and client certificates.
    DevPki(DevPkiArgs),
    /// Bring the database schema up to date, then exit (for running migrations as their own step).
    Migrate(crate::config::MigrateArgs),
    /// Call the API as Kela, a receiver or an auditor; prints JSON.
    Client(Box<client::ClientArgs>),
    /// The auditor's offline tools: verify an export of the audit log against signed checkpoints.
    Audit(audit::AuditArgs),
    /// Operator tasks on the keys data is written with: `keys rewrap` after a data key rotation.
    Keys(keys::KeysArgs),
}

#[derive(Debug, Args)]
struct DevPkiArgs {
    /// Directory to write to; an existing CA there is reused.
    #[arg(long, default_value = "var/pki")]
    dir: PathBuf,
    /// Organisation ids to issue client certificates for (e.g. kela, hva-15, auditor-dpo).
    #[arg(long = "org", required_unless_present_any = ["revoke", "crl"])]
    orgs: Vec<String>,
    /// Also issue a personal certificate `ORG/USER` (the person's id beside the organisation's,
    /// for people rather than systems, e.g. the console); repeatable.
    #[arg(long = "person", value_name = "ORG/USER")]
    persons: Vec<String>,
    /// Write `DIR/crl.pem`, a revocation list signed by the CA, revoking the client certificates
    /// of these organisations (repeatable), for `serve --client-crl`.
    #[arg(long = "revoke", value_name = "ORG")]
    revoke: Vec<String>,
    /// Write `DIR/crl.pem` even if it revokes no one (`--revoke` implies it).
    #[arg(long)]
    crl: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Client(args) => client::run(*args).await,
        Command::Migrate(args) => {
            let _telemetry = telemetry::init(crate::config::LogFormat::Text);
            let signals = std::sync::Arc::new(crate::mailbox::MailboxSignals::default());
            let store = crate::store::connect(
                &args.database_url(),
                crate::store::Schema::Migrate,
                signals,
                None,
            )
            .await?;
            store.close().await;
            tracing::info!("the database schema is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => audit::run(args).await,
        Command::Keys(args) => {
            let _telemetry = telemetry::init(crate::config::LogFormat::Text);
            keys::run(args).await
        }
        Command::DevPki(args) => {
            let _telemetry = telemetry::init(crate::config::LogFormat::Text);
            let orgs: Vec<&str> = args.orgs.iter().map(String::as_str).collect();
            let report = crate::tls::write_dev_pki(&args.dir, &orgs)?;
            let crl = if args.crl || !args.revoke.is_empty() {
                let revoke: Vec<&str> = args.revoke.iter().map(String::as_str).collect();
                Some(crate::tls::write_dev_crl(&args.dir, &revoke)?)
            } else {
                None
            };
            let mut persons = Vec::new();
            for person in &args.persons {
                let (org, user) = person
                    .split_once('/')
                    .ok_or_else(|| anyhow::anyhow!("--person {person}: expected ORG/USER"))?;
                persons.push(crate::tls::write_dev_personal_certificate(
                    &args.dir, org, user,
                )?);
            }
            let out = serde_json::json!({
                "dir": args.dir,
                "createdCa": report.created_ca,
                "issued": report.issued,
                "personal": persons,
                "crl": crl,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let telemetry = telemetry::init(args.log_format);
    let tls = args.tls_files()?;
    let database_url = args.database_url();
    // Before the store starts its threads: they inherit the affinity of the thread that starts them.
    if args.cpu_affinity.one_cpu_for(&database_url) {
        match crate::affinity::keep_on_one_cpu() {
            Ok(cpu) => tracing::info!(cpu, "keeping the server on one CPU (--cpu-affinity)"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "could not keep the server on one CPU; running on all")
            }
        }
    }
    let mut settings = server::Settings::new(
        args.listen,
        database_url,
        tls,
        args.pseudonym_key()?,
        std::sync::Arc::new(args.data_keys.keys(&args.data_dir)?),
    );
    settings.data_key_file = Some(args.data_keys.path(&args.data_dir));
    settings.delivery.max_delivery_attempts = args.max_delivery_attempts;
    settings.delivery.history_retention = chrono::Duration::days(args.message_retention_days);
    settings.deadlines.receipt_working_days = args.receipt_deadline_working_days;
    settings.min_cell_size = args.min_cell_size;
    settings.limits = crate::limits::LimitSettings {
        requests_per_second: args.org_requests_per_second,
        burst: args.org_burst,
        concurrent: args.org_concurrent_calls,
        global_concurrent: args.max_concurrent_calls,
    };
    settings.content_retention = chrono::Duration::days(args.content_retention_days);
    settings.background.interval = std::time::Duration::from_secs(args.background_interval_seconds);
    settings.background.takeover = std::time::Duration::from_secs(args.takeover_seconds);
    settings.health_listen = args.health_listen;
    settings.http = args.http_listen.0.map(|listen| server::HttpSettings {
        listen,
        xroad_security_server_certs: args.xroad_security_server_certs.clone(),
        xroad_client_map: args.xroad_client_map.clone(),
        limits: crate::http::Limits {
            max_connection_age: std::time::Duration::from_secs(args.max_connection_age_seconds),
            ..crate::http::Limits::default()
        },
    });
    settings.max_connection_age = std::time::Duration::from_secs(args.max_connection_age_seconds);
    settings.delivery.max_stream_age = settings.max_connection_age;
    settings.previous_pseudonym_keys = args.previous_pseudonym_keys()?;
    settings.pseudonym_key_file = Some(args.pseudonym_key_path());
    settings.drain = std::time::Duration::from_secs(args.drain_seconds);
    settings.group_commit_max = usize::try_from(args.group_commit_max).unwrap_or(1);
    settings.group_commit_lanes = usize::try_from(args.group_commit_lanes).unwrap_or(1);
    if args.no_migrate {
        settings.schema = crate::store::Schema::RequireCurrent;
    }
    settings.audit_log.signer = args.audit_signer()?;
    settings.audit_log.sequencer_interval =
        std::time::Duration::from_millis(args.audit_sequencer_interval_ms);
    let running = server::start(settings).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing calls in flight");
    running.shutdown().await?;
    tracing::info!("stopped");
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (how orchestrators stop a process) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

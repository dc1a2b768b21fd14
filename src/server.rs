//! Assembling and running the gRPC server. Tests start it exactly as `serve` does, on port 0.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::{
    audit::{Pseudonymizer, note::NoteSigner},
    background::{self, Job, Schedule},
    clock::{Clock, SystemClock},
    config::TlsFiles,
    exchange::{
        Exchange,
        audit_log::{AuditSequencer, ConsentExpiry, DEFAULT_SEQUENCER_BATCH},
    },
    grpc::{
        audit::AuditApi, consents::ConsentApi, directory::DirectoryApi, mailbox::MailboxApi,
        referrals::ReferralApi,
    },
    mailbox::{LeaseLimits, MailboxSignals},
    proto::v1 as pb,
    store,
};

/// Everything a server needs, already resolved (no defaults are filled in here).
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub tls: TlsFiles,
    pub pseudonym_key: Vec<u8>,
    pub clock: Arc<dyn Clock>,
    pub leases: LeaseLimits,
    /// How often deployment-wide background tasks run, and how fast a replica takes one over.
    pub background: Schedule,
    pub audit_log: AuditLogSettings,
}

/// The tamper-evident audit log.
#[derive(Debug, Clone)]
pub struct AuditLogSettings {
    /// Signs checkpoints; its key name is the log's origin.
    pub signer: NoteSigner,
    /// How often the sequencer integrates new events and signs a checkpoint: the longest an event
    /// waits for inclusion in a signed checkpoint, plus one round's work.
    pub sequencer_interval: Duration,
    /// The most events one sequencer round integrates.
    pub sequencer_batch: i64,
}

impl AuditLogSettings {
    /// With a signing key made up for this process only: for tests and embedding. `serve` always
    /// names a key (see `config`), since checkpoints signed with a lost key prove nothing.
    pub fn ephemeral() -> Self {
        Self {
            signer: NoteSigner::generate(crate::config::DEFAULT_AUDIT_LOG_ORIGIN)
                .unwrap_or_else(|_| unreachable!("the default origin is a valid key name")),
            sequencer_interval: Duration::from_secs(1),
            sequencer_batch: DEFAULT_SEQUENCER_BATCH,
        }
    }
}

impl Settings {
    pub fn new(
        listen: SocketAddr,
        database_url: String,
        tls: TlsFiles,
        pseudonym_key: Vec<u8>,
    ) -> Self {
        Self {
            listen,
            database_url,
            tls,
            pseudonym_key,
            clock: Arc::new(SystemClock),
            leases: LeaseLimits::default(),
            background: Schedule {
                interval: Duration::from_secs(5),
                takeover: Duration::from_secs(10),
            },
            audit_log: AuditLogSettings::ephemeral(),
        }
    }
}

/// A server accepting calls in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub exchange: Arc<Exchange>,
    health: tonic_health::server::HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_background: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
}

/// Opens the database (migrating it), binds `settings.listen` and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<RunningServer> {
    crate::tls::install_crypto_provider();
    let tls = crate::tls::server_tls_config(
        &settings.tls.cert,
        &settings.tls.key,
        &settings.tls.client_ca,
    )?;
    let signals = Arc::new(MailboxSignals::default());
    let store = store::connect(&settings.database_url, true, signals)
        .await
        .context("opening the database")?;
    let audit_log = settings.audit_log;
    let exchange = Arc::new(
        Exchange::new(
            store,
            settings.clock,
            Pseudonymizer::new(settings.pseudonym_key)?,
            settings.leases,
        )
        .with_log_signer(audit_log.signer.clone()),
    );
    tracing::info!(
        verifier_key = %audit_log.signer.verifier(),
        "audit log checkpoints are signed by this key; give it to auditors"
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::referral_service_server::ReferralServiceServer<ReferralApi>>()
        .await;
    health
        .set_serving::<pb::consent_service_server::ConsentServiceServer<ConsentApi>>()
        .await;
    health
        .set_serving::<pb::mailbox_service_server::MailboxServiceServer<MailboxApi>>()
        .await;
    health
        .set_serving::<pb::audit_service_server::AuditServiceServer<AuditApi>>()
        .await;
    health
        .set_serving::<pb::directory_service_server::DirectoryServiceServer<DirectoryApi>>()
        .await;

    // Both reflection versions: the grpcurl most people have speaks only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ReferralApi::new(exchange.clone()))
        .add_service(ConsentApi::new(exchange.clone()))
        .add_service(MailboxApi::new(exchange.clone()))
        .add_service(AuditApi::new(exchange.clone()))
        .add_service(DirectoryApi::new(exchange.clone()));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            let _ = shutdown_rx.await;
        },
    ));
    tracing::info!(%addr, engine = ?exchange.store().engine(), "serving");

    let (stop_background, stopped) = watch::channel(false);
    let background = background_jobs(&exchange, &audit_log)
        .into_iter()
        .map(|job| {
            let schedule = job.schedule(settings.background);
            background::spawn(exchange.store().clone(), job, schedule, stopped.clone())
        })
        .collect();
    Ok(RunningServer {
        addr,
        exchange,
        health,
        shutdown: Some(shutdown),
        task,
        stop_background,
        background,
    })
}

/// The deployment-wide tasks (see [`background`]); each runs on one replica at a time.
fn background_jobs(exchange: &Arc<Exchange>, audit_log: &AuditLogSettings) -> Vec<Arc<dyn Job>> {
    vec![
        Arc::new(AuditSequencer {
            exchange: exchange.clone(),
            batch: audit_log.sequencer_batch,
            interval: Some(audit_log.sequencer_interval),
        }),
        Arc::new(ConsentExpiry {
            exchange: exchange.clone(),
        }),
    ]
}

impl RunningServer {
    /// Stops accepting calls, lets calls in flight finish, then closes the database.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.health
            .set_not_serving::<pb::referral_service_server::ReferralServiceServer<ReferralApi>>()
            .await;
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.task).await.context("server task")??;
        let _ = self.stop_background.send(true);
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        self.exchange.store().close().await;
        Ok(())
    }
}

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
    audit::Pseudonymizer,
    background::{self, Job, Schedule},
    clock::{Clock, SystemClock},
    config::TlsFiles,
    domain::referral::DeadlinePolicy,
    exchange::Exchange,
    exchange::deadlines::DeadlineWatch,
    grpc::{
        audit::AuditApi, consents::ConsentApi, directory::DirectoryApi, mailbox::MailboxApi,
        referrals::ReferralApi,
    },
    mailbox::sweeper::MailboxSweeper,
    mailbox::{DeliveryPolicy, MailboxSignals},
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
    pub delivery: DeliveryPolicy,
    pub deadlines: DeadlinePolicy,
    /// How often deployment-wide background tasks run, and how fast a replica takes one over.
    pub background: Schedule,
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
            delivery: DeliveryPolicy::default(),
            deadlines: DeadlinePolicy::default(),
            background: Schedule {
                interval: Duration::from_secs(5),
                takeover: Duration::from_secs(10),
            },
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
    let exchange = Arc::new(Exchange::new(
        store,
        settings.clock,
        Pseudonymizer::new(settings.pseudonym_key)?,
        settings.delivery,
        settings.deadlines,
    ));

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
    let background = background_jobs(&exchange)
        .into_iter()
        .map(|job| {
            background::spawn(
                exchange.store().clone(),
                job,
                settings.background,
                stopped.clone(),
            )
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
fn background_jobs(exchange: &Arc<Exchange>) -> Vec<Arc<dyn Job>> {
    vec![
        Arc::new(DeadlineWatch(exchange.clone())),
        Arc::new(MailboxSweeper(exchange.clone())),
    ]
}

impl RunningServer {
    /// Stops accepting calls, lets calls in flight finish, then closes the database.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        // Long-polls answer (empty) and streams end, so that calls in flight can finish promptly.
        self.exchange.begin_shutdown();
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

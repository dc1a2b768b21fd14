//! Assembling and running the gRPC server. Tests start it exactly as `serve` does, on port 0.
//!
//! Shutdown, in order: health turns NOT_SERVING (so load balancers and Kubernetes stop sending new
//! calls), an optional drain pause lets them notice, long-polls answer and streams end, the server
//! stops accepting and lets calls in flight finish, background tasks stop, the database closes.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::{
    audit::{Pseudonymizer, note::NoteSigner},
    background::{self, Job, Schedule},
    clock::{Clock, SystemClock},
    config::TlsFiles,
    domain::referral::DeadlinePolicy,
    exchange::{
        Exchange,
        audit_log::{AuditSequencer, DEFAULT_SEQUENCER_BATCH},
        consents::ConsentExpiry,
        deadlines::DeadlineWatch,
        mailbox_sweeper::MailboxSweeper,
    },
    grpc::{
        audit::AuditApi, consents::ConsentApi, directory::DirectoryApi, mailbox::MailboxApi,
        referrals::ReferralApi, reporting::ReportingApi,
    },
    keys::KeyPurpose,
    mailbox::{DeliveryPolicy, MailboxSignals},
    proto::v1 as pb,
    sealing::DataKeys,
    store::{self, Schema},
};

/// The health service name that says whether this replica can serve calls now: NOT_SERVING while
/// the database is unreachable (and when shutting down), for readiness probes; `""` stays SERVING
/// until shutdown, for liveness probes (restarting a replica does not bring its database back).
pub const READINESS: &str = "readiness";

/// How often readiness asks the database, and how long an answer may take.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Names the health service reports on: the whole server (`""`) and each API service.
const HEALTH_SERVICES: &[&str] = &[
    "",
    READINESS,
    "referral_exchange.v1.ReferralService",
    "referral_exchange.v1.ConsentService",
    "referral_exchange.v1.MailboxService",
    "referral_exchange.v1.AuditService",
    "referral_exchange.v1.DirectoryService",
    "referral_exchange.v1.ReportingService",
];

/// The default bound on a client connection's life (`--max-connection-age-seconds`).
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);

/// Everything a server needs, already resolved (no defaults are filled in here).
pub struct Settings {
    pub listen: SocketAddr,
    /// A plaintext port serving only `grpc.health.v1.Health`, for probes that cannot present a client
    /// certificate (Kubernetes' gRPC probes). It reveals nothing but serving status.
    pub health_listen: Option<SocketAddr>,
    /// The HTTP face (REST/JSON for X-Road); `None` serves gRPC only.
    pub http: Option<HttpSettings>,
    pub database_url: String,
    pub schema: Schema,
    pub tls: TlsFiles,
    pub pseudonym_key: Vec<u8>,
    /// Keys rotated out, still used to look people up.
    pub previous_pseudonym_keys: Vec<Vec<u8>>,
    /// Where the pseudonym key was read from, named when the database refuses it.
    pub pseudonym_key_file: Option<PathBuf>,
    /// The keys personal content is sealed with at rest: the current one and those rotated out.
    pub data_keys: Arc<DataKeys>,
    /// Where the data key was read from, named when the database refuses it.
    pub data_key_file: Option<PathBuf>,
    pub clock: Arc<dyn Clock>,
    pub delivery: DeliveryPolicy,
    pub deadlines: DeadlinePolicy,
    /// Statistics cells with fewer distinct people are suppressed (at least 3; see
    /// `domain::statistics`).
    pub min_cell_size: u64,
    /// Calls per second and at once per organisation, and at once in all (`crate::limits`).
    pub limits: crate::limits::LimitSettings,
    /// Personal content is erased this long after its referral closes or its consent stops being
    /// ACTIVE (`exchange::retention`).
    pub content_retention: chrono::Duration,
    /// How often deployment-wide background tasks run, and how fast a replica takes one over.
    pub background: Schedule,
    /// How long to keep serving after reporting NOT_SERVING, for load balancers to notice.
    pub drain: Duration,
    /// How long a gRPC client connection may live before the server closes it gracefully (the HTTP
    /// face's is in `HttpSettings::limits`): a revoked identity cannot outlive it.
    pub max_connection_age: Duration,
    /// Calls committed together at most (group commit); 1 commits each call alone.
    pub group_commit_max: usize,
    /// Batches open at a time (each on its own connection).
    pub group_commit_lanes: usize,
    pub audit_log: AuditLogSettings,
}

/// The HTTP face: where, and which X-Road security servers may call it for which clients.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// PEM files of pinned X-Road security-server TLS certificates.
    pub xroad_security_server_certs: Vec<PathBuf>,
    /// The X-Road client map file (see `http::ClientMap`).
    pub xroad_client_map: Option<PathBuf>,
    /// Body size and slow-client limits.
    pub limits: crate::http::Limits,
}

impl HttpSettings {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            xroad_security_server_certs: Vec::new(),
            xroad_client_map: None,
            limits: crate::http::Limits::default(),
        }
    }
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
        data_keys: Arc<DataKeys>,
    ) -> Self {
        Self {
            listen,
            health_listen: None,
            http: None,
            database_url,
            schema: Schema::Migrate,
            tls,
            pseudonym_key,
            previous_pseudonym_keys: Vec::new(),
            pseudonym_key_file: None,
            data_keys,
            data_key_file: None,
            clock: Arc::new(SystemClock),
            delivery: DeliveryPolicy::default(),
            deadlines: DeadlinePolicy::default(),
            min_cell_size: crate::domain::statistics::DEFAULT_MIN_CELL_SIZE,
            limits: crate::limits::LimitSettings::default(),
            content_retention: chrono::Duration::days(
                crate::exchange::retention::DEFAULT_CONTENT_RETENTION_DAYS,
            ),
            background: Schedule {
                interval: Duration::from_secs(5),
                takeover: Duration::from_secs(10),
            },
            drain: Duration::ZERO,
            max_connection_age: DEFAULT_MAX_CONNECTION_AGE,
            group_commit_max: store::group::DEFAULT_MAX_MEMBERS,
            group_commit_lanes: store::group::DEFAULT_LANES,
            audit_log: AuditLogSettings::ephemeral(),
        }
    }
}

/// A server accepting calls in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub health_addr: Option<SocketAddr>,
    /// The HTTP face's address, if it is on.
    pub http_addr: Option<SocketAddr>,
    /// The HTTP face's X-Road settings, for reloading the client map.
    pub xroad: Option<Arc<crate::http::XRoad>>,
    pub exchange: Arc<Exchange>,
    health: tonic_health::server::HealthReporter,
    /// Stops the readiness watch (before shutdown reports NOT_SERVING, which it must not undo).
    stop_readiness: watch::Sender<bool>,
    drain: Duration,
    shutdown: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    stop_background: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
    /// How many background tasks have settled their first round, of how many.
    background_settled: (Arc<std::sync::atomic::AtomicUsize>, usize),
}

/// Accepted connections with Nagle's algorithm off: small gRPC frames (an ack, a long-poll's answer)
/// would otherwise wait for the peer's delayed ACK, about 40 ms each way.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Binds a listener, with the address in the error.
async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Opens the database (migrating it, or checking it is current), binds and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<RunningServer> {
    // A threshold that would publish groups of one or two people is refused, not raised quietly.
    crate::domain::statistics::min_cell_size(settings.min_cell_size)
        .map_err(|e| anyhow::anyhow!("--min-cell-size: {e}"))?;
    crate::tls::install_crypto_provider();
    let tls = crate::tls::LiveConfig::new(crate::tls::server_rustls_config(
        &settings.tls.cert,
        &settings.tls.key,
        &settings.tls.client_ca,
        &settings.tls.crls,
    )?);
    let signals = Arc::new(MailboxSignals::default());
    let store = store::connect(
        &settings.database_url,
        settings.schema,
        signals,
        Some(settings.data_keys.clone()),
    )
    .await
    .context("opening the database")?;
    // Every party's mailbox counter exists before any call can need it (see `ensure_mailboxes`).
    let mut mailboxes = vec![crate::domain::OrganizationId::kela().to_string()];
    mailboxes.extend(
        crate::domain::municipality::embedded()
            .receivers()
            .iter()
            .map(|r| r.id.to_string()),
    );
    let pseudonyms = Pseudonymizer::new(settings.pseudonym_key)?
        .with_previous(settings.previous_pseudonym_keys)?;
    let mut tx = store.begin().await?;
    // Before anything is written: a refused key leaves the database as it was.
    let now = settings.clock.now();
    check_key(
        &mut *tx,
        KeyPurpose::Pseudonym,
        (pseudonyms.fingerprint(), pseudonyms.previous_fingerprints()),
        settings.pseudonym_key_file.as_deref(),
        now,
    )
    .await?;
    check_key(
        &mut *tx,
        KeyPurpose::Data,
        (
            settings.data_keys.fingerprint().to_owned(),
            settings.data_keys.previous_fingerprints().to_vec(),
        ),
        settings.data_key_file.as_deref(),
        now,
    )
    .await?;
    tx.ensure_mailboxes(&mailboxes).await?;
    tx.commit().await?;
    let audit_log = settings.audit_log;
    let exchange = Arc::new(
        Exchange::new(
            store,
            settings.clock,
            pseudonyms,
            settings.delivery,
            settings.deadlines,
        )
        .with_min_cell_size(settings.min_cell_size)
        .with_content_retention(settings.content_retention)
        .with_limits(settings.limits)
        .with_log_signer(audit_log.signer.clone())
        .with_group_commit(settings.group_commit_max, settings.group_commit_lanes),
    );
    tracing::info!(
        verifier_key = %audit_log.signer.verifier(),
        "audit log checkpoints are signed by this key; give it to auditors"
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    for service in HEALTH_SERVICES {
        health
            .set_service_status(*service, ServingStatus::Serving)
            .await;
    }
    let (stop_readiness, readiness_stopped) = watch::channel(false);
    tokio::spawn(watch_readiness(
        exchange.clone(),
        health.clone(),
        readiness_stopped,
    ));

    // Both reflection versions: the grpcurl most people have speaks only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The error details every refusal carries (ErrorInfo, BadRequest…): with them a
            // reflection client such as grpcurl shows a refusal's reason and field violations.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (listener, addr) = bind(settings.listen).await?;
    let mut shutdown = Vec::new();
    let mut tasks = Vec::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // After this, GOAWAY: the client's next call opens a new connection, with a new handshake
        // against the certificate, CA and CRLs of the moment; calls in flight finish. (No
        // `max_connection_age_grace`: in tonic 0.14 setting it skips the GOAWAY and only cuts the
        // connection at age + grace.) A `StreamMessages` stream ends at the same age
        // (`DeliveryPolicy::max_stream_age`), so no call keeps an old connection open longer.
        .max_connection_age(settings.max_connection_age)
        .layer(crate::grpc::undecodable::UndecodableLayer::new(
            exchange.clone(),
        ))
        .add_service(health_service.clone())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ReferralApi::new(exchange.clone()))
        .add_service(ConsentApi::new(exchange.clone()))
        .add_service(MailboxApi::new(exchange.clone()))
        .add_service(AuditApi::new(exchange.clone()))
        .add_service(DirectoryApi::new(exchange.clone()))
        .add_service(ReportingApi::new(exchange.clone()));
    // TLS handshakes are done by `tls::tls_incoming`, which logs each refusal with its peer.
    tasks.push(tokio::spawn(router.serve_with_incoming_shutdown(
        crate::tls::tls_incoming(listener, tls.clone(), crate::tls::HANDSHAKE_TIMEOUT),
        async {
            let _ = stopped.await;
        },
    )));
    shutdown.push(stop);

    let health_addr = match settings.health_listen {
        Some(health_listen) => {
            let (listener, health_addr) = bind(health_listen).await?;
            let (stop, stopped) = oneshot::channel::<()>();
            let router = Server::builder().add_service(health_service);
            tasks.push(tokio::spawn(router.serve_with_incoming_shutdown(
                incoming(listener),
                async {
                    let _ = stopped.await;
                },
            )));
            shutdown.push(stop);
            Some(health_addr)
        }
        None => None,
    };
    let (http_addr, xroad, http_tls) = match &settings.http {
        Some(http) => {
            let (addr, xroad, http_tls) =
                start_http(http, &settings.tls, &exchange, &mut shutdown, &mut tasks).await?;
            (Some(addr), Some(xroad), Some(http_tls))
        }
        None => (None, None, None),
    };
    spawn_reload_on_hangup(Reload {
        files: settings.tls.clone(),
        grpc: tls,
        http: xroad.clone().zip(http_tls),
    });
    let health_port = health_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let http_port = http_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(%addr, http = %http_port, health = %health_port, engine = ?exchange.store().engine(), "serving");

    let (stop_background, stopped) = watch::channel(false);
    let settled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut background: Vec<_> = background_jobs(&exchange, &audit_log)
        .into_iter()
        .map(|job| {
            let schedule = job.schedule(settings.background);
            background::spawn(
                exchange.store().clone(),
                job,
                schedule,
                stopped.clone(),
                settled.clone(),
            )
        })
        .collect();
    let background_settled = (settled, background.len());
    background.push(tokio::spawn(flush_refusal_tally(exchange.clone(), stopped)));
    Ok(RunningServer {
        addr,
        health_addr,
        http_addr,
        xroad,
        exchange,
        health,
        stop_readiness,
        drain: settings.drain,
        shutdown,
        tasks,
        stop_background,
        background,
        background_settled,
    })
}

/// Writes this process's tally of refusals for a limit to the audit trail every second, and once
/// more when `stop` turns true (after the last call has finished). Every replica flushes its own.
async fn flush_refusal_tally(exchange: Arc<Exchange>, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => *stop.borrow(),
            changed = stop.changed() => changed.is_err() || *stop.borrow(),
        };
        if let Err(e) = exchange.flush_refusal_tally().await {
            tracing::warn!(error = %e, "could not audit the tally of refused calls; kept for the next round");
        }
        if stopping {
            return;
        }
    }
}

/// Keeps [`READINESS`] saying whether the database answers (`Store::ping`, no transaction and no
/// lock) every [`READINESS_INTERVAL`], within [`READINESS_TIMEOUT`]. Logs each change once.
async fn watch_readiness(
    exchange: Arc<Exchange>,
    health: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(READINESS_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        let answered = tokio::time::timeout(READINESS_TIMEOUT, exchange.store().ping()).await;
        let now_ready = matches!(answered, Ok(Ok(())));
        if *stop.borrow() {
            return;
        }
        if now_ready != ready {
            ready = now_ready;
            if ready {
                tracing::info!("the database answers again: ready");
            } else {
                tracing::warn!("the database does not answer: not ready until it does");
            }
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(READINESS, status).await;
        }
    }
}

/// Starts the HTTP face; its stop joins the others in `shutdown`, its task in `tasks`.
async fn start_http(
    http: &HttpSettings,
    tls: &TlsFiles,
    exchange: &Arc<Exchange>,
    shutdown: &mut Vec<oneshot::Sender<()>>,
    tasks: &mut Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
) -> anyhow::Result<(
    SocketAddr,
    Arc<crate::http::XRoad>,
    Arc<crate::tls::LiveConfig>,
)> {
    let mut pinned = Vec::new();
    for file in &http.xroad_security_server_certs {
        pinned.extend(
            crate::tls::read_certificates(file)
                .with_context(|| format!("--xroad-security-server-cert {}", file.display()))?,
        );
    }
    let xroad = Arc::new(crate::http::XRoad::new(
        pinned,
        http.xroad_client_map.clone(),
    )?);
    let config = crate::tls::LiveConfig::new(crate::tls::http_server_rustls_config(
        &tls.cert,
        &tls.key,
        &tls.client_ca,
        &tls.crls,
        xroad.pinned(),
    )?);
    let (listener, addr) = crate::http::bind(http.listen).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let (stop_http, stop_watch) = watch::channel(false);
    let face = crate::http::serve(
        listener,
        config.clone(),
        exchange.clone(),
        xroad.clone(),
        http.limits,
        stop_watch,
    );
    tasks.push(tokio::spawn(async move {
        let mut face = std::pin::pin!(face);
        tokio::select! {
            () = face.as_mut() => {}
            _ = stopped => {
                let _ = stop_http.send(true);
                face.await;
            }
        }
        Ok(())
    }));
    shutdown.push(stop);
    Ok((addr, xroad, config))
}

/// What SIGHUP re-reads: the server certificate and key, the client CA and the CRLs of both
/// listeners, and the X-Road client map.
struct Reload {
    files: TlsFiles,
    grpc: Arc<crate::tls::LiveConfig>,
    http: Option<(Arc<crate::http::XRoad>, Arc<crate::tls::LiveConfig>)>,
}

impl Reload {
    /// Each part is replaced only when it loads completely: a broken file leaves the previous
    /// configuration serving, and says why. New handshakes use what was loaded; established
    /// connections and the calls on them go on as they were.
    fn run(&self) {
        let f = &self.files;
        match crate::tls::server_rustls_config(&f.cert, &f.key, &f.client_ca, &f.crls) {
            Ok(config) => {
                self.grpc.replace(config);
                tracing::info!(
                    crls = f.crls.len(),
                    "reloaded the server certificate, client CA and CRLs for new connections"
                );
            }
            Err(error) => tracing::error!(
                %error,
                "TLS files were not reloaded; the previous certificate, CA and CRLs stay in use"
            ),
        }
        let Some((xroad, http)) = &self.http else {
            return;
        };
        match crate::tls::http_server_rustls_config(
            &f.cert,
            &f.key,
            &f.client_ca,
            &f.crls,
            xroad.pinned(),
        ) {
            Ok(config) => http.replace(config),
            Err(error) => tracing::error!(
                %error,
                "the HTTP face's TLS files were not reloaded; the previous ones stay in use"
            ),
        }
        if xroad.has_client_map() {
            match xroad.reload() {
                Ok(clients) => tracing::info!(clients, "reloaded the X-Road client map"),
                Err(error) => tracing::error!(
                    error = %format!("{error:#}"),
                    "the X-Road client map was not reloaded; the previous one stays in use"
                ),
            }
        }
    }
}

/// SIGHUP reloads TLS material and the X-Road client map (see [`Reload`]), dropping no connection.
fn spawn_reload_on_hangup(reload: Reload) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!(
                "cannot listen for SIGHUP: TLS files and the X-Road client map are read at start only"
            );
            return;
        };
        while hangups.recv().await.is_some() {
            reload.run();
        }
    });
}

/// Refuses a key the database was not written with, records the key of a new database, and records
/// a rotation (the key the database was written with given as a previous key). See [`crate::keys`]
/// for why: under another pseudonym key lookups by identity code silently find nothing; under another
/// data key nothing sealed opens.
async fn check_key(
    tx: &mut dyn store::Tx,
    purpose: KeyPurpose,
    (current, previous): (String, Vec<String>),
    file: Option<&std::path::Path>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    use crate::keys::{KeyCheck, check, short};
    let (what, flag, consequence) = match purpose {
        KeyPurpose::Pseudonym => (
            "pseudonym key",
            "pseudonym-key-file",
            "lookups by identity code would silently find nobody's events",
        ),
        KeyPurpose::Data => (
            "data key",
            "data-key-file",
            "the personal content sealed in the database would not open",
        ),
    };
    // A second round only when another replica recorded or rotated at the same moment.
    for _ in 0..2 {
        let recorded = tx.key_fingerprint(purpose.as_str()).await?;
        let done = match check(recorded.as_deref(), &current, &previous) {
            KeyCheck::Same => true,
            KeyCheck::Record => {
                let done = tx
                    .insert_key_fingerprint(purpose.as_str(), &current, now)
                    .await?;
                if done {
                    tracing::info!(
                        fingerprint = short(&current),
                        "recorded the {what}'s fingerprint in the database"
                    );
                }
                done
            }
            KeyCheck::Rotate { from } => {
                let done = tx
                    .replace_key_fingerprint(purpose.as_str(), &from, &current, now)
                    .await?;
                if done {
                    tracing::info!(
                        from = short(&from),
                        to = short(&current),
                        "{what} rotated: what is new uses the new key, what was written under the previous keys stays readable"
                    );
                }
                done
            }
            KeyCheck::Unknown { recorded } => {
                let file = file.map_or_else(
                    || format!("the {what} given"),
                    |f| format!("the {what} in {}", f.display()),
                );
                let previous = if previous.is_empty() {
                    String::new()
                } else {
                    format!(", nor is any of the {} previous keys", previous.len())
                };
                anyhow::bail!(
                    "{file} is not the key this database was written with{previous} (fingerprint of the \
                     database's key {}…, of this key {}…): with it, {consequence}. Start with the key \
                     the database was written with. To rotate to a new key, give the new key as \
                     --{flag} and the old one as --previous-{flag} (deploy/README.md, \"Keys\")",
                    short(&recorded),
                    short(&current),
                );
            }
        };
        if done {
            return Ok(());
        }
    }
    anyhow::bail!("the {what}'s fingerprint kept changing while starting; start again")
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
        Arc::new(DeadlineWatch(exchange.clone())),
        Arc::new(crate::exchange::gauges::GaugeRefresh(exchange.clone())),
        Arc::new(MailboxSweeper(exchange.clone())),
        Arc::new(crate::exchange::retention::ContentRetention(
            exchange.clone(),
        )),
    ]
}

impl RunningServer {
    /// Whether every background task's first round is over (done here, or left to another replica
    /// that holds its lock): what a test waits for before it moves the clock.
    pub fn background_settled(&self) -> bool {
        let (settled, of) = &self.background_settled;
        settled.load(std::sync::atomic::Ordering::SeqCst) >= *of
    }

    /// Reports NOT_SERVING, drains, ends long-polls and streams, lets calls in flight finish, stops
    /// background tasks and closes the database.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop_readiness.send(true);
        for service in HEALTH_SERVICES {
            self.health
                .set_service_status(*service, ServingStatus::NotServing)
                .await;
        }
        if !self.drain.is_zero() {
            tracing::info!(
                seconds = self.drain.as_secs_f64(),
                "draining before stopping"
            );
            tokio::time::sleep(self.drain).await;
        }
        self.exchange.begin_shutdown();
        for stop in self.shutdown.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await.context("server task")??;
        }
        let _ = self.stop_background.send(true);
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        self.exchange.store().close().await;
        Ok(())
    }
}

//! PostgreSQL: production, and several replicas sharing one database.
//!
//! Transactions run at READ COMMITTED and lock exactly the rows they will change (`FOR NO KEY UPDATE`), so
//! concurrent changes to one referral or consent queue up instead of overwriting each other. Pullers
//! of one mailbox claim messages with `SKIP LOCKED`: each takes rows no one else is
//! taking, without waiting.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Postgres,
    postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgSslMode},
};

use super::{Engine, Leadership, Schema, Store, Tx, sql::SqlTx};
use crate::{
    error::{Error, Result},
    mailbox::MailboxSignals,
    sealing::DataKeys,
};

/// Connections kept for the background tasks ([`Store::begin_background`]) and readiness, beside
/// the [`CALL_CONNECTIONS`] the calls share. Six tasks run in rounds, each one transaction at a
/// time, most rounds a few milliseconds: four connections leave them room to overlap.
pub const BACKGROUND_CONNECTIONS: u32 = 4;

/// Connections the calls share (long-polls hold none while they wait).
pub const CALL_CONNECTIONS: u32 = 16;

pub struct PostgresStore {
    pool: PgPool,
    /// The background tasks' own connections (made when first needed).
    background: PgPool,
    signals: Arc<MailboxSignals>,
    /// What personal content is sealed with (`crate::sealing`); `None` when opened to migrate only.
    keys: Option<Arc<DataKeys>>,
    listener: tokio::task::JoinHandle<()>,
}

impl PostgresStore {
    pub async fn connect(
        url: &str,
        schema: Schema,
        signals: Arc<MailboxSignals>,
        keys: Option<Arc<DataKeys>>,
    ) -> anyhow::Result<Self> {
        // Each replica's sessions carry its process id, so that an operator (or a test) can see in
        // pg_stat_activity and pg_locks which replica holds what.
        let options = PgConnectOptions::from_str(url)?
            .application_name(&format!("referral-exchange/{}", std::process::id()))
            // Room for every statement of the queries plus short id lists (`sql::cacheable`);
            // the default of 100 evicted and re-parsed under load.
            .statement_cache_capacity(256);
        let pool = PgPoolOptions::new()
            .max_connections(CALL_CONNECTIONS)
            // While the database is unreachable, a call waits this long for a connection before it
            // is answered UNAVAILABLE (with RetryInfo): long enough for a busy moment's queue,
            // short enough that clients retry rather than hang.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options.clone())
            .await
            .map_err(|e| anyhow::anyhow!(connect_error(&options, &e)))?;
        super::prepare_schema(&pool, &sqlx::migrate!("migrations/postgres"), schema).await?;
        let background = PgPoolOptions::new()
            .max_connections(BACKGROUND_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options.clone().application_name(&format!(
                "referral-exchange/{}/background",
                std::process::id()
            )));
        let listener = tokio::spawn(listen(pool.clone(), signals.clone()));
        Ok(Self {
            pool,
            background,
            signals,
            keys,
            listener,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_on(&self, pool: &PgPool) -> Result<Box<dyn Tx>> {
        let span = tracing::info_span!(
            "transaction",
            otel.kind = "client",
            db.system.name = "postgresql"
        );
        Ok(Box::new(SqlTx::<Postgres>::new(
            pool.begin().await.map_err(Error::connecting)?,
            span,
            self.keys.clone(),
        )))
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    async fn begin(&self) -> Result<Box<dyn Tx>> {
        self.begin_on(&self.pool).await
    }

    async fn begin_background(&self) -> Result<Box<dyn Tx>> {
        self.begin_on(&self.background).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.background)
            .await
            .map_err(Error::connecting)?;
        Ok(())
    }

    fn signals(&self) -> &Arc<MailboxSignals> {
        &self.signals
    }

    /// A session-level advisory lock on a connection of its own, taken out of the pool: PostgreSQL
    /// releases it the moment that session ends, including when the process holding it is killed,
    /// so another replica can take over.
    async fn try_lead(&self, lock: &str) -> Result<Option<Box<dyn Leadership>>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(Error::connecting)?
            .detach();
        let acquired: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(lock)
                .fetch_one(&mut conn)
                .await?;
        Ok(acquired.then(|| Box::new(AdvisoryLock { conn }) as Box<dyn Leadership>))
    }

    async fn close(&self) {
        self.listener.abort();
        self.pool.close().await;
        self.background.close().await;
    }
}

struct AdvisoryLock {
    conn: sqlx::PgConnection,
}

#[async_trait]
impl Leadership for AdvisoryLock {
    async fn still_leading(&mut self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut self.conn)
            .await
            .is_ok()
    }
}

/// Says which step of connecting to PostgreSQL failed — reaching the server, agreeing on TLS and
/// trusting its certificate, logging in, or finding the database — and what to do about it; never
/// the password.
pub fn connect_error(options: &PgConnectOptions, e: &sqlx::Error) -> String {
    let server = format!("{}:{}", options.get_host(), options.get_port());
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    let code = match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    if let Some(tls) = tls_failure(e) {
        return tls_error(options, &server, tls);
    }
    match (e, code.as_deref()) {
        // The server is reached by TCP, which never fails with these: a file the URL names
        // (`sslrootcert`, `sslcert`, `sslkey`) could not be read.
        (sqlx::Error::Io(io), _)
            if matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            format!(
                "cannot connect to PostgreSQL at {server}: a file the URL names (sslrootcert, \
                 sslcert or sslkey) cannot be read ({e})"
            )
        }
        (sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut, _) => format!(
            "cannot reach PostgreSQL at {server} ({e}): is it running, and are the host and port \
             in the URL right?"
        ),
        (sqlx::Error::Tls(_), _) => format!(
            "PostgreSQL at {server} and this server could not agree on TLS ({e}): check the URL's \
             sslmode"
        ),
        // pg_hba.conf has a `hostssl` line for this client and no `host` line.
        (sqlx::Error::Database(db), Some("28000")) if db.message().contains("no encryption") => {
            format!(
                "PostgreSQL at {server} accepts this client over TLS only ({e}): set sslmode in \
                 the URL, verify-full with sslrootcert naming the CA of the server's certificate"
            )
        }
        // invalid_password, invalid_authorization_specification
        (_, Some("28P01" | "28000")) => format!(
            "PostgreSQL at {server} refused the login of user {user:?} ({e}): check the user and \
             password in the URL, and the server's pg_hba.conf"
        ),
        // invalid_catalog_name
        (_, Some("3D000")) => format!(
            "PostgreSQL at {server} has no database {database:?}: create it (createdb -h {} -p {} \
             -U {user} {database}) or name another in the URL",
            options.get_host(),
            options.get_port()
        ),
        _ => format!("cannot connect to PostgreSQL at {server} as {user:?}: {e}"),
    }
}

/// The TLS library's own error behind `e`, if the TLS handshake is what failed. sqlx reports a failed
/// handshake as an I/O error (or a TLS error) whose source is rustls's error.
fn tls_failure(e: &sqlx::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        sqlx::Error::Io(io) => io.get_ref().map(|inner| inner as _),
        sqlx::Error::Tls(tls) => Some(tls.as_ref() as _),
        _ => None,
    };
    while let Some(error) = source {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        source = error.source();
    }
    None
}

/// What a failed TLS handshake with PostgreSQL means for the operator.
fn tls_error(options: &PgConnectOptions, server: &str, tls: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let mode = match options.get_ssl_mode() {
        PgSslMode::VerifyFull => "verify-full",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::Require => "require",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Allow => "allow",
        PgSslMode::Disable => "disable",
    };
    match tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "TLS with PostgreSQL at {server} failed: its certificate is not trusted ({tls}). With \
             sslmode={mode}, sslrootcert in the URL must name the CA certificate (PEM) that issued \
             the server's certificate"
        ),
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => format!(
            "TLS with PostgreSQL at {server} failed: its certificate does not name the host {:?} \
             ({tls}). With sslmode=verify-full the URL's host must be a name (or IP address) in the \
             certificate",
            options.get_host()
        ),
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => format!(
            "TLS with PostgreSQL at {server} failed: its certificate is outside its validity period \
             ({tls}); renew the server's certificate"
        ),
        _ => format!(
            "TLS with PostgreSQL at {server} failed ({tls}): check the URL's sslmode ({mode}) and \
             sslrootcert, and the server's ssl settings"
        ),
    }
}

/// The channel mailbox writes are announced on.
const MAILBOX_CHANNEL: &str = "referral_exchange_mailbox";

/// Forwards notifications of mailbox writes in any replica to this process's waiters. When the
/// listening connection is lost, notifications sent meanwhile are lost with it, so everyone is woken to
/// look again.
async fn listen(pool: PgPool, signals: Arc<MailboxSignals>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "cannot listen for mailbox writes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(MAILBOX_CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for mailbox writes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        signals.notify_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => signals.notify(notification.payload()),
                // Reconnected: what was sent in between is gone.
                Ok(None) => signals.notify_all(),
                Err(e) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %e, "lost the mailbox listener; reconnecting");
                    signals.notify_all();
                    break;
                }
            }
        }
    }
}

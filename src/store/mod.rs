//! Storage: SQLite as the embedded default, PostgreSQL for production and for several replicas.
//!
//! A use case opens one transaction ([`Tx`]), reads what it needs (locking rows it will change),
//! lets the domain decide, writes the result together with its audit event and outgoing messages,
//! and commits. So a change and the record of it land together or not at all.
//!
//! Where things are:
//!
//! - [`Tx`]: one transaction's operations, one trait per aggregate, each in its own file with its
//!   SQL: [`idempotency`], [`consents`], [`referrals`], [`messages`] (mailboxes), [`deadlines`],
//!   [`audit_trail`] (the events), [`audit_log`] (the Merkle tree), [`readings`] (the gauges),
//!   [`keys`] (fingerprints of the keys the data was written with), [`statistics`] (grouped counts),
//!   [`sealed`] (the columns sealed at rest, and moving them to a new data key), [`retention`]
//!   (erasing content kept long enough).
//! - `sql`: the one implementation of [`Tx`], generic over the engine, and the statement builder
//!   the SQL is written with. `dialect`: what differs between the engines, as named items of one
//!   trait. `held`: how plain writes wait and go together.
//! - [`sqlite`], [`postgres`]: pool set-up, `BEGIN`, leadership, PostgreSQL's `LISTEN`.
//!   `sqlite_functions`: the two aggregate functions SQLite's statistics group and count distinct
//!   people with.
//! - [`group`]: group commit, several calls' transactions in one database transaction.
//!
//! Queries are built at run time: nothing needs a database to compile. Times: PostgreSQL stores
//! `timestamptz`; SQLite stores integer microseconds since the epoch, which compare correctly as
//! numbers ([`DbTime`]). UUIDs are `uuid` and 16-byte blobs respectively.

pub mod audit_log;
pub mod audit_trail;
pub mod consents;
pub mod deadlines;
mod dialect;
pub mod group;
mod held;
pub mod idempotency;
pub mod keys;
pub mod messages;
pub mod postgres;
pub mod readings;
pub mod referrals;
pub mod retention;
mod rows;
pub mod sealed;
mod sql;
pub mod sqlite;
mod sqlite_functions;
pub mod statistics;
mod time;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::{
    audit_log::{AuditLeaf, AuditLog, ExportedLeaf, StoredCheckpoint},
    audit_trail::AuditTrail,
    consents::{ConsentEventFilter, ConsentFilter, Consents, StoredConsentEvent},
    deadlines::Deadlines,
    idempotency::{Idempotency, Recorded},
    keys::Keys,
    messages::{MailboxCounts, Messages},
    postgres::PostgresStore,
    readings::{GaugeReadings, Readings},
    referrals::{ReferralFilter, Referrals},
    retention::Retention,
    sealed::Sealed,
    sqlite::SqliteStore,
    statistics::{Statistics, StatisticsQuery},
    time::DbTime,
};
use crate::{
    error::{Error, Result},
    mailbox::MailboxSignals,
    sealing::DataKeys,
};

/// Which database a store talks to; reported at start-up and in health details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// What opening a store does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply what is missing (several replicas starting together take turns under a lock).
    Migrate,
    /// Refuse to open a database whose schema is behind this binary: migrations ran as a separate step
    /// (`referral-exchange migrate`) and did not reach this version. A schema *ahead* of the binary is
    /// accepted: that is a rolling upgrade, and migrations only ever add.
    RequireCurrent,
}

/// Opens a store for `url` (`sqlite:…` or `postgres://…`), creating the SQLite file if needed.
/// Personal content is sealed with `keys` (`crate::sealing`); a store opened without them (to
/// migrate) refuses every read or write of content.
pub async fn connect(
    url: &str,
    schema: Schema,
    signals: Arc<MailboxSignals>,
    keys: Option<Arc<DataKeys>>,
) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::connect(url, schema, signals, keys).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(
            SqliteStore::connect(url, schema, signals, keys).await?,
        ))
    } else {
        anyhow::bail!("unsupported database URL scheme: expected sqlite: or postgres://")
    }
}

/// Brings the schema of `pool` to `migrator`'s version, or checks that it is there.
pub(crate) async fn prepare_schema<DB>(
    pool: &sqlx::Pool<DB>,
    migrator: &sqlx::migrate::Migrator,
    schema: Schema,
) -> anyhow::Result<()>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    let missing = missing_migrations(pool, migrator).await?;
    if schema == Schema::Migrate {
        migrator.run(pool).await?;
        if !missing.is_empty() {
            // Several replicas may start together: one applied these, the others waited for it.
            tracing::info!(versions = ?missing, "the database schema was behind; migrated");
        }
        return Ok(());
    }
    anyhow::ensure!(
        missing.is_empty(),
        "the database schema is behind this binary (migrations {missing:?} not applied): run `referral-exchange migrate` first"
    );
    Ok(())
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn engine(&self) -> Engine;

    /// Begins a read-write transaction.
    async fn begin(&self) -> Result<Box<dyn Tx>>;

    /// Begins a transaction that only reads, for a long analytical read (statistics). On SQLite on
    /// read-only connections of its own: a reader sees a snapshot and holds no lock, so writes go on
    /// meanwhile instead of waiting behind the one connection for seconds. Elsewhere the same as
    /// [`Store::begin`].
    async fn begin_read(&self) -> Result<Box<dyn Tx>> {
        self.begin().await
    }

    /// Begins a transaction of a background task (the audit sequencer, deadlines, expiry,
    /// retention, the mailbox sweeper, gauges) on connections calls cannot take: however many
    /// calls wait for the database, the background tasks still get theirs. On SQLite, whose one
    /// connection serialises every write anyway, the same as [`Store::begin`].
    async fn begin_background(&self) -> Result<Box<dyn Tx>> {
        self.begin().await
    }

    /// Whether the database answers: one `SELECT 1` on a pooled connection, taking no lock (on
    /// SQLite a transaction would take the write lock). For readiness, so on PostgreSQL on the
    /// background tasks' connections: calls that fill their own pool make the replica busy, not
    /// unready.
    async fn ping(&self) -> Result<()>;

    /// Wakes long-polls waiting on these mailboxes (after a commit that wrote to them).
    fn signals(&self) -> &Arc<MailboxSignals>;

    /// Tries to become the one holder of `lock` in the deployment, for a background task that must
    /// run once however many replicas there are. `None`: someone else holds it.
    async fn try_lead(&self, lock: &str) -> Result<Option<Box<dyn Leadership>>>;

    async fn close(&self);
}

/// Held while this process is the one running a deployment-wide task. Dropping it gives it up.
#[async_trait]
pub trait Leadership: Send {
    /// Whether the lock is still held: false once the database session that holds it is gone.
    async fn still_leading(&mut self) -> bool;
}

/// One transaction: every aggregate's operations, and its end. Dropping it without
/// [`Tx::commit`] rolls everything back.
#[async_trait]
pub trait Tx:
    Idempotency
    + Consents
    + Referrals
    + Messages
    + Deadlines
    + AuditTrail
    + AuditLog
    + Readings
    + Keys
    + Statistics
    + Sealed
    + Retention
    + Send
{
    /// Sends the writes this transaction has held back, if any: plain writes (inserts, updates by
    /// key) whose results nobody reads wait and go together, before the next read and at the
    /// latest here or at commit. A held write's error surfaces at this point.
    async fn flush(&mut self) -> Result<()>;
    async fn commit(self: Box<Self>) -> Result<()>;

    // --- savepoints, for group commit (see `group`)
    /// `SAVEPOINT sp<n>`. Never released: the commit keeps them all, and a release would be one
    /// more round trip per call.
    async fn savepoint(&mut self, n: u64) -> Result<()>;
    /// `ROLLBACK TO SAVEPOINT sp<n>`: undoes what was done since, also after an error.
    async fn rollback_to_savepoint(&mut self, n: u64) -> Result<()>;
}

/// The versions of `migrator` that `pool`'s database has not applied.
async fn missing_migrations<DB>(
    pool: &sqlx::Pool<DB>,
    migrator: &sqlx::migrate::Migrator,
) -> anyhow::Result<Vec<i64>>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::migrate::Migrate;
    let mut conn = pool.acquire().await?;
    // No migrations table at all: nothing was applied.
    let applied = match conn.list_applied_migrations(&migrator.table_name).await {
        Ok(applied) => applied,
        Err(sqlx::migrate::MigrateError::Execute(e)) if is_missing_table(&e) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(migrator
        .iter()
        .map(|m| m.version)
        .filter(|version| !applied.iter().any(|a| a.version == *version))
        .collect())
}

/// Whether `e` says the table asked for does not exist (a database no migration has touched).
fn is_missing_table(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            // PostgreSQL's undefined_table; SQLite has no code of its own for it.
            db.code().as_deref() == Some("42P01") || db.message().starts_with("no such table")
        }
        _ => false,
    }
}

/// Codes and JSON columns are written by this service only; a value that does not decode means the
/// database was changed behind its back, which is an internal error, not the caller's.
pub(crate) fn corrupt(what: &str) -> Error {
    Error::internal(format!("stored {what} does not decode"))
}

/// A stored code as its enum.
fn code<T>(value: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<T> {
    parse(value).ok_or_else(|| corrupt(what))
}

/// A stored JSON column as its value.
fn json<T: serde::de::DeserializeOwned>(value: &str, what: &str) -> Result<T> {
    serde_json::from_str(value).map_err(|_| corrupt(what))
}

/// A value as its JSON column.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(Error::internal)
}

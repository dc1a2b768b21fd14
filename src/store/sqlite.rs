//! SQLite: the embedded default. One file, nothing to install, one process.
//!
//! SQLite has one writer at a time. Every transaction here writes (at least its audit event), so each
//! begins with `BEGIN IMMEDIATE`, taking the write lock up front: a transaction that started as a
//! reader and later tried to write could otherwise fail with SQLITE_BUSY instead of waiting.
//! WAL journaling with `synchronous = FULL`: a committed referral survives a power cut. The one
//! exception is a long read (statistics, [`Store::begin_read`]): it runs on read-only connections of
//! its own, which WAL lets read a snapshot while the writer goes on; its audit event is then written
//! like any other, on the writer.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands it every statement through a
//! channel; the hand-off there and back costs more than most of our statements do. So a transaction
//! holds back its plain writes ([`super::held`]) and sends them as one multi-statement command when it
//! next reads or ends: a create's seven writes cross once instead of seven times.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Sqlite,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use super::{Engine, Leadership, Schema, Store, Tx, sql::SqlTx};
use crate::{error::Result, mailbox::MailboxSignals, sealing::DataKeys};

pub struct SqliteStore {
    pool: SqlitePool,
    /// Read-only connections for long reads ([`Store::begin_read`]); `None` for an in-memory
    /// database, which another connection would not see.
    readers: Option<SqlitePool>,
    signals: Arc<MailboxSignals>,
    /// What personal content is sealed with (`crate::sealing`); `None` when opened to migrate only.
    keys: Option<Arc<DataKeys>>,
}

impl SqliteStore {
    pub async fn connect(
        url: &str,
        schema: Schema,
        signals: Arc<MailboxSignals>,
        keys: Option<Arc<DataKeys>>,
    ) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // As for PostgreSQL (see `postgres.rs`).
            .statement_cache_capacity(256)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Savepoints (one per member of a group-commit batch) journal the pages they change;
            // in a temporary file that was a third of all writes to disk, here it is memory.
            .pragma("temp_store", "memory")
            // The WAL is copied into the database file by the committing writer, on the path every
            // write waits behind, once it holds this many pages (default 1,000). Ten times as many
            // between checkpoints: a page changed by many commits is copied once, not ten times.
            // The WAL file grows to about 40 MB; `create` gained 7–15 % (bench/RESULTS.md).
            .pragma("wal_autocheckpoint", "10000")
            .busy_timeout(Duration::from_secs(30));
        // SQLite creates a missing file, not its directory: `serve --data-dir new/dir` with every
        // key file given has nothing else to create it.
        let parent = options.get_filename().parent();
        if let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("creating {} for the database: {e}", dir.display()))?;
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new()
            // Writers queue in the pool rather than in SQLite's busy handler, which polls with sleeps.
            .max_connections(1)
            .after_connect(|connection, _| Box::pin(register_functions(connection)))
            .connect_with(options.clone())
            .await?;
        super::prepare_schema(&pool, &sqlx::migrate!("migrations/sqlite"), schema).await?;
        // After the writer has made the file and put it in WAL mode, which readers cannot.
        let readers = if in_memory {
            None
        } else {
            Some(
                SqlitePoolOptions::new()
                    .max_connections(READERS)
                    .min_connections(0)
                    .after_connect(|connection, _| Box::pin(register_functions(connection)))
                    .connect_lazy_with(
                        options
                            .read_only(true)
                            .create_if_missing(false)
                            // Reading 10⁶ referrals through `read()` copied every page (7 % of a
                            // statistics call in `perf`); mapped, it is read in place. Readers
                            // only: every write still goes through the writer's file calls.
                            .pragma("mmap_size", READER_MMAP_BYTES.to_string()),
                    ),
            )
        };
        Ok(Self {
            pool,
            readers,
            signals,
            keys,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A begun transaction as the store's, traced as one.
    fn tx(&self, tx: sqlx::Transaction<'static, Sqlite>, read_only: bool) -> Box<dyn Tx> {
        let span = tracing::info_span!(
            "transaction",
            otel.kind = "client",
            db.system.name = "sqlite",
            read_only
        );
        Box::new(SqlTx::<Sqlite>::new(tx, span, self.keys.clone()))
    }
}

/// Long reads at once (statistics); more wait for a reader.
const READERS: u32 = 2;

/// How much of the database file a reader maps into memory (address space, not memory used).
const READER_MMAP_BYTES: u64 = 1 << 30;

/// The statistics' grouping and distinct people (`super::sqlite_functions`), on every connection.
async fn register_functions(connection: &mut sqlx::SqliteConnection) -> sqlx::Result<()> {
    let mut handle = connection.lock_handle().await?;
    super::sqlite_functions::register(handle.as_raw_handle())
        .map_err(|e| sqlx::Error::Configuration(e.into()))
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    async fn begin(&self) -> Result<Box<dyn Tx>> {
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(self.tx(tx, false))
    }

    async fn begin_read(&self) -> Result<Box<dyn Tx>> {
        let Some(readers) = &self.readers else {
            return self.begin().await;
        };
        let tx = readers.begin().await?;
        Ok(self.tx(tx, true))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn signals(&self) -> &Arc<MailboxSignals> {
        &self.signals
    }

    /// SQLite is one process: it always leads.
    async fn try_lead(&self, _lock: &str) -> Result<Option<Box<dyn Leadership>>> {
        Ok(Some(Box::new(SoleProcess)))
    }

    async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close().await;
        }
        self.pool.close().await;
    }
}

struct SoleProcess;

#[async_trait]
impl Leadership for SoleProcess {
    async fn still_leading(&mut self) -> bool {
        true
    }
}

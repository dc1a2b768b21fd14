//! SQLite: the embedded default. One file, nothing to install, one process.
//!
//! SQLite has one writer at a time. Every transaction here writes (at least its audit event), so each
//! begins with `BEGIN IMMEDIATE`, taking the write lock up front: a transaction that started as a
//! reader and later tried to write could otherwise fail with SQLITE_BUSY instead of waiting.
//! WAL journaling with `synchronous = FULL`: a committed referral survives a power cut.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands it every statement through a
//! channel; the hand-off there and back costs more than most of our statements do. So a transaction
//! holds back its plain writes (see [`SqliteTx::write`]) and sends them as one multi-statement command
//! when it next reads or ends: a create's seven writes cross once instead of seven times.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Sqlite, SqliteConnection,
    error::BoxDynError,
    sqlite::{
        SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteSynchronous,
    },
};

use super::{Engine, Leadership, Schema, Store, Tx, queries::impl_tx};
use crate::{
    error::{Error, Result},
    mailbox::MailboxSignals,
};

pub struct SqliteStore {
    pool: SqlitePool,
    signals: Arc<MailboxSignals>,
}

pub(super) struct SqliteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
    held: HeldWrites,
    /// Open from BEGIN until commit or rollback: the transaction's span in the trace.
    _span: tracing::Span,
}

/// Writes not yet sent: their statements, `;`-separated, with `$n` placeholders numbered into one
/// argument list.
#[derive(Default)]
struct HeldWrites {
    sql: String,
    args: SqliteArguments,
    statements: usize,
    /// A write's arguments failed to encode half-way: the list no longer matches the statements.
    broken: bool,
}

/// At most this many statements are held; a large write set goes in several commands.
const MAX_HELD_STATEMENTS: usize = 32;

impl SqliteTx {
    /// Holds back a write whose result nobody reads: `sql` with `$n` placeholders, `bind` adding its
    /// arguments in order. It is sent, with the other held writes, before the transaction's next read
    /// and at the latest when it flushes or commits; an error of the write surfaces there. Not
    /// sending it is undoing it, which is all a rollback to a savepoint needs (see [`Self::discard`]).
    pub(super) async fn write(
        &mut self,
        sql: &'static str,
        bind: impl FnOnce(&mut SqliteArguments) -> std::result::Result<(), BoxDynError>,
    ) -> Result<()> {
        let held = &mut self.held;
        let offset = held.args.len();
        if let Err(e) = bind(&mut held.args) {
            held.broken = true;
            return Err(Error::internal(e));
        }
        renumber(sql, offset, &mut held.sql);
        held.sql.push_str(";\n");
        held.statements += 1;
        if held.statements >= MAX_HELD_STATEMENTS {
            self.conn().await?;
        }
        Ok(())
    }

    /// The connection, once the held writes have gone ahead: what follows reads their effects.
    pub(super) async fn conn(&mut self) -> Result<&mut SqliteConnection> {
        if self.held.statements > 0 || self.held.broken {
            let held = std::mem::take(&mut self.held);
            if held.broken {
                return Err(Error::internal(
                    "a held write could not encode its arguments",
                ));
            }
            sqlx::query_with(sqlx::AssertSqlSafe(held.sql), held.args)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(&mut *self.tx)
    }

    /// Forgets the held writes: all of them came after the savepoint being rolled back to, since a
    /// savepoint is set only on a connection with nothing held (it goes through [`Self::conn`]).
    pub(super) fn discard(&mut self) {
        self.held = HeldWrites::default();
    }
}

/// Appends `sql` to `out` with each `$n` turned into `$(n + offset)`: the statements of one command
/// share one argument list, and sqlx binds a parameter named `$n` to its n-th argument. (Not `?NNN`:
/// to SQLite that fixes the slot number, and sqlx would fill the empty slots below it in order.)
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        match rest[at + 1..at + 1 + digits].parse::<usize>() {
            Ok(n) => {
                out.push('$');
                out.push_str(&(n + offset).to_string());
            }
            // A `$` that is not a placeholder stays as it is.
            Err(_) => out.push('$'),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
}

impl SqliteStore {
    pub async fn connect(
        url: &str,
        schema: Schema,
        signals: Arc<MailboxSignals>,
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
        let pool = SqlitePoolOptions::new()
            // Writers queue in the pool rather than in SQLite's busy handler, which polls with sleeps.
            .max_connections(1)
            .connect_with(options)
            .await?;
        super::prepare_schema(&pool, &sqlx::migrate!("migrations/sqlite"), schema).await?;
        Ok(Self { pool, signals })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    async fn begin(&self) -> Result<Box<dyn Tx>> {
        let span = tracing::info_span!(
            "transaction",
            otel.kind = "client",
            db.system.name = "sqlite"
        );
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(SqliteTx {
            tx,
            held: HeldWrites::default(),
            _span: span,
        }))
    }

    fn signals(&self) -> &Arc<MailboxSignals> {
        &self.signals
    }

    /// SQLite is one process: it always leads.
    async fn try_lead(&self, _lock: &str) -> Result<Option<Box<dyn Leadership>>> {
        Ok(Some(Box::new(SoleProcess)))
    }

    async fn close(&self) {
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

impl_tx!(
    SqliteTx,
    Sqlite,
    lock = "",
    skip_locked = "",
    // Insertion order: SQLite's implicit rowid.
    position = "rowid",
    // One process: MailboxSignals already wakes every waiter.
    notify = ""
);

#[cfg(test)]
mod tests {
    use super::renumber;

    #[test]
    fn placeholders_are_renumbered_past_the_arguments_already_held() {
        let mut out = String::new();
        renumber("UPDATE t SET a = $2 WHERE id = $1", 0, &mut out);
        out.push(';');
        renumber("INSERT INTO u VALUES ($1, $10, '$x', '$')", 2, &mut out);
        assert_eq!(
            out,
            "UPDATE t SET a = $2 WHERE id = $1;INSERT INTO u VALUES ($3, $12, '$x', '$')"
        );
    }
}

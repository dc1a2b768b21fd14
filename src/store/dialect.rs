//! What differs between the engines, named in one trait: [`Dialect`].
//!
//! The SQL of the store is written once (`$n` placeholders, `RETURNING`, `ON CONFLICT`, row-value
//! comparisons: both engines take them) in ordinary Rust generic over `D: Dialect`. A dialect says
//! what each engine does differently (row locks, how it takes several writes at once, how it wakes
//! other processes) and, through the bounds on its associated types, which Rust values the store
//! binds and which row shapes it reads. Those bounds are written here once: Rust carries bounds on a
//! trait's own associated types to every `D: Dialect`, so the store's code needs no `where` clauses.

use chrono::NaiveDate;
use sqlx::{
    Arguments, Database, Encode, Executor, FromRow, IntoArguments, Postgres, Sqlite, Type,
    database::HasStatementCache,
    error::BoxDynError,
    postgres::{PgArguments, PgConnection, PgQueryResult, PgRow},
    sqlite::{SqliteArguments, SqliteConnection, SqliteQueryResult, SqliteRow},
};
use uuid::Uuid;

use super::{
    DbTime,
    held::Sending,
    rows::{AuditRow, ConsentEventRow, ConsentRow, LeafRow, MessageRow, ReferralRow},
    statistics::StatisticsRow,
};

/// One database engine as the store uses it.
pub trait Dialect: Send + Sync + 'static {
    type Db: Database<
            Connection = Self::Connection,
            Arguments = Self::Arguments,
            Row = Self::Row,
            QueryResult = Self::QueryResult,
        > + HasStatementCache;
    type Connection: sqlx::Connection<Database = Self::Db> + Execute<Self::Db>;
    /// Every value type a statement of the store binds.
    type Arguments: Arguments<Database = Self::Db>
        + IntoArguments<Self::Db>
        + for<'a> Bind<&'a str>
        + Bind<String>
        + Bind<Option<String>>
        + for<'a> Bind<Option<&'a str>>
        + for<'a> Bind<&'a Option<String>>
        + Bind<Uuid>
        + Bind<Option<Uuid>>
        + Bind<i64>
        + Bind<i32>
        + Bind<Option<i32>>
        + Bind<Option<bool>>
        + Bind<i16>
        + Bind<bool>
        + Bind<Vec<u8>>
        + Bind<DbTime>
        + Bind<Option<DbTime>>
        + Bind<NaiveDate>
        + Bind<Option<NaiveDate>>;
    /// Every row shape the store reads.
    type Row: Read<ConsentRow>
        + Read<ConsentEventRow>
        + Read<ReferralRow>
        + Read<MessageRow>
        + Read<AuditRow>
        + Read<LeafRow>
        + Read<StatisticsRow>
        + Read<(i64,)>
        + Read<(Option<i64>,)>
        + Read<(Uuid,)>
        + Read<(String,)>
        + Read<(String, String)>
        + Read<(String, String, String)>
        + Read<(i64, i64)>
        + Read<(Uuid, String)>
        + Read<(Option<i64>, bool)>
        + Read<(Uuid, i32)>
        + Read<(i64, Vec<u8>)>
        + Read<(i16, i64, Vec<u8>)>
        + Read<(i64, Option<DbTime>)>
        + Read<(i64, i64, i64, Option<DbTime>)>
        + Read<(String, i64, i64, i64, Option<DbTime>)>
        + Read<(i64, Vec<u8>, DbTime, String)>;
    type QueryResult: RowsAffected;

    /// Appended to a read of rows the transaction will change.
    const LOCK: &'static str;
    /// Appended to the selection of messages to lease: concurrent pullers take different rows.
    const SKIP_LOCKED: &'static str;
    /// The column that orders a mailbox's messages by insertion, for numbering.
    const POSITION: &'static str;
    /// The statement that wakes long-polls in other processes at commit (`$1`: the mailbox).
    const NOTIFY: Option<&'static str>;
    /// How held writes go to the database (see [`super::held`]).
    const SENDING: Sending;
    /// Run in the transaction before a long analytical read (statistics), if anything.
    const BEFORE_LONG_READ: Option<&'static str>;
    /// How a statistics statement counts distinct people per cell (see `super::statistics`).
    const DISTINCT_PEOPLE: DistinctPeople;
    /// After `FROM referrals AS r` in a read of a whole window of referrals (statistics).
    const FULL_SCAN: &'static str;
    /// Before `r.create_time` in a condition that must not be read through `referrals_by_time`:
    /// the statistics' overdue referrals, which the partial indexes on the due dates find.
    const NOT_BY_TIME: &'static str;
    /// How the audit trail finds a person's or a resource's events (see `super::audit_trail`).
    const AUDIT_INDEX: AuditIndex;
    /// Whether statements go with `?` for `$1, $2, …` in order (see `super::sql::placeholders`).
    const ANONYMOUS_PLACEHOLDERS: bool;
}

impl Dialect for Sqlite {
    type Db = Sqlite;
    type Connection = SqliteConnection;
    type Arguments = SqliteArguments;
    type Row = SqliteRow;
    type QueryResult = SqliteQueryResult;

    // One writer at a time (`BEGIN IMMEDIATE`): nothing to lock, nobody to skip.
    const LOCK: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    // Insertion order: SQLite's implicit rowid.
    const POSITION: &'static str = "rowid";
    // One process: `MailboxSignals` already wakes every waiter.
    const NOTIFY: Option<&'static str> = None;
    const SENDING: Sending = Sending::Commands;
    const BEFORE_LONG_READ: Option<&'static str> = None;
    // No `GROUPING SETS`; sets of people instead (`super::sqlite_functions`), grouped in a hash
    // table: no sort of the window, where a sort per subset of the dimensions was.
    const DISTINCT_PEOPLE: DistinctPeople = DistinctPeople::PersonSets;
    // Left to itself the planner reads a year's window through `referrals_by_time`, one row lookup
    // per referral in index order: 2.7 s for 10⁶ referrals against 0.8 s in table order (3.51,
    // bench/RESULTS.md). A statistics window is most of the table; read it in table order.
    const FULL_SCAN: &'static str = " NOT INDEXED";
    // SQLite's way to keep a term from choosing an index: a unary plus. Given the window, the
    // planner walked `referrals_by_time` to find the few overdue referrals (1.9 s for 10⁶).
    const NOT_BY_TIME: &'static str = "+";
    // No GIN: index rows beside each event, written by trigger (migration 0005).
    const AUDIT_INDEX: AuditIndex = AuditIndex::Tables;
    // sqlx binds `$n` by name, which SQLite looks up by a linear walk: `?` binds in order.
    const ANONYMOUS_PLACEHOLDERS: bool = true;
}

impl Dialect for Postgres {
    type Db = Postgres;
    type Connection = PgConnection;
    type Arguments = PgArguments;
    type Row = PgRow;
    type QueryResult = PgQueryResult;

    // NO KEY UPDATE: serialises writers of a row without blocking the KEY SHARE locks that
    // foreign-key checks of other transactions take on it (a message referencing a referral being
    // accepted).
    const LOCK: &'static str = " FOR NO KEY UPDATE";
    const SKIP_LOCKED: &'static str = " FOR NO KEY UPDATE SKIP LOCKED";
    const POSITION: &'static str = "position";
    // Delivered to every listening replica when the transaction commits, not before.
    const NOTIFY: Option<&'static str> = Some("SELECT pg_notify('referral_exchange_mailbox', $1)");
    // One statement per query in PostgreSQL's protocol, and no pipelining in sqlx.
    const SENDING: Sending = Sending::OneStatement;
    // A statistics statement's estimated cost passes JIT's thresholds: compiling it took 1.7 s of a
    // 1.8 s answer over 10⁴ referrals, the work itself 0.1 s. And its sorts of 10⁶ referrals need
    // about 90 MB: at the default work_mem (4 MB) they went to disk, twice as slow. Both for that
    // transaction only.
    const BEFORE_LONG_READ: Option<&'static str> =
        Some("SELECT set_config('jit', 'off', true), set_config('work_mem', '256MB', true)");
    const DISTINCT_PEOPLE: DistinctPeople = DistinctPeople::GroupingSets;
    const FULL_SCAN: &'static str = "";
    // PostgreSQL weighs the indexes itself (and has no unary plus for a time).
    const NOT_BY_TIME: &'static str = "";
    // GIN indexes over the event row's own arrays (migration 0012): three index rows, their
    // foreign-key checks and a trigger less per event.
    const AUDIT_INDEX: AuditIndex = AuditIndex::InTheEvent;
    // PostgreSQL's protocol has only `$n`.
    const ANONYMOUS_PLACEHOLDERS: bool = false;
}

/// How distinct people per cell are counted: they do not add up from smaller cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistinctPeople {
    /// `COUNT(DISTINCT person)` per subset of the dimensions, every subset in one `GROUP BY
    /// GROUPING SETS` (PostgreSQL: one sort per chain of subsets).
    GroupingSets,
    /// The finest cells, grouped in a hash table, collect their people as sets, coarser cells
    /// count the union of theirs (`fine_cells`, `person_count`: SQLite,
    /// `super::sqlite_functions`).
    PersonSets,
}

/// Where the audit trail's person and resource indexes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditIndex {
    /// `audit_event_subjects` and `audit_event_resources`: a row per name and event, joined.
    Tables,
    /// GIN indexes over the event's `subject_pseudonyms` and `resources` as JSON arrays (`@>`).
    InTheEvent,
}

/// Adds a value of type `T` to a statement's arguments.
pub trait Bind<T> {
    fn bind(&mut self, value: T) -> Result<(), BoxDynError>;
}

impl<'t, A: Arguments, T> Bind<T> for A
where
    T: Encode<'t, A::Database> + Type<A::Database> + 't,
{
    fn bind(&mut self, value: T) -> Result<(), BoxDynError> {
        self.add(value)
    }
}

/// Decodes a row into `T` (a [`FromRow`] struct or a tuple).
pub trait Read<T> {
    fn read(&self) -> Result<T, sqlx::Error>;
}

impl<R: sqlx::Row, T> Read<T> for R
where
    T: for<'r> FromRow<'r, R>,
{
    fn read(&self) -> Result<T, sqlx::Error> {
        T::from_row(self)
    }
}

/// A connection as a statement executor.
pub trait Execute<DB: Database>: Send {
    fn executor<'c>(&'c mut self) -> impl Executor<'c, Database = DB>;
}

impl Execute<Sqlite> for SqliteConnection {
    fn executor<'c>(&'c mut self) -> impl Executor<'c, Database = Sqlite> {
        self
    }
}

impl Execute<Postgres> for PgConnection {
    fn executor<'c>(&'c mut self) -> impl Executor<'c, Database = Postgres> {
        self
    }
}

/// How many rows a statement changed.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}

impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}

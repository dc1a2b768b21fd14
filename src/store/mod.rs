//! Storage: SQLite as the embedded default, PostgreSQL for production and for several replicas.
//!
//! A use case opens one [`Tx`], reads what it needs (locking rows it will change), lets the domain
//! decide, writes the result together with its audit event and outgoing messages, and commits. So a
//! change and the record of it land together or not at all.
//!
//! The SQL is written once, in [`queries`], with `$n` placeholders that both engines accept, and
//! instantiated for each engine by a macro; the engine files hold only what truly differs (pool set-up,
//! row locking, how a time is stored). Queries are built at run time: nothing needs a database to
//! compile.
//!
//! Times: PostgreSQL stores `timestamptz`; SQLite stores integer microseconds since the epoch, which
//! compare correctly as numbers ([`DbTime`]). UUIDs are `uuid` and 16-byte blobs respectively.

pub mod group;
mod held;
mod postgres;
mod queries;
mod sqlite;
mod time;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

pub use self::{postgres::PostgresStore, sqlite::SqliteStore, time::DbTime};
use crate::{
    audit::{
        AuditQuery, AuditRecord, StoredAuditEvent,
        merkle::{Hash, Node},
    },
    domain::{
        OrganizationId,
        consent::{Consent, ConsentEvent, ConsentState},
        referral::{DeadlineKind, Kind, Referral, State},
    },
    error::Result,
    mailbox::{MailboxSignals, NewMessage, StoredMessage},
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
pub async fn connect(
    url: &str,
    schema: Schema,
    signals: Arc<MailboxSignals>,
) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::connect(url, schema, signals).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, schema, signals).await?))
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
    use sqlx::migrate::Migrate;
    if schema == Schema::Migrate {
        migrator.run(pool).await?;
        return Ok(());
    }
    let mut conn = pool.acquire().await?;
    // No migrations table at all: nothing was applied.
    let applied = conn
        .list_applied_migrations(&migrator.table_name)
        .await
        .unwrap_or_default();
    let missing: Vec<i64> = migrator
        .iter()
        .map(|m| m.version)
        .filter(|version| !applied.iter().any(|a| a.version == *version))
        .collect();
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

/// The outcome of claiming a `request_id` (AIP-155).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time: go ahead, then [`Tx::complete_request`] with the result.
    New,
    /// Seen before (committed): the first request's fingerprint and stored response.
    Existing {
        fingerprint: String,
        response: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ReferralFilter {
    /// A receiver sees only referrals ever routed to it.
    pub routed_to: Option<OrganizationId>,
    pub state: Option<State>,
    pub kind: Option<Kind>,
    /// The current recipient.
    pub recipient: Option<OrganizationId>,
    /// Any of these pseudonyms (one person under the current and previous keys); empty: anyone.
    pub subject_pseudonyms: Vec<String>,
    pub create_time_start: Option<DateTime<Utc>>,
    pub create_time_end: Option<DateTime<Utc>>,
    /// Only referrals with a deadline passed by this day without the state it requires.
    pub overdue_on: Option<NaiveDate>,
    /// Keyset cursor: strictly after this `(create_time, id)`.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ConsentFilter {
    /// Any of these pseudonyms (one person under the current and previous keys); empty: anyone.
    pub subject_pseudonyms: Vec<String>,
    pub state: Option<ConsentState>,
    /// Needed to tell ACTIVE from EXPIRED.
    pub now: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ConsentEventFilter {
    /// Any of these pseudonyms (one person under the current and previous keys); empty: anyone.
    pub subject_pseudonyms: Vec<String>,
    pub consent_id: Option<Uuid>,
    pub organization: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Keyset cursor: events with a larger id.
    pub after_id: Option<i64>,
    pub limit: i64,
}

/// A consent event with its position in the consent log (for paging).
#[derive(Debug, Clone)]
pub struct StoredConsentEvent {
    pub id: i64,
    pub event: ConsentEvent,
}

/// A leaf as the sequencer appends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLeaf {
    pub leaf_index: i64,
    pub event_sequence: i64,
    pub leaf_hash: Hash,
}

/// A signed checkpoint of the audit log's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub tree_size: i64,
    pub root_hash: Hash,
    pub time: DateTime<Utc>,
    /// The C2SP signed note.
    pub note: String,
}

/// A leaf of the tree with the event row it stands for, as the database holds them now: the event
/// is `None` when its row is gone, which is exactly what an export must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedLeaf {
    pub leaf_index: i64,
    pub event_sequence: i64,
    /// As stored; not necessarily 32 bytes if someone rewrote it.
    pub leaf_hash: Vec<u8>,
    pub event: Option<AuditRecord>,
}

/// One transaction. Dropping it without [`Tx::commit`] rolls everything back.
#[async_trait]
pub trait Tx: Send {
    // --- idempotency (AIP-155)
    /// Claims `request_id` for `organization`. A concurrent claim of the same id waits for this one.
    async fn claim_request(
        &mut self,
        organization: &str,
        request_id: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim>;
    async fn complete_request(
        &mut self,
        organization: &str,
        request_id: &str,
        response: &str,
    ) -> Result<()>;

    // --- consents
    async fn insert_consent(&mut self, consent: &Consent, subject_pseudonym: &str) -> Result<()>;
    /// With `lock`, other transactions that want to change the consent wait for this one.
    async fn get_consent(&mut self, id: Uuid, lock: bool) -> Result<Option<Consent>>;
    /// Those of `ids` that exist, unlocked, in no particular order.
    async fn get_consents(&mut self, ids: &[Uuid]) -> Result<Vec<Consent>>;
    async fn update_consent(&mut self, consent: &Consent) -> Result<()>;
    async fn list_consents(&mut self, filter: &ConsentFilter) -> Result<Vec<Consent>>;
    async fn insert_consent_event(&mut self, event: &ConsentEvent) -> Result<()>;
    async fn list_consent_events(
        &mut self,
        filter: &ConsentEventFilter,
    ) -> Result<Vec<StoredConsentEvent>>;

    // --- referrals
    async fn insert_referral(&mut self, referral: &Referral, subject_pseudonym: &str)
    -> Result<()>;
    async fn get_referral(&mut self, id: Uuid, lock: bool) -> Result<Option<Referral>>;
    /// Those of `ids` that exist, unlocked, in no particular order: one statement for a page of
    /// messages.
    async fn get_referrals(&mut self, ids: &[Uuid]) -> Result<Vec<Referral>>;
    /// Writes every field that can change after creation.
    async fn update_referral(&mut self, referral: &Referral) -> Result<()>;
    /// Records that `recipient` holds the referral from now on, for access and listing.
    async fn insert_route(
        &mut self,
        referral_id: Uuid,
        recipient: &OrganizationId,
        at: DateTime<Utc>,
    ) -> Result<()>;
    async fn list_referrals(&mut self, filter: &ReferralFilter) -> Result<Vec<Referral>>;
    async fn referrals_by_consent(&mut self, consent_id: Uuid) -> Result<Vec<Uuid>>;

    // --- mailboxes
    /// Appends a message to its mailbox, not yet numbered (see [`Tx::number_messages`]). Announces
    /// the mailbox to other replicas at commit (PostgreSQL: by trigger, migration 0006); waking this
    /// process's own waiters is the caller's, after the commit.
    async fn insert_message(&mut self, message: &NewMessage) -> Result<()>;
    /// Numbers the committed, unnumbered messages of `mailbox` with the next sequence numbers, under
    /// the mailbox counter's row lock so that numbering transactions commit in numbering order. Skips
    /// (returns 0) when another transaction holds the counter: it is numbering this mailbox now.
    async fn number_messages(&mut self, mailbox: &str) -> Result<u64>;
    /// Mailboxes that have unnumbered messages published before `published_before`.
    async fn mailboxes_to_number(&mut self, published_before: DateTime<Utc>)
    -> Result<Vec<String>>;
    /// Creates the counter rows of these mailboxes if they are missing. Done once at start: two
    /// transactions inserting the same missing row wait for each other, and batches of group commit
    /// that did so while holding other rows could deadlock.
    async fn ensure_mailboxes(&mut self, organizations: &[String]) -> Result<()>;
    /// Leases up to `max` deliverable messages of `mailbox` (not acknowledged, not dead, fewer than
    /// `max_attempts` deliveries since the last redrive, lease free or expired) in sequence order until
    /// `lease_until`, incrementing their delivery attempt.
    async fn lease_messages(
        &mut self,
        mailbox: &str,
        max: i64,
        max_attempts: i32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<StoredMessage>>;
    /// The messages of `mailbox` among `ids`, locked, in id order; ids of other mailboxes are left
    /// out. One statement for a whole acknowledgement request.
    async fn get_messages(&mut self, mailbox: &str, ids: &[Uuid]) -> Result<Vec<StoredMessage>>;
    async fn acknowledge_messages(&mut self, ids: &[Uuid], now: DateTime<Utc>) -> Result<()>;
    /// Sets the lease end; a time in the past releases the messages for redelivery.
    async fn set_message_leases(&mut self, ids: &[Uuid], lease_until: DateTime<Utc>) -> Result<()>;

    // --- audit
    async fn insert_audit_event(&mut self, record: &AuditRecord) -> Result<()>;
    async fn list_audit_events(&mut self, query: &AuditQuery) -> Result<Vec<StoredAuditEvent>>;

    // --- dead letters, history, stats, deadlines
    /// Moves messages whose last allowed delivery expired unacknowledged to the dead letters, in
    /// `mailbox` or in every mailbox.
    async fn dead_letter_exhausted(
        &mut self,
        mailbox: Option<&str>,
        max_attempts: i32,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredMessage>>;
    async fn list_dead_letters(
        &mut self,
        mailbox: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>>;
    /// Puts dead letters (all of the mailbox's, or those in `ids`) back for delivery.
    async fn redrive_dead_letters(&mut self, mailbox: &str, ids: Option<&[Uuid]>) -> Result<u64>;
    /// Messages of `mailbox` with a sequence above `since`, in order.
    async fn mailbox_history(
        &mut self,
        mailbox: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>>;
    async fn mailbox_stats(&mut self, mailbox: &str, now: DateTime<Utc>) -> Result<MailboxCounts>;
    /// Which of `ids` are still leased (unacknowledged, lease live) in the attempt given.
    async fn live_leases(
        &mut self,
        mailbox: &str,
        ids: &[(Uuid, i32)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>>;
    /// Forgets acknowledged messages acknowledged before `cutoff` (the history retention).
    async fn delete_acknowledged_before(&mut self, cutoff: DateTime<Utc>) -> Result<u64>;
    /// Referrals with a deadline passed by `today` (see `Referral::overdue`) not yet noticed.
    async fn unnoticed_overdue(&mut self, today: NaiveDate, limit: i64) -> Result<Vec<Uuid>>;
    /// Records that a deadline's passing was told; false if it already was.
    async fn insert_overdue_notice(
        &mut self,
        referral_id: Uuid,
        kind: DeadlineKind,
        due: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Wakes long-polls on `mailbox` in every process once this transaction commits.
    async fn signal_mailbox(&mut self, mailbox: &str) -> Result<()>;
    /// What the metric gauges report: per-mailbox counts, overdue referrals, audit log lag.
    async fn gauge_readings(
        &mut self,
        now: DateTime<Utc>,
        today: NaiveDate,
    ) -> Result<GaugeReadings>;

    /// Sends the writes this transaction has held back, if any: an engine may hold writes whose
    /// results nobody reads (inserts, updates by key) and send them together, before the next read
    /// and at the latest here or at commit. A held write's error surfaces at this point.
    async fn flush(&mut self) -> Result<()>;
    async fn commit(self: Box<Self>) -> Result<()>;

    // --- savepoints, for group commit (see `group`)
    /// `SAVEPOINT sp<n>`. Never released: the commit keeps them all, and a release would be one
    /// more round trip per call.
    async fn savepoint(&mut self, n: u64) -> Result<()>;
    /// `ROLLBACK TO SAVEPOINT sp<n>`: undoes what was done since, also after an error.
    async fn rollback_to_savepoint(&mut self, n: u64) -> Result<()>;

    // --- the audit log's Merkle tree (see `audit::merkle`) and consent expiry
    /// Serialises sequencer rounds across the deployment: waits while another round is running.
    async fn lock_audit_sequencer(&mut self) -> Result<()>;
    /// How many leaves the tree has.
    async fn audit_tree_size(&mut self) -> Result<i64>;
    /// Up to `limit` committed events that are not yet leaves, lowest sequence first.
    async fn pending_audit_events(&mut self, limit: i64) -> Result<Vec<StoredAuditEvent>>;
    /// The stored hashes of these perfect subtrees (level 0: leaf hashes); missing ones are absent.
    async fn audit_tree_nodes(&mut self, nodes: &[Node]) -> Result<Vec<(Node, Hash)>>;
    /// Appends leaves and the perfect subtrees they complete, and takes the leaves' events off the
    /// queue of pending events.
    async fn append_audit_leaves(
        &mut self,
        leaves: &[AuditLeaf],
        nodes: &[(Node, Hash)],
    ) -> Result<()>;
    async fn insert_audit_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<()>;
    /// The checkpoint of the largest tree.
    async fn latest_audit_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>>;
    /// Leaves `start..end` in order, each with its event row as it is now.
    async fn audit_leaf_range(&mut self, start: i64, end: i64) -> Result<Vec<ExportedLeaf>>;
    /// Up to `limit` ACTIVE consents whose `expire_time` is at or before `now`, locked, earliest first.
    async fn consents_to_expire(&mut self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Consent>>;
}

/// Readings behind the metric gauges.
#[derive(Debug, Clone, Default)]
pub struct GaugeReadings {
    pub mailboxes: Vec<(String, MailboxCounts)>,
    pub overdue: Vec<(DeadlineKind, i64)>,
    pub audit_pending: i64,
    pub oldest_audit_pending: Option<DateTime<Utc>>,
}

/// Counts behind `GetMailboxStats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxCounts {
    pub pending: i64,
    pub leased: i64,
    pub dead: i64,
    pub oldest_pending_publish_time: Option<DateTime<Utc>>,
}

/// Codes and JSON columns are written by this service only; a value that does not decode means the
/// database was changed behind its back, which is an internal error, not the caller's.
pub(crate) fn corrupt(what: &str) -> crate::error::Error {
    crate::error::Error::internal(format!("stored {what} does not decode"))
}

//! Mailboxes and their messages: appending, numbering, leasing, acknowledging, dead letters.
//!
//! Two rules live here as SQL, once each: a lease is live while `lease_expire_time` is after now
//! (`push_lease_live`), and a mailbox's messages are numbered under its counter's row lock
//! ([`Messages::number_messages`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    DbTime,
    dialect::{Bind, Dialect},
    held::Sending,
    rows::MessageRow,
    sql::{Sql, SqlTx},
    to_json,
};
use crate::{
    error::Result,
    mailbox::{MAX_DELIVERY_ATTEMPTS_EXCEEDED, NewMessage, StoredMessage},
};

/// Counts behind `GetMailboxStats` and the mailbox gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxCounts {
    pub pending: i64,
    pub leased: i64,
    pub dead: i64,
    pub oldest_pending_publish_time: Option<DateTime<Utc>>,
}

/// The columns of a message, for every query that reads messages.
const MESSAGE_COLUMNS: &str = "id, mailbox, sequence, message_type, referral_id, consent_id, \
    state_change, publish_time, delivery_attempt, redrive_base, lease_expire_time, ack_time, \
    dead_letter_time, dead_letter_reason, deadline_kind, deadline_date, failed_message_id, \
    failed_mailbox";

/// Appends the condition that a message's lease is live at `now`: it was delivered and its lease
/// has not run out. A message with no lease (never delivered, acknowledged, redriven) is not
/// live, and in SQL neither is `NOT (…)` of it: wrap it in `lease_expire_time IS NULL OR NOT …` for
/// "free to lease".
pub(super) fn push_lease_live<A>(q: &mut Sql<A>, now: DateTime<Utc>)
where
    A: sqlx::Arguments + Bind<DbTime>,
{
    q.push("(lease_expire_time > ").bind(DbTime(now)).push(")");
}

/// Appends the condition that a message can be leased at `now`: never leased, or its lease over.
fn push_lease_free<A>(q: &mut Sql<A>, now: DateTime<Utc>)
where
    A: sqlx::Arguments + Bind<DbTime>,
{
    q.push("(lease_expire_time IS NULL OR NOT ");
    push_lease_live(q, now);
    q.push(")");
}

#[async_trait]
pub trait Messages {
    /// Appends a message to its mailbox, not yet numbered (see [`Messages::number_messages`]).
    /// Announces the mailbox to other replicas at commit (PostgreSQL: by trigger, migration 0006);
    /// waking this process's own waiters is the caller's, after the commit.
    async fn insert_message(&mut self, message: &NewMessage) -> Result<()>;
    /// Numbers the committed, unnumbered messages of `mailbox` with the next sequence numbers,
    /// under the mailbox counter's row lock so that numbering transactions commit in numbering
    /// order. Skips (returns 0) when another transaction holds the counter: it is numbering this
    /// mailbox now.
    async fn number_messages(&mut self, mailbox: &str) -> Result<u64>;
    /// Mailboxes that have unnumbered messages published before `published_before`.
    async fn mailboxes_to_number(&mut self, published_before: DateTime<Utc>)
    -> Result<Vec<String>>;
    /// Creates the counter rows of these mailboxes if they are missing. Done once at start: two
    /// transactions inserting the same missing row wait for each other, and batches of group
    /// commit that did so while holding other rows could deadlock.
    async fn ensure_mailboxes(&mut self, organizations: &[String]) -> Result<()>;
    /// Leases up to `max` deliverable messages of `mailbox` (not acknowledged, not dead, fewer than
    /// `max_attempts` deliveries since the last redrive, lease free or expired) in sequence order
    /// until `lease_until`, incrementing their delivery attempt.
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
    /// Which of `ids` are still leased (unacknowledged, lease live) in the attempt given.
    async fn live_leases(
        &mut self,
        mailbox: &str,
        ids: &[(Uuid, i32)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>>;
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
    /// Forgets acknowledged messages acknowledged before `cutoff` (the history retention).
    async fn delete_acknowledged_before(&mut self, cutoff: DateTime<Utc>) -> Result<u64>;
    /// Wakes long-polls on `mailbox` in every process once this transaction commits.
    async fn signal_mailbox(&mut self, mailbox: &str) -> Result<()>;
}

impl<D: Dialect> SqlTx<D> {
    /// Sets `column` to `time` on the messages `ids`, with `also` (further fixed assignments).
    async fn set_message_time(
        &mut self,
        ids: &[Uuid],
        column: &str,
        time: DateTime<Utc>,
        also: &str,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut q = Self::sql(format!("UPDATE messages SET {column} = "));
        q.bind(DbTime(time))
            .push(also)
            .push(" WHERE id IN ")
            .list(ids.iter().copied());
        self.execute(q).await.map(drop)
    }
}

/// Decodes message rows, in sequence order.
fn in_sequence(rows: Vec<MessageRow>) -> Result<Vec<StoredMessage>> {
    let mut messages = rows
        .into_iter()
        .map(MessageRow::into_domain)
        .collect::<Result<Vec<_>>>()?;
    messages.sort_by_key(|m| m.sequence);
    Ok(messages)
}

#[async_trait]
impl<D: Dialect> Messages for SqlTx<D> {
    async fn insert_message(&mut self, m: &NewMessage) -> Result<()> {
        let state_change = m.state_change.as_ref().map(to_json).transpose()?;
        self.write(
            "INSERT INTO messages (id, mailbox, message_type, referral_id, consent_id, \
               state_change, publish_time, deadline_kind, deadline_date, failed_message_id, \
               failed_mailbox) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            |args| {
                args.bind(m.id)?;
                args.bind(m.mailbox.as_str())?;
                args.bind(m.message_type.as_str())?;
                args.bind(m.referral_id)?;
                args.bind(m.consent_id)?;
                args.bind(state_change)?;
                args.bind(DbTime(m.publish_time))?;
                args.bind(m.deadline.map(|(kind, _)| kind.as_str()))?;
                args.bind(m.deadline.map(|(_, date)| date))?;
                args.bind(m.failed.as_ref().map(|(id, _)| *id))?;
                args.bind(m.failed.as_ref().map(|(_, mailbox)| mailbox.as_str()))
            },
        )
        .await
    }

    async fn number_messages(&mut self, mailbox: &str) -> Result<u64> {
        // The counter, if this transaction can take it, and whether it exists at all: no row may
        // mean "locked" (skipped) or "missing", and only a missing one is created. Inserting over
        // a locked row would wait for its locker, which is what SKIP LOCKED is to avoid.
        let take = format!(
            "SELECT (SELECT last_sequence FROM mailboxes WHERE organization = $1{}), \
               EXISTS (SELECT 1 FROM mailboxes WHERE organization = $1)",
            D::SKIP_LOCKED
        );
        let (mut last, present) = self
            .fetch_one::<(Option<i64>, bool)>(Self::sql(take.as_str()).arg(mailbox))
            .await?;
        if !present {
            let create = Self::sql(
                "INSERT INTO mailboxes (organization, last_sequence) VALUES ($1, 0) \
                 ON CONFLICT (organization) DO NOTHING",
            )
            .arg(mailbox);
            self.execute(create).await?;
            (last, _) = self
                .fetch_one::<(Option<i64>, bool)>(Self::sql(take).arg(mailbox))
                .await?;
        }
        // Locked by a transaction that is numbering this mailbox now.
        let Some(last) = last else { return Ok(0) };
        // A statement of its own, so that it reads the messages as of after the counter was
        // taken: a transaction that numbered before us has committed by then, and what it
        // numbered is not numbered again.
        let number = format!(
            "UPDATE messages SET sequence = $2 + numbered.n \
             FROM (SELECT id, row_number() OVER (ORDER BY {}) AS n \
                   FROM messages WHERE mailbox = $1 AND sequence IS NULL) numbered \
             WHERE messages.id = numbered.id",
            D::POSITION
        );
        if D::SENDING == Sending::OneStatement {
            // An engine that takes data-modifying WITH clauses (see `Sending`) numbers and
            // advances the counter in one round trip.
            let number_and_advance = format!(
                "WITH done AS ({number} RETURNING 1), \
                   advanced AS (UPDATE mailboxes SET last_sequence = $2 + (SELECT count(*) FROM done) \
                     WHERE organization = $1 AND EXISTS (SELECT 1 FROM done)) \
                 SELECT count(*) FROM done"
            );
            let (numbered,) = self
                .fetch_one::<(i64,)>(Self::sql(number_and_advance).arg(mailbox).arg(last))
                .await?;
            return Ok(u64::try_from(numbered).unwrap_or(0));
        }
        let numbered = self
            .execute(Self::sql(number).arg(mailbox).arg(last))
            .await?;
        if numbered > 0 {
            let advance =
                Self::sql("UPDATE mailboxes SET last_sequence = $2 WHERE organization = $1")
                    .arg(mailbox)
                    .arg(last + i64::try_from(numbered).unwrap_or(i64::MAX));
            self.execute(advance).await?;
        }
        Ok(numbered)
    }

    async fn mailboxes_to_number(
        &mut self,
        published_before: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let select = Self::sql(
            "SELECT DISTINCT mailbox FROM messages \
             WHERE sequence IS NULL AND publish_time < $1 ORDER BY mailbox",
        )
        .arg(DbTime(published_before));
        let mailboxes: Vec<(String,)> = self.fetch_all(select).await?;
        Ok(mailboxes.into_iter().map(|(m,)| m).collect())
    }

    async fn ensure_mailboxes(&mut self, organizations: &[String]) -> Result<()> {
        if organizations.is_empty() {
            return Ok(());
        }
        let mut insert = Self::sql("INSERT INTO mailboxes (organization, last_sequence) VALUES ");
        for (i, organization) in organizations.iter().enumerate() {
            if i > 0 {
                insert.push(", ");
            }
            insert.push("(").bind(organization.as_str()).push(", 0)");
        }
        insert.push(" ON CONFLICT (organization) DO NOTHING");
        self.execute(insert).await.map(drop)
    }

    async fn lease_messages(
        &mut self,
        mailbox: &str,
        max: i64,
        max_attempts: i32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<StoredMessage>> {
        let mut q = Self::sql("UPDATE messages SET delivery_attempt = delivery_attempt + 1, ");
        q.push("lease_expire_time = ")
            .bind(DbTime(lease_until))
            .push(" WHERE id IN (SELECT id FROM messages WHERE mailbox = ")
            .bind(mailbox)
            .push(
                " AND ack_time IS NULL AND sequence IS NOT NULL AND dead_letter_time IS NULL \
                 AND delivery_attempt - redrive_base < ",
            )
            .bind(max_attempts)
            .push(" AND ");
        push_lease_free(&mut q, now);
        q.push(" ORDER BY sequence LIMIT ")
            .bind(max)
            .push(D::SKIP_LOCKED)
            .push(") RETURNING ")
            .push(MESSAGE_COLUMNS);
        in_sequence(self.fetch_all(q).await?)
    }

    async fn get_messages(&mut self, mailbox: &str, ids: &[Uuid]) -> Result<Vec<StoredMessage>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // By primary key alone, then the mailbox checked here: with `mailbox = …` in the WHERE
        // clause, PostgreSQL planning on young statistics walked the whole mailbox through
        // (mailbox, sequence) to find one id (0.8 ms an acknowledgement at 500 messages, growing
        // with the mailbox). Rows come back and are locked in id order, the order every other
        // acknowledgement locks in.
        let mut q = Self::sql(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN "
        ));
        q.list(ids.iter().copied())
            .push(" ORDER BY id")
            .push(D::LOCK);
        let rows: Vec<MessageRow> = self.fetch_all(q).await?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let message = row.into_domain()?;
            if message.mailbox == mailbox {
                messages.push(message);
            }
        }
        Ok(messages)
    }

    async fn acknowledge_messages(&mut self, ids: &[Uuid], now: DateTime<Utc>) -> Result<()> {
        self.set_message_time(ids, "ack_time", now, ", lease_expire_time = NULL")
            .await
    }

    async fn set_message_leases(&mut self, ids: &[Uuid], lease_until: DateTime<Utc>) -> Result<()> {
        self.set_message_time(ids, "lease_expire_time", lease_until, "")
            .await
    }

    async fn live_leases(
        &mut self,
        mailbox: &str,
        ids: &[(Uuid, i32)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = Self::sql("SELECT id, delivery_attempt FROM messages WHERE mailbox = ");
        q.bind(mailbox)
            .push(" AND ack_time IS NULL AND dead_letter_time IS NULL AND ");
        push_lease_live(&mut q, now);
        q.push(" AND id IN ").list(ids.iter().map(|(id, _)| *id));
        let rows: Vec<(Uuid, i32)> = self.fetch_all(q).await?;
        Ok(rows
            .into_iter()
            .filter(|row| ids.contains(row))
            .map(|(id, _)| id)
            .collect())
    }

    async fn dead_letter_exhausted(
        &mut self,
        mailbox: Option<&str>,
        max_attempts: i32,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredMessage>> {
        let mut q = Self::sql("UPDATE messages SET dead_letter_time = ");
        q.bind(DbTime(now))
            .push(", dead_letter_reason = ")
            .bind(MAX_DELIVERY_ATTEMPTS_EXCEEDED)
            .push(
                ", lease_expire_time = NULL \
                 WHERE ack_time IS NULL AND dead_letter_time IS NULL \
                 AND delivery_attempt - redrive_base >= ",
            )
            .bind(max_attempts)
            // Delivered, and the last delivery's lease is over.
            .push(" AND NOT ");
        push_lease_live(&mut q, now);
        if let Some(mailbox) = mailbox {
            q.push(" AND mailbox = ").bind(mailbox);
        }
        q.push(" RETURNING ").push(MESSAGE_COLUMNS);
        let rows: Vec<MessageRow> = self.fetch_all(q).await?;
        let mut dead = rows
            .into_iter()
            .map(MessageRow::into_domain)
            .collect::<Result<Vec<_>>>()?;
        dead.sort_by(|a, b| (&a.mailbox, a.sequence).cmp(&(&b.mailbox, b.sequence)));
        Ok(dead)
    }

    async fn list_dead_letters(
        &mut self,
        mailbox: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>> {
        let select = Self::sql(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE mailbox = $1 AND dead_letter_time IS NOT NULL AND sequence > $2 \
             ORDER BY sequence LIMIT $3"
        ))
        .arg(mailbox)
        .arg(after_sequence)
        .arg(limit);
        in_sequence(self.fetch_all(select).await?)
    }

    async fn redrive_dead_letters(&mut self, mailbox: &str, ids: Option<&[Uuid]>) -> Result<u64> {
        if ids.is_some_and(<[Uuid]>::is_empty) {
            return Ok(0);
        }
        let mut q = Self::sql(
            "UPDATE messages SET dead_letter_time = NULL, dead_letter_reason = NULL, \
               lease_expire_time = NULL, redrive_base = delivery_attempt \
             WHERE dead_letter_time IS NOT NULL AND mailbox = ",
        );
        q.bind(mailbox);
        if let Some(ids) = ids {
            q.push(" AND id IN ").list(ids.iter().copied());
        }
        let redriven = self.execute(q).await?;
        if redriven > 0 {
            self.signal_mailbox(mailbox).await?;
        }
        Ok(redriven)
    }

    async fn mailbox_history(
        &mut self,
        mailbox: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>> {
        let select = Self::sql(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE mailbox = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
        ))
        .arg(mailbox)
        .arg(since)
        .arg(limit);
        in_sequence(self.fetch_all(select).await?)
    }

    async fn mailbox_stats(&mut self, mailbox: &str, now: DateTime<Utc>) -> Result<MailboxCounts> {
        let mut q = Self::sql("SELECT ");
        push_counts(&mut q, now);
        q.push(" FROM messages WHERE mailbox = ")
            .bind(mailbox)
            .push(" AND ack_time IS NULL");
        let (pending, leased, dead, oldest) =
            self.fetch_one::<(i64, i64, i64, Option<DbTime>)>(q).await?;
        Ok(MailboxCounts {
            pending,
            leased,
            dead,
            oldest_pending_publish_time: oldest.map(|t| t.0),
        })
    }

    async fn delete_acknowledged_before(&mut self, cutoff: DateTime<Utc>) -> Result<u64> {
        let delete = Self::sql("DELETE FROM messages WHERE ack_time IS NOT NULL AND ack_time < $1")
            .arg(DbTime(cutoff));
        self.execute(delete).await
    }

    async fn signal_mailbox(&mut self, mailbox: &str) -> Result<()> {
        if let Some(notify) = D::NOTIFY {
            self.execute(Self::sql(notify).arg(mailbox)).await?;
        }
        Ok(())
    }
}

/// Appends the columns of [`MailboxCounts`] over unacknowledged messages: pending, leased, dead,
/// and the oldest pending publish time.
pub(super) fn push_counts<A>(q: &mut Sql<A>, now: DateTime<Utc>)
where
    A: sqlx::Arguments + Bind<DbTime>,
{
    q.push("COALESCE(SUM(CASE WHEN dead_letter_time IS NULL AND ");
    push_lease_free(q, now);
    q.push(" THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN dead_letter_time IS NULL AND ");
    push_lease_live(q, now);
    q.push(
        " THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN dead_letter_time IS NOT NULL THEN 1 ELSE 0 END), 0), \
         MIN(CASE WHEN dead_letter_time IS NULL THEN publish_time END)",
    );
}

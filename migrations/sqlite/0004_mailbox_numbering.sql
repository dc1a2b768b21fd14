-- Messages are numbered when their mailbox is read, not when they are written (see the PostgreSQL
-- migration of the same number for why). SQLite cannot drop a NOT NULL constraint in place, so the
-- table is rebuilt (in rowid order, so that rowid keeps giving the insertion order).
CREATE TABLE messages_new (
    id                  BLOB PRIMARY KEY,
    mailbox             TEXT NOT NULL,
    sequence            INTEGER,
    message_type        TEXT NOT NULL,
    referral_id         BLOB REFERENCES referrals (id),
    consent_id          BLOB REFERENCES consents (id),
    state_change        TEXT,
    publish_time        INTEGER NOT NULL,
    delivery_attempt    INTEGER NOT NULL DEFAULT 0,
    lease_expire_time   INTEGER,
    ack_time            INTEGER,
    dead_letter_time    INTEGER,
    dead_letter_reason  TEXT,
    redrive_base        INTEGER NOT NULL DEFAULT 0,
    deadline_kind       TEXT,
    deadline_date       TEXT,
    failed_message_id   BLOB,
    failed_mailbox      TEXT,
    CONSTRAINT messages_sequence_unique UNIQUE (mailbox, sequence)
);
INSERT INTO messages_new (id, mailbox, sequence, message_type, referral_id, consent_id, state_change, publish_time,
    delivery_attempt, lease_expire_time, ack_time, dead_letter_time, dead_letter_reason, redrive_base, deadline_kind,
    deadline_date, failed_message_id, failed_mailbox)
  SELECT id, mailbox, sequence, message_type, referral_id, consent_id, state_change, publish_time, delivery_attempt,
    lease_expire_time, ack_time, dead_letter_time, dead_letter_reason, redrive_base, deadline_kind, deadline_date,
    failed_message_id, failed_mailbox
  FROM messages ORDER BY rowid;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_pending ON messages (mailbox, sequence) WHERE ack_time IS NULL AND dead_letter_time IS NULL;
CREATE INDEX messages_dead ON messages (mailbox, sequence) WHERE dead_letter_time IS NOT NULL;
CREATE INDEX messages_acknowledged ON messages (ack_time) WHERE ack_time IS NOT NULL;
CREATE INDEX messages_unnumbered ON messages (mailbox) WHERE sequence IS NULL;

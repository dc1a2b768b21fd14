-- Messages are numbered when their mailbox is read, not when they are written: a write no longer
-- locks the mailbox's counter row until it commits, which had every state change of every referral
-- wait for the one before (all of them go to Kela's mailbox). Whoever reads a mailbox (a pull, the
-- history, the sweeper) first numbers its committed, unnumbered messages in one transaction under the
-- counter's row lock; numbering transactions therefore commit in numbering order, and a reader paging
-- the history by sequence still never misses a message.
ALTER TABLE messages ALTER COLUMN sequence DROP NOT NULL;
-- Insertion order, to number messages in: roughly the order they were written.
ALTER TABLE messages ADD COLUMN position BIGSERIAL;
CREATE INDEX messages_unnumbered ON messages (mailbox, position) WHERE sequence IS NULL;

-- Delivery that survives real operations (dead letters, payloads of the new message types) and
-- deadlines Kela is told about when they pass.

ALTER TABLE messages ADD COLUMN dead_letter_time INTEGER;
ALTER TABLE messages ADD COLUMN dead_letter_reason TEXT;
-- delivery_attempt when last redriven: the attempts since count toward the limit.
ALTER TABLE messages ADD COLUMN redrive_base INTEGER NOT NULL DEFAULT 0;
-- REFERRAL_OVERDUE: which deadline passed.
ALTER TABLE messages ADD COLUMN deadline_kind TEXT;
ALTER TABLE messages ADD COLUMN deadline_date TEXT;
-- REFERRAL_DELIVERY_FAILED: which message was given up, in which mailbox.
ALTER TABLE messages ADD COLUMN failed_message_id BLOB;
ALTER TABLE messages ADD COLUMN failed_mailbox TEXT;

-- What a puller looks for: live messages of one mailbox in sequence order.
DROP INDEX messages_pending;
CREATE INDEX messages_pending ON messages (mailbox, sequence)
    WHERE ack_time IS NULL AND dead_letter_time IS NULL;
CREATE INDEX messages_dead ON messages (mailbox, sequence) WHERE dead_letter_time IS NOT NULL;
-- Retention sweeps acknowledged messages by age.
CREATE INDEX messages_acknowledged ON messages (ack_time) WHERE ack_time IS NOT NULL;

ALTER TABLE referrals ADD COLUMN completion_due_date TEXT;
ALTER TABLE referrals ADD COLUMN receive_due_date TEXT;
CREATE INDEX referrals_receive_due ON referrals (receive_due_date) WHERE state = 'REQUESTED';
CREATE INDEX referrals_assessment_due ON referrals (assessment_due_date)
    WHERE state IN ('RECEIVED', 'ACCEPTED', 'IN_PROGRESS');
CREATE INDEX referrals_completion_due ON referrals (completion_due_date)
    WHERE state IN ('RECEIVED', 'ACCEPTED', 'IN_PROGRESS');

-- One REFERRAL_OVERDUE per deadline: a forward starts new deadlines, with new due dates.
CREATE TABLE overdue_notices (
    referral_id     BLOB NOT NULL REFERENCES referrals (id),
    deadline_kind   TEXT NOT NULL,
    due_date        TEXT NOT NULL,
    notice_time     INTEGER NOT NULL,
    PRIMARY KEY (referral_id, deadline_kind, due_date)
);

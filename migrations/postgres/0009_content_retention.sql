-- Personal content is kept while a referral is open and for --content-retention-days after it closes
-- (a consent: after it stops being ACTIVE), then erased: the sealed columns are emptied and this time
-- set, leaving the coded skeleton. timestamptz, as every time here.
ALTER TABLE referrals ADD COLUMN content_erase_time TIMESTAMPTZ;
ALTER TABLE consents ADD COLUMN content_erase_time TIMESTAMPTZ;

-- What the retention round looks for: closed referrals whose content is still there, oldest first.
CREATE INDEX referrals_content_to_erase ON referrals (update_time, id)
    WHERE content_erase_time IS NULL AND state IN ('COMPLETED', 'REJECTED', 'CANCELLED');
-- Consents whose content is still there (the round decides which are no longer ACTIVE).
CREATE INDEX consents_content_to_erase ON consents (update_time, id)
    WHERE content_erase_time IS NULL;
-- Idempotency records are forgotten after the same period (they hold the first response in full).
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (create_time);

-- The coded skeleton statistics read (issue 17; src/domain/statistics.rs `Skeleton`): codes, a month,
-- counts of working days and deadline flags, computed by the service whenever it writes a referral.
-- None of it is personal content, so it survives the erasure of that content, and statistics never
-- need to read the content at all.

-- YYYY-MM of create_time in Europe/Helsinki.
ALTER TABLE referrals ADD COLUMN create_month TEXT;
-- Finnish working days from the day of creation (not counted) to the day of receipt by the current
-- recipient; NULL until received.
ALTER TABLE referrals ADD COLUMN receipt_working_days INTEGER;
-- Received on or before receive_due_date (0/1); NULL until received.
ALTER TABLE referrals ADD COLUMN received_within_deadline INTEGER;
-- When the referral first became IN_PROGRESS (microseconds since the epoch).
ALTER TABLE referrals ADD COLUMN assessment_start_time INTEGER;
-- The assessment started on or before assessment_due_date (0/1); NULL without a start or a due date.
ALTER TABLE referrals ADD COLUMN assessment_started_within_deadline INTEGER;

-- Backfill. SQLite knows no time zones: Helsinki time is UTC+2, +3 from the last Sunday of March
-- 01:00 UTC to the last Sunday of October 01:00 UTC (the EU rule, exact since 1996). The start of an
-- assessment comes from the JSON history, to the millisecond. receipt_working_days of rows received
-- before this migration counts weekdays (SQL does not know Finnish holidays: a holiday in between
-- counts as a working day); new writes use the real calendar.
CREATE TEMP TABLE statistics_backfill AS
SELECT id,
       datetime(create_time / 1000000, 'unixepoch', CASE WHEN create_time / 1000000 >= CAST(strftime('%s', strftime('%Y', create_time / 1000000, 'unixepoch') || '-03-31', '-6 days', 'weekday 0', '+1 hour') AS INTEGER) AND create_time / 1000000 < CAST(strftime('%s', strftime('%Y', create_time / 1000000, 'unixepoch') || '-10-31', '-6 days', 'weekday 0', '+1 hour') AS INTEGER) THEN '+3 hours' ELSE '+2 hours' END) AS created,
       CASE WHEN receive_time IS NOT NULL THEN datetime(receive_time / 1000000, 'unixepoch', CASE WHEN receive_time / 1000000 >= CAST(strftime('%s', strftime('%Y', receive_time / 1000000, 'unixepoch') || '-03-31', '-6 days', 'weekday 0', '+1 hour') AS INTEGER) AND receive_time / 1000000 < CAST(strftime('%s', strftime('%Y', receive_time / 1000000, 'unixepoch') || '-10-31', '-6 days', 'weekday 0', '+1 hour') AS INTEGER) THEN '+3 hours' ELSE '+2 hours' END) END AS received,
       (SELECT MIN(json_extract(e.value, '$.time')) FROM json_each(referrals.history) AS e WHERE json_extract(e.value, '$.state') = 'IN_PROGRESS') AS started
FROM referrals;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3660)
UPDATE referrals SET
    create_month = strftime('%Y-%m', b.created),
    receipt_working_days = CASE WHEN b.received IS NOT NULL THEN (
        SELECT COUNT(*) FROM n
        WHERE i <= julianday(date(b.received)) - julianday(date(b.created))
          AND strftime('%w', date(b.created), '+' || i || ' days') NOT IN ('0', '6')) END,
    received_within_deadline = CASE WHEN b.received IS NOT NULL
        THEN date(b.received) <= receive_due_date END,
    assessment_start_time = CASE WHEN b.started IS NOT NULL
        THEN CAST(strftime('%s', b.started) AS INTEGER) * 1000000
             + CAST(CAST(strftime('%f', b.started) AS REAL) * 1000000 AS INTEGER) % 1000000 END
FROM statistics_backfill AS b
WHERE b.id = referrals.id;

UPDATE referrals SET assessment_started_within_deadline =
    date(datetime(assessment_start_time / 1000000, 'unixepoch', CASE WHEN assessment_start_time / 1000000 >= CAST(strftime('%s', strftime('%Y', assessment_start_time / 1000000, 'unixepoch') || '-03-31', '-6 days', 'weekday 0', '+1 hour') AS INTEGER) AND assessment_start_time / 1000000 < CAST(strftime('%s', strftime('%Y', assessment_start_time / 1000000, 'unixepoch') || '-10-31', '-6 days', 'weekday 0', '+1 hour') AS INTEGER) THEN '+3 hours' ELSE '+2 hours' END)) <= assessment_due_date
WHERE assessment_start_time IS NOT NULL AND assessment_due_date IS NOT NULL;

DROP TABLE statistics_backfill;

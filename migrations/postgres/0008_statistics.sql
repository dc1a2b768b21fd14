-- The coded skeleton statistics read (issue 17; src/domain/statistics.rs `Skeleton`): codes, a month,
-- counts of working days and deadline flags, computed by the service whenever it writes a referral.
-- None of it is personal content, so it survives the erasure of that content, and statistics never
-- need to read the content at all.

-- YYYY-MM of create_time in Europe/Helsinki.
ALTER TABLE referrals ADD COLUMN create_month TEXT;
-- Finnish working days from the day of creation (not counted) to the day of receipt by the current
-- recipient; NULL until received.
ALTER TABLE referrals ADD COLUMN receipt_working_days INTEGER;
-- Received on or before receive_due_date; NULL until received.
ALTER TABLE referrals ADD COLUMN received_within_deadline BOOLEAN;
-- When the referral first became IN_PROGRESS.
ALTER TABLE referrals ADD COLUMN assessment_start_time TIMESTAMPTZ;
-- The assessment started on or before assessment_due_date; NULL without a start or a due date.
ALTER TABLE referrals ADD COLUMN assessment_started_within_deadline BOOLEAN;

-- Backfill. Exact, except receipt_working_days: SQL does not know Finnish holidays, so rows received
-- before this migration count weekdays (a holiday in between counts as a working day). New writes
-- use the real calendar.
UPDATE referrals SET
    create_month = to_char(create_time AT TIME ZONE 'Europe/Helsinki', 'YYYY-MM'),
    receipt_working_days = CASE WHEN receive_time IS NOT NULL THEN (
        SELECT COUNT(*) FROM generate_series(
            (create_time AT TIME ZONE 'Europe/Helsinki')::date + 1,
            (receive_time AT TIME ZONE 'Europe/Helsinki')::date,
            interval '1 day') AS d
        WHERE EXTRACT(ISODOW FROM d) < 6) END,
    received_within_deadline =
        (receive_time AT TIME ZONE 'Europe/Helsinki')::date <= receive_due_date,
    assessment_start_time = (
        SELECT MIN((e ->> 'time')::timestamptz) FROM jsonb_array_elements(history::jsonb) AS e
        WHERE e ->> 'state' = 'IN_PROGRESS');
UPDATE referrals SET assessment_started_within_deadline =
    (assessment_start_time AT TIME ZONE 'Europe/Helsinki')::date <= assessment_due_date
WHERE assessment_start_time IS NOT NULL;

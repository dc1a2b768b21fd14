-- Integer month and recipient keys for referral statistics (issue 17; src/store/statistics.rs):
-- sorting 10⁶ referrals by the text month and recipient took a third of the time of counting
-- distinct people per subset. Both are coded skeleton, as migration 0008's and 0010's columns.

-- The month of creation as a number, year × 100 + month (202703 for "2027-03"), derived from
-- create_month by the database itself, so that it is true to it by construction.
ALTER TABLE referrals ADD COLUMN create_month_number INTEGER GENERATED ALWAYS AS (
    CAST(substr(create_month, 1, 4) AS INTEGER) * 100 + CAST(substr(create_month, 6, 2) AS INTEGER)
) STORED;

-- One small integer per organisation that has held a referral, as `persons` for pseudonyms: a
-- row per organisation, never per referral.
CREATE TABLE recipients (
    id              INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization    TEXT NOT NULL UNIQUE
);

-- recipients.id of recipient, set by the database whenever the recipient is written (below).
ALTER TABLE referrals ADD COLUMN recipient_id INTEGER;

INSERT INTO recipients (organization)
    SELECT DISTINCT recipient FROM referrals ORDER BY recipient;
UPDATE referrals r SET recipient_id = o.id FROM recipients o WHERE o.organization = r.recipient;
ALTER TABLE referrals ALTER COLUMN recipient_id SET NOT NULL;

-- As referral_person (0010): in the writing statement itself, and two transactions adding the same
-- organisation at once agree.
CREATE FUNCTION referral_recipient() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT id INTO NEW.recipient_id FROM recipients WHERE organization = NEW.recipient;
    IF NEW.recipient_id IS NULL THEN
        INSERT INTO recipients (organization) VALUES (NEW.recipient)
            ON CONFLICT (organization) DO NOTHING;
        SELECT id INTO NEW.recipient_id FROM recipients WHERE organization = NEW.recipient;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER referrals_recipient BEFORE INSERT ON referrals
    FOR EACH ROW EXECUTE FUNCTION referral_recipient();
CREATE TRIGGER referrals_recipient_change BEFORE UPDATE OF recipient ON referrals
    FOR EACH ROW WHEN (OLD.recipient IS DISTINCT FROM NEW.recipient)
    EXECUTE FUNCTION referral_recipient();

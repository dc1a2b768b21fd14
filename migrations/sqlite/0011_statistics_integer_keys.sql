-- Integer month and recipient keys for referral statistics (issue 17; src/store/statistics.rs):
-- sorting 10⁶ referrals by the text month and recipient took a third of the time of counting
-- distinct people per subset. Both are coded skeleton, as migration 0008's and 0010's columns.

-- The month of creation as a number, year × 100 + month (202703 for "2027-03"), derived from
-- create_month by the database itself, so that it is true to it by construction. (SQLite can only
-- add a computed column as VIRTUAL: computed when read.)
ALTER TABLE referrals ADD COLUMN create_month_number INTEGER GENERATED ALWAYS AS (
    CAST(substr(create_month, 1, 4) AS INTEGER) * 100 + CAST(substr(create_month, 6, 2) AS INTEGER)
) VIRTUAL;

-- One small integer per organisation that has held a referral, as `persons` for pseudonyms: a
-- row per organisation, never per referral.
CREATE TABLE recipients (
    id              INTEGER PRIMARY KEY,
    organization    TEXT NOT NULL UNIQUE
);

-- recipients.id of recipient, set by the database whenever the recipient is written (below).
ALTER TABLE referrals ADD COLUMN recipient_id INTEGER;

INSERT INTO recipients (organization)
    SELECT DISTINCT recipient FROM referrals ORDER BY recipient;
UPDATE referrals SET
    recipient_id = (SELECT o.id FROM recipients o WHERE o.organization = referrals.recipient);

-- The person and the recipient of a new referral in one update of the row just inserted (0010's
-- trigger, which set only the person, is replaced: one write of the row after the insert, not two).
DROP TRIGGER referrals_person;
CREATE TRIGGER referrals_person AFTER INSERT ON referrals
BEGIN
    INSERT OR IGNORE INTO persons (pseudonym) VALUES (NEW.subject_pseudonym);
    INSERT OR IGNORE INTO recipients (organization) VALUES (NEW.recipient);
    UPDATE referrals SET
        person_id = (SELECT id FROM persons WHERE pseudonym = NEW.subject_pseudonym),
        recipient_id = (SELECT id FROM recipients WHERE organization = NEW.recipient)
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER referrals_recipient AFTER UPDATE OF recipient ON referrals
    WHEN OLD.recipient IS NOT NEW.recipient
BEGIN
    INSERT OR IGNORE INTO recipients (organization) VALUES (NEW.recipient);
    UPDATE referrals SET
        recipient_id = (SELECT id FROM recipients WHERE organization = NEW.recipient)
    WHERE rowid = NEW.rowid;
END;

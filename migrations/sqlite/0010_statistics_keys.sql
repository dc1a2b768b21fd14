-- Narrow integer keys for referral statistics (issue 17; src/store/statistics.rs): counting distinct
-- people over 64-character pseudonyms and exploding the JSON reasons array cost seconds per table.
-- Both are coded skeleton, as migration 0008's columns: no personal content, kept when content is
-- erased.

-- One small integer per pseudonym, so that distinct people are counted over integers. A row per
-- person, not per referral: a referral for someone already here writes nothing more. Pseudonyms
-- under a rotated key are other rows, as they were other values before.
CREATE TABLE persons (
    id          INTEGER PRIMARY KEY,
    pseudonym   TEXT NOT NULL UNIQUE
);

-- persons.id of subject_pseudonym, set by the database on insert (below); the pseudonym never
-- changes after.
ALTER TABLE referrals ADD COLUMN person_id INTEGER;
-- The reasons as bits: bit n is the n-th code of `Reason` (src/domain/referral.rs, whose order is
-- append-only), written by the service with every referral (`Skeleton::reason_bits`).
ALTER TABLE referrals ADD COLUMN reason_bits INTEGER;

INSERT INTO persons (pseudonym)
    SELECT DISTINCT subject_pseudonym FROM referrals ORDER BY subject_pseudonym;
UPDATE referrals SET
    person_id = (SELECT p.id FROM persons p WHERE p.pseudonym = referrals.subject_pseudonym),
    reason_bits = (
        SELECT COALESCE(SUM(DISTINCT b.bit), 0)
        FROM json_each(referrals.reasons) AS e
        JOIN (SELECT 'LIFE_MANAGEMENT' AS code, 1 AS bit UNION ALL SELECT 'LIVELIHOOD', 2
              UNION ALL SELECT 'HOUSING', 4 UNION ALL SELECT 'HEALTH', 8
              UNION ALL SELECT 'SUBSTANCE_USE', 16 UNION ALL SELECT 'FAMILY_AND_CHILDREN', 32
              UNION ALL SELECT 'EMPLOYMENT', 64 UNION ALL SELECT 'DEBT', 128
              UNION ALL SELECT 'OTHER', 256) AS b ON b.code = e.value);

-- The person of a new referral, from its pseudonym, in the same statement (one writer at a time:
-- nobody else can add the same person meanwhile). SQLite cannot change NEW before the insert, so
-- the row is completed just after it.
CREATE TRIGGER referrals_person AFTER INSERT ON referrals
BEGIN
    INSERT OR IGNORE INTO persons (pseudonym) VALUES (NEW.subject_pseudonym);
    UPDATE referrals SET person_id = (SELECT id FROM persons WHERE pseudonym = NEW.subject_pseudonym)
    WHERE rowid = NEW.rowid;
END;

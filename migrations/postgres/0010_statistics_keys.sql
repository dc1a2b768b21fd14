-- Narrow integer keys for referral statistics (issue 17; src/store/statistics.rs): counting distinct
-- people over 64-character pseudonyms and exploding the JSON reasons array cost seconds per table.
-- Both are coded skeleton, as migration 0008's columns: no personal content, kept when content is
-- erased.

-- One small integer per pseudonym, so that distinct people are counted over integers. A row per
-- person, not per referral: a referral for someone already here writes nothing more. Pseudonyms
-- under a rotated key are other rows, as they were other values before.
CREATE TABLE persons (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pseudonym   TEXT NOT NULL UNIQUE
);

-- persons.id of subject_pseudonym, set by the database on insert (below); the pseudonym never
-- changes after.
ALTER TABLE referrals ADD COLUMN person_id BIGINT;
-- The reasons as bits: bit n is the n-th code of `Reason` (src/domain/referral.rs, whose order is
-- append-only), written by the service with every referral (`Skeleton::reason_bits`).
ALTER TABLE referrals ADD COLUMN reason_bits INTEGER;

INSERT INTO persons (pseudonym)
    SELECT DISTINCT subject_pseudonym FROM referrals ORDER BY subject_pseudonym;
UPDATE referrals r SET
    person_id = p.id,
    reason_bits = (
        SELECT COALESCE(bit_or(b.bit), 0)
        FROM jsonb_array_elements_text(r.reasons::jsonb) AS e(code)
        JOIN (VALUES ('LIFE_MANAGEMENT', 1), ('LIVELIHOOD', 2), ('HOUSING', 4), ('HEALTH', 8),
                     ('SUBSTANCE_USE', 16), ('FAMILY_AND_CHILDREN', 32), ('EMPLOYMENT', 64),
                     ('DEBT', 128), ('OTHER', 256)) AS b(code, bit) ON b.code = e.code)
FROM persons p
WHERE p.pseudonym = r.subject_pseudonym;
ALTER TABLE referrals ALTER COLUMN person_id SET NOT NULL;
ALTER TABLE referrals ALTER COLUMN reason_bits SET NOT NULL;

-- The person of a new referral, from its pseudonym, in the same statement: no round trip for the
-- service, and two transactions creating the first referrals of one person at once agree (the
-- second waits on the first's row, then reads it: each statement here sees what has committed).
CREATE FUNCTION referral_person() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT id INTO NEW.person_id FROM persons WHERE pseudonym = NEW.subject_pseudonym;
    IF NEW.person_id IS NULL THEN
        INSERT INTO persons (pseudonym) VALUES (NEW.subject_pseudonym)
            ON CONFLICT (pseudonym) DO NOTHING;
        SELECT id INTO NEW.person_id FROM persons WHERE pseudonym = NEW.subject_pseudonym;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER referrals_person BEFORE INSERT ON referrals
    FOR EACH ROW EXECUTE FUNCTION referral_person();

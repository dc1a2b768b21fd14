-- Tables for the minimal baselines (`minimal_create.sql`, `minimal_roundtrip.sql`): the referrals,
-- messages and audit events tables as the server's, with their columns and defaults, and only the
-- indexes the calls cannot do without: primary keys, a mailbox's messages in order (pulls), a
-- person's referrals (look-ups by pseudonym). No trigger, no other index. What PostgreSQL does for
-- the rows a call must make durable, when the design adds nothing. Dropped after the run.
CREATE TABLE bench_min_referrals (LIKE referrals INCLUDING DEFAULTS);
ALTER TABLE bench_min_referrals ADD PRIMARY KEY (id);
CREATE INDEX ON bench_min_referrals (subject_pseudonym);
CREATE TABLE bench_min_messages (LIKE messages INCLUDING DEFAULTS);
ALTER TABLE bench_min_messages ADD PRIMARY KEY (id);
CREATE INDEX ON bench_min_messages (mailbox, sequence);
CREATE TABLE bench_min_audit (LIKE audit_events INCLUDING DEFAULTS);
ALTER TABLE bench_min_audit ADD PRIMARY KEY (sequence);

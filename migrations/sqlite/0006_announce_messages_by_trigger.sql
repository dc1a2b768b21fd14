-- Nothing to do in SQLite: one process, whose in-memory signals wake its own waiters after the commit.
-- (PostgreSQL's 0006 announces new messages to other replicas by trigger.) Kept for equal numbering.
SELECT 1;

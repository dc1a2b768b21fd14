-- The audit trail's person and resource indexes are now GIN indexes over the event row's own JSON
-- arrays, in place of the index rows migration 0005's trigger wrote beside every event (issue 19).
-- A create wrote three such rows per event (a subject and two resources), a referral's lifecycle
-- about 29, each with its foreign-key check, and the trigger's PL/pgSQL ran for every event: the
-- largest share of what a call wrote that the law does not ask for. The event row already holds
-- the same names (the leaf hash covers them), so an index over it loses nothing.
--
-- "Everything about this person (or this referral)" stays an index lookup at any log size: the
-- GIN index finds the events, which are then sorted by sequence (a person's or a referral's events
-- are few; a resource named in thousands of events costs milliseconds per page, measured in
-- bench/RESULTS.md). SQLite has no GIN and keeps the index tables and their trigger.
DROP TRIGGER audit_events_index ON audit_events;
DROP FUNCTION index_audit_event();
CREATE INDEX audit_events_by_subject ON audit_events
    USING GIN ((subject_pseudonyms::jsonb) jsonb_path_ops);
CREATE INDEX audit_events_by_resource ON audit_events
    USING GIN ((resources::jsonb) jsonb_path_ops);
DROP TABLE audit_event_subjects;
DROP TABLE audit_event_resources;

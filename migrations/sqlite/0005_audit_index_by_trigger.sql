-- The person and resource indexes of the audit trail are filled by the database from the event row
-- itself, in the same statement: one round trip per audit event instead of three, on every call.
CREATE TRIGGER audit_events_index AFTER INSERT ON audit_events
BEGIN
    INSERT INTO audit_event_subjects (subject_pseudonym, event_sequence)
        SELECT DISTINCT value, NEW.sequence FROM json_each(NEW.subject_pseudonyms);
    INSERT INTO audit_event_resources (resource, event_sequence)
        SELECT DISTINCT value, NEW.sequence FROM json_each(NEW.resources);
END;

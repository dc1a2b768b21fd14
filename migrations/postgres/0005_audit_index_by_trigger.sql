-- The person and resource indexes of the audit trail are filled by the database from the event row
-- itself, in the same statement: one round trip per audit event instead of three, on every call.
CREATE FUNCTION index_audit_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_event_subjects (subject_pseudonym, event_sequence)
        SELECT DISTINCT value, NEW.sequence FROM json_array_elements_text(NEW.subject_pseudonyms::json);
    INSERT INTO audit_event_resources (resource, event_sequence)
        SELECT DISTINCT value, NEW.sequence FROM json_array_elements_text(NEW.resources::json);
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_events_index AFTER INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION index_audit_event();

-- The tamper-evident audit log: audit events become leaves of an RFC 6962 Merkle tree, and a
-- sequencer signs checkpoints of it (see AUDIT_LOG.md). Every table here except the work queue is
-- append-only by trigger, like audit_events itself.

-- Work queue: events committed but not yet in the tree. Filled by trigger in the transaction that
-- writes the event, so a queue row becomes visible exactly when its event commits, however late
-- that is relative to its BIGSERIAL number; the sequencer empties it.
CREATE TABLE audit_pending (
    event_sequence  BIGINT PRIMARY KEY REFERENCES audit_events (sequence)
);
CREATE FUNCTION queue_audit_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_pending (event_sequence) VALUES (NEW.sequence);
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_events_queue AFTER INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION queue_audit_event();
-- Events written before this migration enter the tree first, in the order they were written.
INSERT INTO audit_pending (event_sequence) SELECT sequence FROM audit_events;

-- One row: the sequencer's round lock, taken FOR UPDATE so that rounds never overlap.
CREATE TABLE audit_sequencer (
    id  INTEGER PRIMARY KEY CHECK (id = 1)
);
INSERT INTO audit_sequencer (id) VALUES (1);

-- Leaf i of the tree is the event with event_sequence; leaf_hash = SHA-256(0x00 || leaf_data).
CREATE TABLE audit_leaves (
    leaf_index      BIGINT PRIMARY KEY CHECK (leaf_index >= 0),
    event_sequence  BIGINT NOT NULL UNIQUE REFERENCES audit_events (sequence),
    leaf_hash       BYTEA NOT NULL CHECK (length(leaf_hash) = 32)
);

-- Every complete perfect subtree of level 1 and up: 2^level leaves from node_index * 2^level.
CREATE TABLE audit_tree_nodes (
    level       SMALLINT NOT NULL CHECK (level BETWEEN 1 AND 63),
    node_index  BIGINT NOT NULL CHECK (node_index >= 0),
    hash        BYTEA NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, node_index)
);

-- Signed checkpoints (C2SP tlog-checkpoint in a signed note), one per tree size.
CREATE TABLE audit_checkpoints (
    tree_size   BIGINT PRIMARY KEY CHECK (tree_size >= 0),
    root_hash   BYTEA NOT NULL CHECK (length(root_hash) = 32),
    time        TIMESTAMPTZ NOT NULL,
    note        TEXT NOT NULL
);

CREATE TRIGGER audit_leaves_append_only BEFORE UPDATE OR DELETE ON audit_leaves
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_leaves_no_truncate BEFORE TRUNCATE ON audit_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_tree_nodes_append_only BEFORE UPDATE OR DELETE ON audit_tree_nodes
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_tree_nodes_no_truncate BEFORE TRUNCATE ON audit_tree_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();

-- Consents that the expiry task must look at: ACTIVE ones with an end of validity.
CREATE INDEX consents_to_expire ON consents (expire_time) WHERE state = 'ACTIVE' AND expire_time IS NOT NULL;

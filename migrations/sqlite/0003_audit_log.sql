-- The tamper-evident audit log: audit events become leaves of an RFC 6962 Merkle tree, and a
-- sequencer signs checkpoints of it (see AUDIT_LOG.md). Every table here except the work queue is
-- append-only by trigger, like audit_events itself.

-- Work queue: events committed but not yet in the tree. Filled by trigger in the transaction that
-- writes the event, so an event is queued exactly when it commits; the sequencer empties it.
CREATE TABLE audit_pending (
    event_sequence  INTEGER PRIMARY KEY REFERENCES audit_events (sequence)
);
CREATE TRIGGER audit_events_queue AFTER INSERT ON audit_events
BEGIN
    INSERT INTO audit_pending (event_sequence) VALUES (NEW.sequence);
END;
-- Events written before this migration enter the tree first, in the order they were written.
INSERT INTO audit_pending (event_sequence) SELECT sequence FROM audit_events;

-- One row: the sequencer's round lock (PostgreSQL locks it FOR UPDATE; SQLite has one writer).
CREATE TABLE audit_sequencer (
    id  INTEGER PRIMARY KEY CHECK (id = 1)
);
INSERT INTO audit_sequencer (id) VALUES (1);

-- Leaf i of the tree is the event with event_sequence; leaf_hash = SHA-256(0x00 || leaf_data).
CREATE TABLE audit_leaves (
    leaf_index      INTEGER PRIMARY KEY,
    event_sequence  INTEGER NOT NULL UNIQUE REFERENCES audit_events (sequence),
    leaf_hash       BLOB NOT NULL
);

-- Every complete perfect subtree of level 1 and up: 2^level leaves from node_index * 2^level.
CREATE TABLE audit_tree_nodes (
    level       INTEGER NOT NULL,
    node_index  INTEGER NOT NULL,
    hash        BLOB NOT NULL,
    PRIMARY KEY (level, node_index)
);

-- Signed checkpoints (C2SP tlog-checkpoint in a signed note), one per tree size.
CREATE TABLE audit_checkpoints (
    tree_size   INTEGER PRIMARY KEY,
    root_hash   BLOB NOT NULL,
    time        INTEGER NOT NULL,
    note        TEXT NOT NULL
);

CREATE TRIGGER audit_leaves_no_update BEFORE UPDATE ON audit_leaves
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE on audit_leaves refused');
END;
CREATE TRIGGER audit_leaves_no_delete BEFORE DELETE ON audit_leaves
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE on audit_leaves refused');
END;
CREATE TRIGGER audit_tree_nodes_no_update BEFORE UPDATE ON audit_tree_nodes
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE on audit_tree_nodes refused');
END;
CREATE TRIGGER audit_tree_nodes_no_delete BEFORE DELETE ON audit_tree_nodes
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE on audit_tree_nodes refused');
END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE on audit_checkpoints refused');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE on audit_checkpoints refused');
END;

-- Consents that the expiry task must look at: ACTIVE ones with an end of validity.
CREATE INDEX consents_to_expire ON consents (expire_time) WHERE state = 'ACTIVE' AND expire_time IS NOT NULL;

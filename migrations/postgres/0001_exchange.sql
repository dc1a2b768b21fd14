-- The exchange: consents, referrals, mailboxes, the audit trail, and idempotency keys.
-- Identity codes are stored where the data needs them (the referral goes to the receiver with its
-- subject); lookups by person go through the keyed pseudonym, so no index holds the codes.
-- Times come from the application's clock, never from now(), so that tests can move time.

CREATE TABLE consents (
    id                  UUID PRIMARY KEY,
    subject_code        TEXT NOT NULL,
    subject_pseudonym   TEXT NOT NULL,
    purpose             TEXT NOT NULL,
    recipients          TEXT NOT NULL,           -- JSON array of organisation ids
    form                TEXT NOT NULL,
    given_by            TEXT NOT NULL,
    valid_from          TIMESTAMPTZ NOT NULL,
    expire_time         TIMESTAMPTZ,
    state               TEXT NOT NULL,           -- ACTIVE, USED or WITHDRAWN; EXPIRED follows from expire_time
    evidence_reference  TEXT NOT NULL,
    create_time         TIMESTAMPTZ NOT NULL,
    update_time         TIMESTAMPTZ NOT NULL,
    withdraw_time       TIMESTAMPTZ,
    used_by             UUID,
    version             BIGINT NOT NULL
);
CREATE INDEX consents_by_subject ON consents (subject_pseudonym, create_time, id);
CREATE INDEX consents_by_time ON consents (create_time, id);

CREATE TABLE consent_events (
    id              BIGSERIAL PRIMARY KEY,
    consent_id      UUID NOT NULL REFERENCES consents (id),
    event_type      TEXT NOT NULL,
    time            TIMESTAMPTZ NOT NULL,
    organization    TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    referral_id     UUID,
    consent_state   TEXT NOT NULL
);
CREATE INDEX consent_events_by_consent ON consent_events (consent_id, id);
CREATE INDEX consent_events_by_time ON consent_events (time, id);

CREATE TABLE referrals (
    id                              UUID PRIMARY KEY,
    kind                            TEXT NOT NULL,
    subject_code                    TEXT NOT NULL,
    subject_pseudonym               TEXT NOT NULL,
    subject_name                    TEXT,
    subject_phone                   TEXT,
    subject_language                TEXT,
    home_municipality_code          TEXT NOT NULL,
    current_municipality_code       TEXT,
    recipient                       TEXT NOT NULL,
    reasons                         TEXT NOT NULL,   -- JSON array of reason codes
    reason_text                     TEXT NOT NULL,
    urgent                          BOOLEAN NOT NULL,
    deadline_group                  TEXT NOT NULL,
    consent_id                      UUID REFERENCES consents (id),
    statutory_ground                TEXT,
    personal_discussion_requested   BOOLEAN NOT NULL,
    application_reference           TEXT,
    state                           TEXT NOT NULL,
    state_reason                    TEXT NOT NULL,
    outcome                         TEXT,
    rejection_reason                TEXT,
    rejection_text                  TEXT,
    cancellation_text               TEXT,
    history                         TEXT NOT NULL,   -- JSON array of coded state changes
    create_time                     TIMESTAMPTZ NOT NULL,
    update_time                     TIMESTAMPTZ NOT NULL,
    receive_time                    TIMESTAMPTZ,
    assessment_due_date             DATE,
    version                         BIGINT NOT NULL,
    CONSTRAINT referrals_one_basis CHECK ((consent_id IS NULL) <> (statutory_ground IS NULL))
);
CREATE INDEX referrals_by_time ON referrals (create_time, id);
CREATE INDEX referrals_by_subject ON referrals (subject_pseudonym);
CREATE INDEX referrals_by_consent ON referrals (consent_id) WHERE consent_id IS NOT NULL;

-- Every organisation a referral was ever routed to: what a receiver may list and read.
CREATE TABLE referral_routes (
    referral_id     UUID NOT NULL REFERENCES referrals (id),
    recipient       TEXT NOT NULL,
    routed_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (recipient, referral_id)
);

-- One row per mailbox: the last sequence number handed out. Taking the next number locks this row
-- until commit, so numbers become visible in order and a reader paging by sequence misses nothing.
CREATE TABLE mailboxes (
    organization    TEXT PRIMARY KEY,
    last_sequence   BIGINT NOT NULL
);

CREATE TABLE messages (
    id                  UUID PRIMARY KEY,
    mailbox             TEXT NOT NULL,
    sequence            BIGINT NOT NULL,
    message_type        TEXT NOT NULL,
    referral_id         UUID REFERENCES referrals (id),
    consent_id          UUID REFERENCES consents (id),
    state_change        TEXT,                    -- JSON of the coded change, for REFERRAL_STATE_CHANGED
    publish_time        TIMESTAMPTZ NOT NULL,
    delivery_attempt    INTEGER NOT NULL DEFAULT 0,
    lease_expire_time   TIMESTAMPTZ,
    ack_time            TIMESTAMPTZ,
    CONSTRAINT messages_sequence_unique UNIQUE (mailbox, sequence)
);
CREATE INDEX messages_pending ON messages (mailbox, sequence) WHERE ack_time IS NULL;

CREATE TABLE audit_events (
    sequence            BIGSERIAL PRIMARY KEY,
    time                TIMESTAMPTZ NOT NULL,
    organization        TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    method              TEXT NOT NULL,
    resources           TEXT NOT NULL,           -- JSON array of resource names
    subject_pseudonyms  TEXT NOT NULL,           -- JSON array
    status_code         INTEGER NOT NULL,
    correlation_id      TEXT NOT NULL,
    disclosures         TEXT NOT NULL            -- JSON array
);
CREATE INDEX audit_events_by_time ON audit_events (time, sequence);
CREATE INDEX audit_events_by_organization ON audit_events (organization, sequence);

-- Index tables so that "everything about this person" and "everything about this referral" are
-- index lookups at any log size.
CREATE TABLE audit_event_subjects (
    subject_pseudonym   TEXT NOT NULL,
    event_sequence      BIGINT NOT NULL REFERENCES audit_events (sequence),
    PRIMARY KEY (subject_pseudonym, event_sequence)
);
CREATE TABLE audit_event_resources (
    resource            TEXT NOT NULL,
    event_sequence      BIGINT NOT NULL REFERENCES audit_events (sequence),
    PRIMARY KEY (resource, event_sequence)
);

-- The log is append-only, enforced by the database itself: not even the service's own database
-- role can rewrite it without first dropping these triggers.
CREATE FUNCTION refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_event_subjects_append_only BEFORE UPDATE OR DELETE ON audit_event_subjects
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_event_resources_append_only BEFORE UPDATE OR DELETE ON audit_event_resources
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();

-- AIP-155: the first result of a request, returned again to a retry with the same request_id.
CREATE TABLE idempotency_keys (
    organization    TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    response        TEXT NOT NULL,
    create_time     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization, request_id)
);

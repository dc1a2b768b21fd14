-- The rest of one referral's lifecycle, after `create.sql` (which leaves the referral's id in `:ref`):
-- the baseline for the `roundtrip` scenario. `referral-exchange-bench --scenario roundtrip
-- --database-url … --baseline` runs the two scripts as one, so one pgbench "transaction" is one
-- lifecycle: eight transactions, one per call, as the server's calls commit them.
--
-- Each block writes and reads the rows the server's call does, in plain statements: the pulls number
-- the shared mailbox's new messages under its counter row (skipped while another transaction holds it)
-- and lease the oldest deliverable ones; the acknowledgements take what was leased; the receiver's
-- three state changes act on this script's own referral. Kela pulls up to 100, the receiver up to 10.
-- Message ids lead with the time in milliseconds, as the server's UUIDv7 ids do.
\set r1 random(1, 9223372036854775807)
\set r2 random(1, 9223372036854775807)
\set r3 random(1, 9223372036854775807)

-- The receiver's PullMessages.
BEGIN;
SELECT coalesce(max(last_sequence), -1) AS last
  FROM (SELECT last_sequence FROM mailboxes WHERE organization = 'hva-15' FOR NO KEY UPDATE SKIP LOCKED) m \gset
\if :last >= 0
WITH numbered AS (
  UPDATE messages SET sequence = :last::bigint + n.n
    FROM (SELECT id, row_number() OVER (ORDER BY position) AS n FROM messages
          WHERE mailbox = 'hva-15' AND sequence IS NULL) n
    WHERE messages.id = n.id RETURNING 1)
SELECT count(*) AS numbered FROM numbered \gset
\if :numbered > 0
\set next :last + :numbered
UPDATE mailboxes SET last_sequence = :next WHERE organization = 'hva-15';
\endif
\endif
WITH leased AS (
  UPDATE messages SET delivery_attempt = delivery_attempt + 1, lease_expire_time = now() + interval '60 seconds'
    WHERE id IN (SELECT id FROM messages WHERE mailbox = 'hva-15' AND ack_time IS NULL AND sequence IS NOT NULL
                 AND dead_letter_time IS NULL AND delivery_attempt - redrive_base < 10
                 AND (lease_expire_time IS NULL OR lease_expire_time <= now())
                 ORDER BY sequence LIMIT 10 FOR NO KEY UPDATE SKIP LOCKED)
    RETURNING *)
SELECT coalesce(string_agg(id::text, ','), '') AS msgs, coalesce(string_agg(referral_id::text, ','), '') AS refs,
       coalesce(json_agg('messages/' || id)::text, '[]') AS res
  FROM leased \gset
SELECT * FROM referrals WHERE id = ANY(string_to_array(:refs::text, ',')::uuid[]);
SELECT * FROM consents WHERE id IN (SELECT consent_id FROM referrals WHERE id = ANY(string_to_array(:refs::text, ',')::uuid[]));
INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, status_code,
    correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.MailboxService/PullMessages', :res::text,
    '["' || md5(:c::text) || md5(:c::text) || '"]', 0, '', '[]');
COMMIT;

-- The receiver's AcknowledgeMessages: each routed referral becomes RECEIVED, which Kela is told.
BEGIN;
SELECT * FROM messages WHERE id = ANY(string_to_array(:msgs::text, ',')::uuid[]) ORDER BY id FOR NO KEY UPDATE;
UPDATE messages SET ack_time = now(), lease_expire_time = NULL WHERE id = ANY(string_to_array(:msgs::text, ',')::uuid[]);
SELECT * FROM referrals WHERE id = ANY(string_to_array(:refs::text, ',')::uuid[]) ORDER BY id FOR NO KEY UPDATE;
UPDATE referrals SET state = 'RECEIVED', state_reason = 'RECEIVED_BY_RECIPIENT', update_time = now(),
    receive_time = now(), version = version + 1,
    history = left(history, -1) || ',{"state": "RECEIVED","time": ' || to_json(now())::text || ',"organization": "hva-15","reason": "RECEIVED_BY_RECIPIENT","recipient": null}]'
  WHERE id = ANY(string_to_array(:refs::text, ',')::uuid[]);
INSERT INTO messages (id, mailbox, message_type, referral_id, state_change, publish_time)
  SELECT (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(random()::text), 13))::uuid,
    'kela', 'REFERRAL_STATE_CHANGED', r,
    '{"state": "RECEIVED","time": ' || to_json(now())::text || ',"organization": "hva-15","reason": "RECEIVED_BY_RECIPIENT","recipient": null}', now()
  FROM unnest(string_to_array(:refs::text, ',')::uuid[]) r;
INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, status_code,
    correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.MailboxService/AcknowledgeMessages', :res::text,
    '["' || md5(:c::text) || md5(:c::text) || '"]', 0, '', '[]');
COMMIT;

-- AcceptReferral, StartAssessment and CompleteReferral, each its own call: claim the request id, lock
-- the referral, change it, store the response, tell Kela, audit.
BEGIN;
-- The request id looked up (a retry would get the first response).
SELECT fingerprint, response FROM idempotency_keys WHERE organization = 'hva-15' AND request_id = md5(:r1::text)::uuid::text;
SELECT * FROM referrals WHERE id = :ref::uuid FOR NO KEY UPDATE;
UPDATE referrals SET state = 'ACCEPTED', state_reason = 'ACCEPTED', update_time = now(), version = version + 1,
    assessment_due_date = current_date + 7,
    history = left(history, -1) || ',{"state": "ACCEPTED","time": ' || to_json(now())::text || ',"organization": "hva-15","reason": "ACCEPTED","recipient": null}]'
  WHERE id = :ref::uuid;
-- The request id recorded once, with the response, among the call's writes.
INSERT INTO idempotency_keys (organization, request_id, fingerprint, response, create_time)
  VALUES ('hva-15', md5(:r1::text)::uuid::text, md5(:r1::text) || md5(:ref::text), repeat('x', 1400), now());
INSERT INTO messages (id, mailbox, message_type, referral_id, state_change, publish_time)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:r1::text), 13))::uuid,
    'kela', 'REFERRAL_STATE_CHANGED', :ref::uuid,
    '{"state": "ACCEPTED","time": ' || to_json(now())::text || ',"organization": "hva-15","reason": "ACCEPTED","recipient": null}', now());
INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, status_code,
    correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.ReferralService/AcceptReferral', '["referrals/' || :ref::text || '"]',
    '["' || md5(:c::text) || md5(:c::text) || '"]', 0, '', '[]');
COMMIT;

BEGIN;
-- The request id looked up (a retry would get the first response).
SELECT fingerprint, response FROM idempotency_keys WHERE organization = 'hva-15' AND request_id = md5(:r2::text)::uuid::text;
SELECT * FROM referrals WHERE id = :ref::uuid FOR NO KEY UPDATE;
UPDATE referrals SET state = 'IN_PROGRESS', state_reason = 'ASSESSMENT_STARTED', update_time = now(),
    version = version + 1,
    history = left(history, -1) || ',{"state": "IN_PROGRESS","time": ' || to_json(now())::text || ',"organization": "hva-15","reason": "ASSESSMENT_STARTED","recipient": null}]'
  WHERE id = :ref::uuid;
-- The request id recorded once, with the response, among the call's writes.
INSERT INTO idempotency_keys (organization, request_id, fingerprint, response, create_time)
  VALUES ('hva-15', md5(:r2::text)::uuid::text, md5(:r2::text) || md5(:ref::text), repeat('x', 1400), now());
INSERT INTO messages (id, mailbox, message_type, referral_id, state_change, publish_time)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:r2::text), 13))::uuid,
    'kela', 'REFERRAL_STATE_CHANGED', :ref::uuid,
    '{"state": "IN_PROGRESS","time": ' || to_json(now())::text || ',"organization": "hva-15","reason": "ASSESSMENT_STARTED","recipient": null}', now());
INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, status_code,
    correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.ReferralService/StartAssessment', '["referrals/' || :ref::text || '"]',
    '["' || md5(:c::text) || md5(:c::text) || '"]', 0, '', '[]');
COMMIT;

BEGIN;
-- The request id looked up (a retry would get the first response).
SELECT fingerprint, response FROM idempotency_keys WHERE organization = 'hva-15' AND request_id = md5(:r3::text)::uuid::text;
SELECT * FROM referrals WHERE id = :ref::uuid FOR NO KEY UPDATE;
UPDATE referrals SET state = 'COMPLETED', state_reason = 'SERVICES_STARTED', outcome = 'SERVICES_STARTED',
    update_time = now(), version = version + 1,
    history = left(history, -1) || ',{"state": "COMPLETED","time": ' || to_json(now())::text || ',"organization": "hva-15","reason": "SERVICES_STARTED","recipient": null}]'
  WHERE id = :ref::uuid;
-- The request id recorded once, with the response, among the call's writes.
INSERT INTO idempotency_keys (organization, request_id, fingerprint, response, create_time)
  VALUES ('hva-15', md5(:r3::text)::uuid::text, md5(:r3::text) || md5(:ref::text), repeat('x', 1400), now());
INSERT INTO messages (id, mailbox, message_type, referral_id, state_change, publish_time)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:r3::text), 13))::uuid,
    'kela', 'REFERRAL_STATE_CHANGED', :ref::uuid,
    '{"state": "COMPLETED","time": ' || to_json(now())::text || ',"organization": "hva-15","reason": "SERVICES_STARTED","recipient": null}', now());
INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, status_code,
    correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.ReferralService/CompleteReferral', '["referrals/' || :ref::text || '"]',
    '["' || md5(:c::text) || md5(:c::text) || '"]', 0, '', '[]');
COMMIT;

-- Kela's PullMessages and AcknowledgeMessages of the state changes.
BEGIN;
SELECT coalesce(max(last_sequence), -1) AS last
  FROM (SELECT last_sequence FROM mailboxes WHERE organization = 'kela' FOR NO KEY UPDATE SKIP LOCKED) m \gset
\if :last >= 0
WITH numbered AS (
  UPDATE messages SET sequence = :last::bigint + n.n
    FROM (SELECT id, row_number() OVER (ORDER BY position) AS n FROM messages
          WHERE mailbox = 'kela' AND sequence IS NULL) n
    WHERE messages.id = n.id RETURNING 1)
SELECT count(*) AS numbered FROM numbered \gset
\if :numbered > 0
\set next :last + :numbered
UPDATE mailboxes SET last_sequence = :next WHERE organization = 'kela';
\endif
\endif
WITH leased AS (
  UPDATE messages SET delivery_attempt = delivery_attempt + 1, lease_expire_time = now() + interval '60 seconds'
    WHERE id IN (SELECT id FROM messages WHERE mailbox = 'kela' AND ack_time IS NULL AND sequence IS NOT NULL
                 AND dead_letter_time IS NULL AND delivery_attempt - redrive_base < 10
                 AND (lease_expire_time IS NULL OR lease_expire_time <= now())
                 ORDER BY sequence LIMIT 100 FOR NO KEY UPDATE SKIP LOCKED)
    RETURNING *)
SELECT coalesce(string_agg(id::text, ','), '') AS msgs, coalesce(string_agg(DISTINCT referral_id::text, ','), '') AS refs,
       coalesce(json_agg('messages/' || id)::text, '[]') AS res
  FROM leased \gset
SELECT * FROM referrals WHERE id = ANY(string_to_array(:refs::text, ',')::uuid[]);
SELECT * FROM consents WHERE id IN (SELECT consent_id FROM referrals WHERE id = ANY(string_to_array(:refs::text, ',')::uuid[]));
INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, status_code,
    correlation_id, disclosures)
  VALUES (now(), 'kela', 'bench-client', '/referral_exchange.v1.MailboxService/PullMessages', :res::text,
    '["' || md5(:c::text) || md5(:c::text) || '"]', 0, '', '[]');
COMMIT;

BEGIN;
SELECT * FROM messages WHERE id = ANY(string_to_array(:msgs::text, ',')::uuid[]) ORDER BY id FOR NO KEY UPDATE;
UPDATE messages SET ack_time = now(), lease_expire_time = NULL WHERE id = ANY(string_to_array(:msgs::text, ',')::uuid[]);
INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, status_code,
    correlation_id, disclosures)
  VALUES (now(), 'kela', 'bench-client', '/referral_exchange.v1.MailboxService/AcknowledgeMessages', :res::text,
    '["' || md5(:c::text) || md5(:c::text) || '"]', 0, '', '[]');
COMMIT;

-- The rows one CreateReferral (with a written consent) commits, in one transaction, as the server
-- writes them: the baseline for the `create` scenario. `referral-exchange-bench --scenario create
-- --database-url … --baseline` runs it with pgbench at the same concurrency against the same
-- database, after preparing `bench_consents` (one written consent per client, as the server's own
-- run uses; pgbench's client n refers against the n-th, so that no two clients queue on one
-- consent's row lock).
-- Identifiers derive from random 64-bit integers so that one statement can refer to the row another
-- wrote; the referral's and the message's lead with the transaction's time in milliseconds, as the
-- server's UUIDv7 ids do (`domain::new_id`), so that their index inserts land where the server's do.
-- The referral's id comes back in `:ref` (no extra round trip) for `roundtrip.sql`, which follows this
-- script in the lifecycle baseline.
\set c :client_id % :consents + 1
\set rid random(1, 9223372036854775807)
\set mid random(1, 9223372036854775807)
\set req random(1, 9223372036854775807)
BEGIN;
-- The request id looked up (a retry would get the first response).
SELECT fingerprint, response FROM idempotency_keys WHERE organization = 'kela' AND request_id = md5(:req::text)::uuid::text;
-- A written consent is locked, not rewritten: its use is the event below.
SELECT * FROM consents WHERE id = (SELECT id FROM bench_consents WHERE n = :c) FOR UPDATE;
INSERT INTO consent_events (consent_id, event_type, time, organization, user_id, referral_id, consent_state)
  SELECT id, 'USED', now(), 'kela', 'bench-client', (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:rid::text), 13))::uuid, 'ACTIVE' FROM bench_consents WHERE n = :c;
INSERT INTO referrals (id, kind, subject_code, subject_pseudonym, subject_name, subject_phone, subject_language,
    home_municipality_code, current_municipality_code, recipient, reasons, reason_text, urgent, deadline_group,
    consent_id, statutory_ground, personal_discussion_requested, application_reference, state, state_reason,
    outcome, rejection_reason, rejection_text, cancellation_text, history, create_time, update_time, receive_time,
    assessment_due_date, version, completion_due_date, receive_due_date, reason_bits)
  SELECT (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:rid::text), 13))::uuid, 'NEED_FOR_SOCIAL_WORK', '131052-308T', md5(:c::text) || md5(:c::text), NULL, NULL, NULL,
    '179', NULL, 'hva-15', '["HOUSING","DEBT"]', 'Benchmark referral', false, 'NO_STATUTORY_GROUP',
    id, NULL, false, NULL, 'REQUESTED', 'ROUTED', NULL, NULL, NULL, NULL,
    '[{"state": "REQUESTED","time": ' || to_json(now())::text || ',"organization": "kela","reason": "ROUTED","recipient": "hva-15"}]',
    now(), now(), NULL, NULL, 1, NULL, current_date + 3, 132
  FROM bench_consents WHERE n = :c
  RETURNING id AS ref \gset
-- The referrals triggers (migrations 0010, 0011) number the person and the recipient, as for the
-- server; HOUSING | DEBT = 132.
INSERT INTO referral_routes (referral_id, recipient, routed_at) VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:rid::text), 13))::uuid, 'hva-15', now());
-- The request id recorded once, with the response, among the call's writes.
INSERT INTO idempotency_keys (organization, request_id, fingerprint, response, create_time)
  VALUES ('kela', md5(:req::text)::uuid::text, md5(:req::text) || md5(:rid::text), repeat('x', 1400), now());
-- Unnumbered: the mailbox numbers its messages when it is read (migration 0004).
INSERT INTO messages (id, mailbox, message_type, referral_id, consent_id, state_change, publish_time,
    deadline_kind, deadline_date, failed_message_id, failed_mailbox)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:mid::text), 13))::uuid, 'hva-15', 'REFERRAL_ROUTED', (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:rid::text), 13))::uuid, NULL, NULL, now(),
    NULL, NULL, NULL, NULL);
-- The messages trigger (migration 0006) announces the mailbox, as for the server.
INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, status_code,
    correlation_id, disclosures)
  VALUES (now(), 'kela', 'bench-client', '/referral_exchange.v1.ReferralService/CreateReferral',
    '["referrals/' || (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:rid::text), 13))::uuid || '","consents/x"]', '["' || md5(:c::text) || md5(:c::text) || '"]', 0, '', '[]')
;
-- The audit event's subject and resource indexes are GIN indexes over its own columns
-- (migration 0012), as for the server.
COMMIT;

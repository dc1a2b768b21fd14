-- The rows a CreateReferral must make durable, and nothing else: the referral, the message that
-- routes it to its recipient, and the call's audit event, in one transaction (issue 19's minimal
-- baseline). No idempotency record, no consent update or event, no route row, no index rows written
-- by triggers. Tables from `minimal_setup.sql`; ids as in `create.sql` (time-ordered, like UUIDv7).
-- The statistics keys (migrations 0010, 0011) as the service would give them: the person's number
-- (here the client's), HOUSING | DEBT = 132 and the recipient's number (here 15).
-- The referral's and the message's ids come back in `:ref` and `:routed` for `minimal_roundtrip.sql`.
\set rid random(1, 9223372036854775807)
\set mid random(1, 9223372036854775807)
BEGIN;
INSERT INTO bench_min_referrals (id, kind, subject_code, subject_pseudonym, home_municipality_code,
    recipient, reasons, reason_text, urgent, deadline_group, personal_discussion_requested, state,
    state_reason, history, create_time, update_time, version, receive_due_date, person_id, reason_bits,
    recipient_id)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:rid::text), 13))::uuid,
    'NEED_FOR_SOCIAL_WORK', 's1.0123456789abcdef.' || repeat('x', 80), md5(:client_id::text) || md5(:client_id::text),
    '179', 'hva-15', '["HOUSING","DEBT"]', 's1.0123456789abcdef.' || repeat('y', 60), false, 'NO_STATUTORY_GROUP',
    false, 'REQUESTED', 'ROUTED', '[]', now(), now(), 1, current_date + 3, :client_id, 132, 15)
  RETURNING id AS ref \gset
INSERT INTO bench_min_messages (id, mailbox, message_type, referral_id, publish_time)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:mid::text), 13))::uuid,
    'hva-15', 'REFERRAL_ROUTED', :ref, now())
  RETURNING id AS routed \gset
INSERT INTO bench_min_audit (time, organization, user_id, method, resources, subject_pseudonyms, status_code,
    correlation_id, disclosures)
  VALUES (now(), 'kela', 'bench-client', '/referral_exchange.v1.ReferralService/CreateReferral',
    '["referrals/' || :ref || '"]', '["' || md5(:client_id::text) || md5(:client_id::text) || '"]', 0, '', '[]');
COMMIT;

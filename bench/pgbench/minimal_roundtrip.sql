-- The rest of one lifecycle in minimal rows, after `minimal_create.sql` (`:ref`, `:routed`): each call
-- one transaction, writing only what it must make durable: the receiver's pull (the message leased,
-- an audit event), its acknowledgement (the message acknowledged, RECEIVED on the referral, Kela's
-- message, an audit event), accept, start and complete (the referral changed, Kela's message, an
-- audit event each), and Kela's pull and acknowledgement of the four state changes (leased, then
-- acknowledged, an audit event each). Eight transactions, as in `roundtrip.sql`. Messages are found
-- by their ids, as a pull's answer and an acknowledgement name them.
\set m1 random(1, 9223372036854775807)
\set m2 random(1, 9223372036854775807)
\set m3 random(1, 9223372036854775807)
\set m4 random(1, 9223372036854775807)

-- The receiver's PullMessages.
BEGIN;
UPDATE bench_min_messages SET sequence = 1, delivery_attempt = delivery_attempt + 1,
    lease_expire_time = now() + interval '60 seconds'
  WHERE id = :routed;
INSERT INTO bench_min_audit (time, organization, user_id, method, resources, subject_pseudonyms, status_code, correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.MailboxService/PullMessages', '["referrals/' || :ref || '"]', '["p"]', 0, '', '[]');
COMMIT;

-- The receiver's AcknowledgeMessages: the referral becomes RECEIVED, Kela is told.
BEGIN;
UPDATE bench_min_messages SET ack_time = now() WHERE id = :routed;
UPDATE bench_min_referrals SET state = 'RECEIVED', receive_time = now(), update_time = now(), version = version + 1 WHERE id = :ref;
INSERT INTO bench_min_messages (id, mailbox, message_type, referral_id, publish_time)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:m1::text), 13))::uuid, 'kela', 'REFERRAL_STATE_CHANGED', :ref, now())
  RETURNING id AS told1 \gset
INSERT INTO bench_min_audit (time, organization, user_id, method, resources, subject_pseudonyms, status_code, correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.MailboxService/AcknowledgeMessages', '["referrals/' || :ref || '"]', '["p"]', 0, '', '[]');
COMMIT;

-- AcceptReferral.
BEGIN;
UPDATE bench_min_referrals SET state = 'ACCEPTED', update_time = now(), version = version + 1 WHERE id = :ref;
INSERT INTO bench_min_messages (id, mailbox, message_type, referral_id, publish_time)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:m2::text), 13))::uuid, 'kela', 'REFERRAL_STATE_CHANGED', :ref, now())
  RETURNING id AS told2 \gset
INSERT INTO bench_min_audit (time, organization, user_id, method, resources, subject_pseudonyms, status_code, correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.ReferralService/AcceptReferral', '["referrals/' || :ref || '"]', '["p"]', 0, '', '[]');
COMMIT;

-- StartAssessment.
BEGIN;
UPDATE bench_min_referrals SET state = 'ASSESSMENT_STARTED', update_time = now(), version = version + 1 WHERE id = :ref;
INSERT INTO bench_min_messages (id, mailbox, message_type, referral_id, publish_time)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:m3::text), 13))::uuid, 'kela', 'REFERRAL_STATE_CHANGED', :ref, now())
  RETURNING id AS told3 \gset
INSERT INTO bench_min_audit (time, organization, user_id, method, resources, subject_pseudonyms, status_code, correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.ReferralService/StartAssessment', '["referrals/' || :ref || '"]', '["p"]', 0, '', '[]');
COMMIT;

-- CompleteReferral.
BEGIN;
UPDATE bench_min_referrals SET state = 'COMPLETED', outcome = 'SERVICE_STARTED', update_time = now(), version = version + 1 WHERE id = :ref;
INSERT INTO bench_min_messages (id, mailbox, message_type, referral_id, publish_time)
  VALUES ((lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') || substr(md5(:m4::text), 13))::uuid, 'kela', 'REFERRAL_STATE_CHANGED', :ref, now())
  RETURNING id AS told4 \gset
INSERT INTO bench_min_audit (time, organization, user_id, method, resources, subject_pseudonyms, status_code, correlation_id, disclosures)
  VALUES (now(), 'hva-15', 'bench-worker', '/referral_exchange.v1.ReferralService/CompleteReferral', '["referrals/' || :ref || '"]', '["p"]', 0, '', '[]');
COMMIT;

-- Kela's PullMessages of the four state changes.
BEGIN;
UPDATE bench_min_messages SET sequence = 1, delivery_attempt = delivery_attempt + 1,
    lease_expire_time = now() + interval '60 seconds'
  WHERE id IN (:told1, :told2, :told3, :told4);
INSERT INTO bench_min_audit (time, organization, user_id, method, resources, subject_pseudonyms, status_code, correlation_id, disclosures)
  VALUES (now(), 'kela', 'bench-client', '/referral_exchange.v1.MailboxService/PullMessages', '["referrals/' || :ref || '"]', '["p"]', 0, '', '[]');
COMMIT;

-- Kela's AcknowledgeMessages.
BEGIN;
UPDATE bench_min_messages SET ack_time = now() WHERE id IN (:told1, :told2, :told3, :told4);
INSERT INTO bench_min_audit (time, organization, user_id, method, resources, subject_pseudonyms, status_code, correlation_id, disclosures)
  VALUES (now(), 'kela', 'bench-client', '/referral_exchange.v1.MailboxService/AcknowledgeMessages', '["referrals/' || :ref || '"]', '["p"]', 0, '', '[]');
COMMIT;

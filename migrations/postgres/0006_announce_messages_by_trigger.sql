-- A new message announces its mailbox to every replica (LISTEN referral_exchange_mailbox) when its
-- transaction commits, from the database itself: one round trip per call less than a separate
-- pg_notify after the insert. PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION announce_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('referral_exchange_mailbox', NEW.mailbox);
    RETURN NULL;
END;
$$;
CREATE TRIGGER messages_announce AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION announce_message();

-- The fingerprint of each key the data was written with (src/keys.rs): HMAC-SHA256 under the key of a
-- fixed label, never the key. A server started with a key the database does not know refuses to start
-- instead of silently finding nobody's events. One row per purpose: 'pseudonym' now, the data key's later.
CREATE TABLE key_fingerprints (
    purpose     TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    -- When this fingerprint was recorded: the first start, or the rotation to this key.
    record_time TIMESTAMPTZ NOT NULL
);

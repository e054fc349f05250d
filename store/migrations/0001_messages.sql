-- Messages and per-room sequence counters. The same SQL runs on SQLite and PostgreSQL.

-- One row per room: the last seq handed out. Updated in the same transaction as the
-- inserts it numbers, so seq has no gap (a PostgreSQL SEQUENCE would leave gaps on rollback).
CREATE TABLE room_seq (
    room TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

-- Stored messages. `body` is already censored when the message was flagged; the original
-- text is never stored. Times are epoch milliseconds; `enriched` is JSON text.
CREATE TABLE messages (
    room TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sender TEXT NOT NULL,
    client_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    enriched TEXT NOT NULL,
    stored_at BIGINT NOT NULL,
    PRIMARY KEY (room, seq)
);

-- The idempotency key: a (room, from, id) is stored once, under its first seq.
CREATE UNIQUE INDEX messages_idempotency ON messages (room, sender, client_id);

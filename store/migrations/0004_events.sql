-- Edits, deletes and reactions are log entries of their own (with their own seq), and
-- change their target message's latest state in the same transaction. The same SQL runs
-- on SQLite and PostgreSQL; flags are integers (0/1) as in 0003.
-- What the entry is: 'message', 'edit', 'delete' or 'reaction'.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
-- The seq an edit, a delete or a reaction changes.
ALTER TABLE messages ADD COLUMN target BIGINT;
-- The seq a message answers.
ALTER TABLE messages ADD COLUMN reply_to BIGINT;
-- A reaction's emoji, and 1 when the reaction was taken back.
ALTER TABLE messages ADD COLUMN emoji TEXT;
ALTER TABLE messages ADD COLUMN unreact BIGINT NOT NULL DEFAULT 0;
-- 1 on a delete by the operator (the HTTP API).
ALTER TABLE messages ADD COLUMN moderated BIGINT NOT NULL DEFAULT 0;
-- A message's latest state: when it was last edited (epoch ms) and whether it was
-- deleted (its body and enrichment, and those of its edits, are then cleared).
ALTER TABLE messages ADD COLUMN edited_at BIGINT;
ALTER TABLE messages ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0;

-- A message's latest reactions: one row per (emoji, user).
CREATE TABLE reactions (
    room TEXT NOT NULL,
    seq BIGINT NOT NULL,
    emoji TEXT NOT NULL,
    user_name TEXT NOT NULL,
    PRIMARY KEY (room, seq, emoji, user_name)
);

-- How far each user has read each room: it only moves forward.
CREATE TABLE read_cursors (
    room TEXT NOT NULL,
    user_name TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (room, user_name)
);
-- "Seen by": the room's most advanced readers first.
CREATE INDEX read_cursors_by_seq ON read_cursors (room, seq);

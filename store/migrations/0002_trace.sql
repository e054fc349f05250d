-- The trace id of the envelope a message came in, so replays and history can be matched
-- to the logs of the processes that handled it. NULL for messages stored before.
ALTER TABLE messages ADD COLUMN trace TEXT;

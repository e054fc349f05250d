-- Private rooms: a room's settings and its members. The same SQL runs on SQLite and
-- PostgreSQL. A room without a `rooms` row was never configured: public, no members.
CREATE TABLE rooms (
    room TEXT PRIMARY KEY,
    -- 1 for private, 0 for public (an integer, so the same SQL and the same binding work
    -- on both backends; SQLite has no BOOLEAN type of its own).
    private BIGINT NOT NULL
);

-- Who may join, send to and read a private room. Kept for public rooms too, so making a
-- room private again restores its list.
CREATE TABLE room_members (
    room TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (room, member)
);

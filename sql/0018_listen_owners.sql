-- `listen`: which connection writes a device's minutes.
--
-- Several `listen` processes may serve one database (behind a WebSocket
-- proxy), and a device may reconnect to another one, or briefly hold two
-- connections. Each connection that identifies a device claims it: the
-- epoch goes up by one, and the connection's writer remembers it. Every
-- batch a writer commits first checks, under a shared advisory lock per
-- device (a claim takes it exclusively), that the epochs it holds are still
-- the stored ones; a device claimed since by another connection is not
-- written by the old one again. So a device's minutes and channel state
-- have one writer at a time.
CREATE TABLE listen_owners (
    device_id   text PRIMARY KEY,
    epoch       bigint NOT NULL,
    -- The listen that claimed it (LISTEN_INSTANCE, default host:port).
    instance    text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);

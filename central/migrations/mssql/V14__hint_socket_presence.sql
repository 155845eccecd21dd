-- Mirrors migrations/sqlite/V14__hint_socket_presence.sql; same rules as V1 (one batch, no batch
-- separators, no statement returning rows, every constraint named).
--
-- Each venue's change-hint socket as the instances of central holding it report it, so every
-- instance behind a load balancer can tell whether the venue is online: when one last heard the
-- socket (on connecting and at each answered ping) and when it last heard it before it closed.
-- NULL until a socket is first seen.
ALTER TABLE site_sync ADD hint_seen_at DATETIME2(3) NULL;
ALTER TABLE site_sync ADD hint_closed_at DATETIME2(3) NULL;

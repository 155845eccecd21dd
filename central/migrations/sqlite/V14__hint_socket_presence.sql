-- Each venue's change-hint socket as the instances of central holding it report it, so every
-- instance behind a load balancer can tell whether the venue is online: when one last heard the
-- socket (on connecting and at each answered ping) and when it last heard it before it closed.
-- NULL until a socket is first seen.
ALTER TABLE site_sync ADD COLUMN hint_seen_at TEXT;
ALTER TABLE site_sync ADD COLUMN hint_closed_at TEXT;

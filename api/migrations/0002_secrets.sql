-- Secrets the API generates for itself when none is configured (e.g. the unsubscribe-token key
-- of a development install). A configured secret (env or file) always wins.
CREATE TABLE app_secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

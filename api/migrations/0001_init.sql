-- hikyaku's system of record. The API is its only writer; the engine never reads it.

CREATE TABLE tenants (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Keys are shown once at creation; only a SHA-256 of the secret is kept. The prefix is visible
-- for support ("which key is this?") and is not secret.
CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix      TEXT NOT NULL,
    key_hash    BYTEA NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE sender_identities (
    id            BIGSERIAL PRIMARY KEY,
    tenant_id     BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    from_domain   TEXT NOT NULL,
    dkim_selector TEXT,
    dkim_key_ref  TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, from_domain)
);

CREATE TABLE lists (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE subscribers (
    id           BIGSERIAL PRIMARY KEY,
    list_id      BIGINT NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    tenant_id    BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    email_lower  TEXT NOT NULL,
    attributes   JSONB NOT NULL DEFAULT '{}'::jsonb,
    status       TEXT NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'unsubscribed', 'bounced', 'complained')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (list_id, email_lower)
);

CREATE TABLE suppressions (
    tenant_id    BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email_lower  TEXT NOT NULL,
    reason       TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, email_lower)
);

CREATE TABLE campaigns (
    id                BIGSERIAL PRIMARY KEY,
    tenant_id         BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    list_id           BIGINT NOT NULL REFERENCES lists (id),
    name              TEXT NOT NULL,
    from_name         TEXT NOT NULL DEFAULT '',
    from_addr         TEXT NOT NULL,
    reply_to          TEXT NOT NULL DEFAULT '',
    subject           TEXT NOT NULL,
    text_body         TEXT NOT NULL,
    html_body         TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL DEFAULT 'draft'
                      CHECK (status IN ('draft', 'scheduled', 'sending', 'paused', 'completed', 'cancelled')),
    send_at           TIMESTAMPTZ,
    priority          SMALLINT NOT NULL DEFAULT 0,
    expires_at        TIMESTAMPTZ,
    -- Expansion progress: the last subscriber id enqueued (keyset cursor) and counts.
    expansion_cursor  BIGINT NOT NULL DEFAULT 0,
    expanded          BIGINT NOT NULL DEFAULT 0,
    skipped           BIGINT NOT NULL DEFAULT 0,
    expansion_done    BOOLEAN NOT NULL DEFAULT false,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX campaigns_tenant ON campaigns (tenant_id, id);
CREATE INDEX campaigns_expanding ON campaigns (status) WHERE status = 'sending' AND NOT expansion_done;

-- One row per job end state; (campaign_id, seq, attempt) is the engine's idempotency key, so
-- a replayed event changes nothing. Ready to be range-partitioned on `at` when volume asks.
CREATE TABLE delivery_events (
    campaign_id  BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    attempt      INT NOT NULL,
    tenant_id    BIGINT NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    code         INT NOT NULL,
    enhanced     TEXT NOT NULL,
    detail       TEXT NOT NULL,
    site         TEXT NOT NULL,
    mx           TEXT NOT NULL,
    rcpt         TEXT NOT NULL,
    queued_at    TIMESTAMPTZ NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (campaign_id, seq, attempt)
);
CREATE INDEX delivery_events_rcpt ON delivery_events (campaign_id, rcpt);

-- Live per-campaign counters, by status and by destination site.
CREATE TABLE campaign_counters (
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    status       TEXT NOT NULL,
    site         TEXT NOT NULL,
    n            BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, status, site)
);

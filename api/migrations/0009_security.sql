-- Security: what each API key may do, and how much each tenant may send.

-- Scopes of a key: `read` (every GET), `send` (campaigns: create, edit, delete, test, send,
-- schedule, pause, resume, cancel), `admin` (lists, subscribers, imports, suppressions).
-- Existing keys keep every scope.
ALTER TABLE api_keys ADD COLUMN scopes TEXT[] NOT NULL DEFAULT '{read,send,admin}'
    CHECK (cardinality(scopes) > 0 AND scopes <@ '{read,send,admin}'::text[]);

-- Messages a tenant may send per calendar month (UTC); NULL: no limit.
ALTER TABLE tenants ADD COLUMN monthly_quota BIGINT CHECK (monthly_quota >= 0);

-- Messages counted against the quota: jobs the expander enqueued and test sends, per month.
CREATE TABLE tenant_usage (
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month      DATE NOT NULL,
    messages   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
);

-- When a campaign started sending: tracking tokens record opens and clicks for a while after
-- it (`--tracking-days`), then only serve the pixel and the redirect.
ALTER TABLE campaigns ADD COLUMN sent_at TIMESTAMPTZ;
UPDATE campaigns SET sent_at = updated_at WHERE status NOT IN ('draft', 'scheduled');

-- One-time data fixes the API applies at start (by name), e.g. `ascii-domains`: addresses
-- stored before domains were kept as punycode A-labels.
CREATE TABLE data_fixes (
    name     TEXT PRIMARY KEY,
    done_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

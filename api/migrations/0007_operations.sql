-- Operations: the record of deferrals (for the daily error digest), what operators did (audit),
-- and time indexes for the digest and the retention purge.

-- One row per deferred attempt (not an end state): the engine writes a `deferred` event beside
-- the job it puts in a retry set. Same idempotency key as delivery_events.
CREATE TABLE deferral_events (
    campaign_id  BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    attempt      INT NOT NULL,
    tenant_id    BIGINT NOT NULL,
    reason       TEXT NOT NULL,
    code         INT NOT NULL,
    enhanced     TEXT NOT NULL,
    detail       TEXT NOT NULL,
    site         TEXT NOT NULL,
    mx           TEXT NOT NULL,
    rcpt         TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (campaign_id, seq, attempt)
);

-- Events arrive in time order: BRIN indexes on `at` are a few pages each and cost the insert
-- path almost nothing, yet let the digest and the purge read one day instead of the table.
CREATE INDEX deferral_events_at ON deferral_events USING brin (at);
CREATE INDEX delivery_events_at ON delivery_events USING brin (at);
CREATE INDEX tracking_events_at ON tracking_events USING brin (at);
CREATE INDEX feedback_events_at ON feedback_events USING brin (at);

-- Every admin CLI action: who (OS user), what (command and arguments, secrets never), and
-- how it ended.
CREATE TABLE audit_events (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor      TEXT NOT NULL,
    command    TEXT NOT NULL,
    args       JSONB NOT NULL DEFAULT '{}'::jsonb,
    outcome    TEXT NOT NULL CHECK (outcome IN ('ok', 'error')),
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_at ON audit_events (at);

-- One-click unsubscribes are counted per campaign (the campaign report) beside opens and clicks.
ALTER TABLE tracking_events DROP CONSTRAINT tracking_events_kind_check;
ALTER TABLE tracking_events ADD CONSTRAINT tracking_events_kind_check
    CHECK (kind IN ('open', 'click', 'unsubscribe'));

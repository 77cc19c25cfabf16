-- Bounces and complaints that come back after delivery (DSNs to the VERP address, ARF reports
-- to the feedback address): one row per job and kind, so a repeated report changes nothing.
CREATE TABLE feedback_events (
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('bounce', 'soft-bounce', 'complaint')),
    tenant_id    BIGINT NOT NULL,
    rcpt         TEXT NOT NULL,
    status       TEXT NOT NULL,
    detail       TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, seq, kind)
);
-- Soft bounces of an address within the window decide its suppression.
CREATE INDEX feedback_events_soft ON feedback_events (tenant_id, rcpt, at) WHERE kind = 'soft-bounce';

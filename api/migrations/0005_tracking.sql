-- Optional open and click tracking per campaign (the HTML body is rewritten when frozen).
ALTER TABLE campaigns
    ADD COLUMN track_opens  BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN track_clicks BOOLEAN NOT NULL DEFAULT false;

-- Click targets by link position in the frozen HTML body: `/t/{token}/c/{n}` redirects only
-- to a URL found here, never to one from the request. Rewritten at every freeze (test sends of
-- a draft included); once a campaign sends, its body cannot change, so neither can these.
CREATE TABLE campaign_links (
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    n            INT NOT NULL,
    url          TEXT NOT NULL,
    PRIMARY KEY (campaign_id, n)
);

-- One row per pixel load or click, appended by the unauthenticated tracking routes; repeats
-- are kept (a reopen counts as an open) and stats count distinct subscribers beside them.
-- Test sends (subscriber 0) are never recorded.
CREATE TABLE tracking_events (
    tenant_id      BIGINT NOT NULL,
    campaign_id    BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    subscriber_id  BIGINT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('open', 'click')),
    link           INT,
    at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_agent     TEXT NOT NULL DEFAULT '',
    CHECK ((kind = 'click') = (link IS NOT NULL))
);
-- Campaign stats (counts and distinct subscribers per kind) scan only this index.
CREATE INDEX tracking_events_stats ON tracking_events (campaign_id, kind, subscriber_id);

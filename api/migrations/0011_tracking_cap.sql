-- The unauthenticated tracking routes record at most a few hits per recipient (token), kind
-- and hour as rows in `tracking_events`; the hits beyond are only counted here, per campaign
-- and kind, so a loop over one pixel or link cannot grow the record without bound.
CREATE TABLE tracking_unrecorded (
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('open', 'click')),
    hits         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, kind)
);

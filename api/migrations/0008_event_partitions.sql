-- delivery_events partitioned by day on `at` (UTC days), so retention drops whole days instead
-- of deleting rows. The API creates each day's partition ahead of time (`partitions.rs`); a
-- default partition catches any event outside them, so nothing is ever refused. The
-- idempotency key gains `at` (a partitioned table's keys must hold the partition column): a
-- replayed event carries the same time, so replays still change nothing.
ALTER TABLE delivery_events RENAME TO delivery_events_unpartitioned;
ALTER INDEX delivery_events_rcpt RENAME TO delivery_events_unpartitioned_rcpt;
ALTER INDEX delivery_events_at RENAME TO delivery_events_unpartitioned_at;
ALTER TABLE delivery_events_unpartitioned
    RENAME CONSTRAINT delivery_events_pkey TO delivery_events_unpartitioned_pkey;

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
    PRIMARY KEY (campaign_id, seq, attempt, at)
) PARTITION BY RANGE (at);
CREATE INDEX delivery_events_rcpt ON delivery_events (campaign_id, lower(rcpt));
CREATE INDEX delivery_events_at ON delivery_events USING brin (at);
CREATE TABLE delivery_events_default PARTITION OF delivery_events DEFAULT;

-- Existing rows: a partition for every day they cover, then the rows.
DO $$
DECLARE d date;
BEGIN
    FOR d IN SELECT DISTINCT (at AT TIME ZONE 'UTC')::date FROM delivery_events_unpartitioned LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF delivery_events FOR VALUES FROM (%L) TO (%L)',
            'delivery_events_p' || to_char(d, 'YYYYMMDD'),
            d::timestamp AT TIME ZONE 'UTC',
            (d + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END $$;
INSERT INTO delivery_events SELECT * FROM delivery_events_unpartitioned;
DROP TABLE delivery_events_unpartitioned;

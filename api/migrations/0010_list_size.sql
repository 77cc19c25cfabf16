-- List sizes: each list keeps its subscriber count (every status counts), maintained by
-- statement-level triggers, one UPDATE of the list per INSERT or DELETE statement (an import
-- batch is one statement), and no list of a tenant may hold more than the tenant's
-- `max_list_size` (`hikyaku tenant quota N --list-size M`). A statement that would pass it
-- fails whole with SQLSTATE HK001, which the API answers with 409 `list-full`. A subscriber
-- never moves to another list (refused below); TRUNCATE zeroes every count.

-- All three tables at once, before anything else: every write path takes locks on them in its
-- own order (an import: subscribers, then the keys of lists and tenants; the recorder: tenants,
-- then subscribers), so the migration waits for what runs, then counts with no writer about.
-- A minute without the locks fails the migration (the API does not start; start it again).
SET LOCAL lock_timeout = '60s';
LOCK TABLE tenants, lists, subscribers IN ACCESS EXCLUSIVE MODE;

ALTER TABLE tenants ADD COLUMN max_list_size BIGINT NOT NULL DEFAULT 10000000
    CHECK (max_list_size >= 0);
ALTER TABLE lists ADD COLUMN subscriber_count BIGINT NOT NULL DEFAULT 0;

UPDATE lists l SET subscriber_count = c.n
  FROM (SELECT list_id, count(*) AS n FROM subscribers GROUP BY list_id) c
 WHERE c.list_id = l.id;

CREATE FUNCTION hk_subscribers_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    full_list BIGINT;
    cap BIGINT;
BEGIN
    WITH added AS (SELECT list_id, count(*) AS n FROM added_rows GROUP BY list_id),
         bumped AS (
            UPDATE lists l SET subscriber_count = l.subscriber_count + a.n
              FROM added a WHERE l.id = a.list_id
            RETURNING l.id, l.tenant_id, l.subscriber_count)
    SELECT b.id, t.max_list_size INTO full_list, cap
      FROM bumped b JOIN tenants t ON t.id = b.tenant_id
     WHERE b.subscriber_count > t.max_list_size
     LIMIT 1;
    IF full_list IS NOT NULL THEN
        RAISE EXCEPTION 'list % would hold more than % subscribers, the most a list of this tenant may hold', full_list, cap
            USING ERRCODE = 'HK001';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION hk_subscribers_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lists l SET subscriber_count = l.subscriber_count - r.n
      FROM (SELECT list_id, count(*) AS n FROM removed_rows GROUP BY list_id) r
     WHERE l.id = r.list_id;
    RETURN NULL;
END $$;

CREATE TRIGGER subscribers_added AFTER INSERT ON subscribers
    REFERENCING NEW TABLE AS added_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hk_subscribers_added();
CREATE TRIGGER subscribers_removed AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS removed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hk_subscribers_removed();

CREATE FUNCTION hk_subscribers_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lists SET subscriber_count = 0 WHERE subscriber_count <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION hk_subscriber_stays() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.list_id <> OLD.list_id THEN
        RAISE EXCEPTION 'a subscriber stays in its list (add it to the other list instead)';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER subscribers_truncated AFTER TRUNCATE ON subscribers
    FOR EACH STATEMENT EXECUTE FUNCTION hk_subscribers_truncated();
CREATE TRIGGER subscriber_stays BEFORE UPDATE OF list_id ON subscribers
    FOR EACH ROW EXECUTE FUNCTION hk_subscriber_stays();

-- Monthly partitions (PostgreSQL declarative partitioning) for the tables
-- that grow with time: power_readings, switch_readings, power_logs,
-- energy_intervals and energy_slots. This migration adds the tools; 0011 to
-- 0015 convert one table each (one transaction each), so a `migrate` that
-- is interrupted keeps the tables it finished and goes on with the rest.
--
-- Partitions are whole UTC months named <table>_pYYYYMM, created ahead of
-- time by `migrate` and `retention` and on demand by every writer. Rows
-- another tool inserts for a month without a partition land in
-- <table>_default and move to their month's partition when it is made. A table
-- converted with rows in it keeps them where they are: the old heap becomes
-- the partition <table>_history, holding everything before the first month
-- after the conversion (no copy, no second disk footprint). Its upper bound
-- is in partition_history.

CREATE TABLE partition_history (
    table_name  text PRIMARY KEY,
    upper       timestamptz NOT NULL    -- <table_name>_history holds (MINVALUE, upper)
);

-- Creates the monthly partitions of `parent` covering [from_ts, to_ts]
-- that do not exist yet and are not inside the history partition; returns
-- how many it made. Rows that another writer (psql, a script) put in the
-- default partition for such a month move into the new partition. Safe to
-- run concurrently (a partition made by another session in between is not
-- an error).
CREATE FUNCTION shellyctl_ensure_partitions(parent text, from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    m timestamptz := date_trunc('month', from_ts);
    hist timestamptz;
    dflt text := parent || '_default';
    key text;
    cols text;
    part text;
    stray boolean;
    created integer := 0;
BEGIN
    IF to_ts < from_ts THEN
        RETURN 0;
    END IF;
    -- The callers validate device time; this bounds the loop regardless.
    IF to_ts - from_ts > interval '100 years' THEN
        RAISE EXCEPTION 'refusing to create partitions of % over % to %', parent, from_ts, to_ts;
    END IF;
    SELECT h.upper INTO hist FROM partition_history h WHERE h.table_name = parent;
    SELECT a.attname INTO key FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent::regclass;
    WHILE m <= to_ts LOOP
        IF hist IS NULL OR m >= hist THEN
            part := parent || '_p' || to_char(m, 'YYYYMM');
            IF to_regclass(quote_ident(part)) IS NULL THEN
                -- The parent first, then its default partition: every
                -- creator takes them in this order (looking into the default
                -- partition before locking the parent deadlocked two ingests).
                EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent);
            END IF;
            IF to_regclass(quote_ident(part)) IS NULL THEN -- not made while we waited
                BEGIN
                    stray := false;
                    IF to_regclass(quote_ident(dflt)) IS NOT NULL THEN
                        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)', dflt, key, key)
                           INTO stray USING m, m + interval '1 month';
                    END IF;
                    IF stray THEN
                        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
                          FROM pg_attribute
                         WHERE attrelid = parent::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
                        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                                        INCLUDING GENERATED INCLUDING STORAGE)', part, parent);
                        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING %s)
                                        INSERT INTO %I (%s) SELECT %s FROM moved', dflt, key, key, cols, part, cols, cols)
                           USING m, m + interval '1 month';
                        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                                       parent, part, m, m + interval '1 month');
                    ELSE
                        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                                       part, parent, m, m + interval '1 month');
                    END IF;
                    created := created + 1;
                EXCEPTION WHEN duplicate_table OR unique_violation THEN
                    NULL; -- made by a concurrent session
                END;
            END IF;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN created;
END $$;

-- Gives every month that has rows in the default partition its own
-- partition (the rows move); returns how many partitions it made. Locks the
-- parent: call it when the default partition has rows (a statement of its
-- own can look first without that lock).
CREATE FUNCTION shellyctl_adopt_default(parent text)
RETURNS integer LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    dflt text := parent || '_default';
    key text;
    m timestamptz;
    created integer := 0;
BEGIN
    IF to_regclass(quote_ident(dflt)) IS NULL THEN
        RETURN 0;
    END IF;
    -- Parent before default, as in shellyctl_ensure_partitions.
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent);
    SELECT a.attname INTO key FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent::regclass;
    FOR m IN EXECUTE format('SELECT DISTINCT date_trunc(''month'', %I) FROM %I ORDER BY 1', key, dflt) LOOP
        created := created + shellyctl_ensure_partitions(parent, m, m);
    END LOOP;
    RETURN created;
END $$;

-- Turns `parent` into a table partitioned by month on `key`, in place: the
-- existing heap (if it has rows) is attached as <parent>_history; rows the
-- old code stored in the future (before device time was validated) move
-- to their own monthly partitions. Constraints, indexes, defaults, CHECKs
-- and generated columns are carried over. Does nothing if already done.
CREATE FUNCTION shellyctl_partition_table(parent text, key text)
RETURNS void LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    hist text := parent || '_history';
    upper timestamptz := date_trunc('month', now()) + interval '1 month';
    cons record;
    con_names text[] := '{}';
    con_defs text[] := '{}';
    idx_defs text[] := '{}';
    idx record;
    cols text;
    def text;
    m timestamptz;
    has_rows boolean;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = parent::regclass) THEN
        RETURN;
    END IF;
    -- What the table has, before it is renamed (names are reused on the parent).
    FOR cons IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
                 WHERE conrelid = parent::regclass AND contype IN ('p', 'u', 'f')
                 ORDER BY contype DESC, conname LOOP
        con_names := con_names || cons.conname::text;
        con_defs := con_defs || cons.def;
    END LOOP;
    SELECT coalesce(array_agg(pg_get_indexdef(x.indexrelid) ORDER BY x.indexrelid), '{}') INTO idx_defs
      FROM pg_index x
     WHERE x.indrelid = parent::regclass
       AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid);
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
      FROM pg_attribute
     WHERE attrelid = parent::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';

    EXECUTE format('ALTER TABLE %I RENAME TO %I', parent, hist);
    -- Index names are unique per schema: the old ones make way.
    FOR idx IN SELECT i.relname::text AS name FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                WHERE x.indrelid = hist::regclass LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', idx.name,
                       CASE WHEN starts_with(idx.name, parent)
                            THEN hist || substr(idx.name, length(parent) + 1)
                            ELSE idx.name || '_history' END);
    END LOOP;

    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED
                    INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (%I)', parent, hist, key);
    FOR i IN 1 .. coalesce(array_length(con_names, 1), 0) LOOP
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I %s', parent, con_names[i], con_defs[i]);
    END LOOP;
    FOREACH def IN ARRAY idx_defs LOOP
        EXECUTE def; -- CREATE INDEX <old name> ON <parent> ...
    END LOOP;

    -- Rows for a month without its partition (written by another tool, say)
    -- wait here until shellyctl gives the month its partition.
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', parent || '_default', parent);

    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', hist) INTO has_rows;
    IF NOT has_rows THEN
        EXECUTE format('DROP TABLE %I', hist);
        PERFORM shellyctl_ensure_partitions(parent, now(), now() + interval '3 months');
        RETURN;
    END IF;

    INSERT INTO partition_history (table_name, upper) VALUES (parent, upper)
        ON CONFLICT (table_name) DO UPDATE SET upper = EXCLUDED.upper;
    FOR m IN EXECUTE format('SELECT DISTINCT date_trunc(''month'', %I) FROM %I WHERE %I >= $1', key, hist, key)
             USING upper LOOP
        PERFORM shellyctl_ensure_partitions(parent, m, m);
    END LOOP;
    EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 RETURNING %s) INSERT INTO %I (%s) SELECT %s FROM moved',
                   hist, key, cols, parent, cols, cols) USING upper;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)', parent, hist, upper);
    PERFORM shellyctl_ensure_partitions(parent, upper, now() + interval '3 months');
END $$;

-- energy_slots (the 15-minute sums long reports read) follow energy_intervals
-- because every shellyctl writer adds a page's slots in the same
-- transaction. A statement of any other writer (an INSERT by hand, a
-- restore, another tool; README "Schema contract") is noted here by a
-- statement-level trigger, and reports refuse to read the slots until a
-- whole `shellyctl slots rebuild` has brought them back to the records and
-- cleared the notes. shellyctl's writers set shellyctl.slots_maintained in
-- their transaction and are not noted. The trigger sees no rows (no
-- transition table: capturing every row cost 17 % of a COPY), so it costs
-- one call per statement.
CREATE TABLE energy_intervals_foreign_writes (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    operation   text NOT NULL,
    db_user     text NOT NULL DEFAULT current_user
);

CREATE FUNCTION energy_intervals_note_foreign_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('shellyctl.slots_maintained', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO energy_intervals_foreign_writes (operation) VALUES (TG_OP);
    RETURN NULL;
END $$;

CREATE TRIGGER energy_intervals_foreign_write AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON energy_intervals FOR EACH STATEMENT EXECUTE FUNCTION energy_intervals_note_foreign_write();

-- Agent management (SPEC 10.3): an organisation with agents has exactly one primary
-- agent, whatever order rows change in and however many transactions race.
--
-- At most one: an exclusion constraint instead of 0002's partial unique index, because
-- it can be deferred to the commit, so one transaction may promote before it demotes
-- (a unique index is checked row by row, in whatever order an UPDATE visits the rows).
-- At least one: a deferred constraint trigger checks each organisation a transaction
-- touched, at its commit. Two transactions can only take the last primary away together
-- by changing the same rows (one hands the role to B, the other removes B), so the
-- second waits for the first's commit, and its own check, later, sees what the first
-- did. (The check takes no lock of its own: a writer holding agents' rows would
-- deadlock with one that holds the organisation's row and waits for those rows.)
-- The flows' writes lock the organisation's row before anything else, so they take
-- turns, and check both constraints before the commit (SET CONSTRAINTS ... IMMEDIATE),
-- so a refusal is theirs to translate (storage/accounts.py); the constraints hold for
-- any other writer as well.

DROP INDEX agents_one_primary;
ALTER TABLE agents ADD CONSTRAINT agents_one_primary
    EXCLUDE USING btree (organisation_id WITH =) WHERE (is_primary)
    DEFERRABLE INITIALLY DEFERRED;

-- The same person is one agent of an organisation (its phone was unique already).
ALTER TABLE agents ADD CONSTRAINT agents_one_person UNIQUE (organisation_id, id_number_index);

CREATE FUNCTION agents_primary_required() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    org uuid;
BEGIN
    FOREACH org IN ARRAY CASE TG_OP
            WHEN 'INSERT' THEN ARRAY[NEW.organisation_id]
            WHEN 'DELETE' THEN ARRAY[OLD.organisation_id]
            ELSE ARRAY[OLD.organisation_id, NEW.organisation_id] END LOOP
        IF EXISTS (SELECT 1 FROM agents WHERE organisation_id = org)
                AND NOT EXISTS (SELECT 1 FROM agents
                                WHERE organisation_id = org AND is_primary) THEN
            RAISE EXCEPTION 'organisation % would have agents but no primary agent', org
                USING ERRCODE = 'check_violation', CONSTRAINT = 'agents_primary_required',
                      TABLE = 'agents';
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER agents_primary_required
    AFTER INSERT OR UPDATE OR DELETE ON agents
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION agents_primary_required();

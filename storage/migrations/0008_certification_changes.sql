-- Changes to an organisation's certification data (SPEC 10.1.1).
--
-- An organisation gets a contact phone, sealed and indexed like every phone number.
ALTER TABLE organisations
    ADD COLUMN contact_phone_sealed bytea,
    ADD COLUMN contact_phone_index  bytea;

-- A verified organisation's change waits here until re-verification applies it; until
-- then the organisation's own row, the data in force, is untouched. The new values are
-- a whole snapshot (what stays the same too), personal ones sealed; `shown` holds them
-- as a page may show them (ID and phone masked), so reading a change needs no vault.
--
-- A pending change lives as long as its verification attempt, which is its flow
-- instance: until the instance's expiry (`expires_at`, copied from it), and no longer
-- than the deadline of the state the instance waits in (the deposit's 72 hours,
-- flow_instances.deadline_at). A row still marked pending past either is dead: every
-- reader treats it so, and proposing a new change marks it expired first.
CREATE TABLE certification_changes (
    id                    uuid PRIMARY KEY,
    organisation_id       uuid NOT NULL REFERENCES organisations (account_id),
    instance_id           uuid NOT NULL REFERENCES flow_instances (id),
    status                text NOT NULL
                          CHECK (status IN ('pending', 'applied', 'withdrawn', 'expired')),
    name                  text NOT NULL,
    credit_code           text NOT NULL,
    legal_rep_name        text NOT NULL,
    legal_rep_id_sealed   bytea NOT NULL,
    legal_rep_id_index    bytea NOT NULL,
    contact_phone_sealed  bytea,
    contact_phone_index   bytea,
    changed               text[] NOT NULL,        -- the fields that differ from the old data
    shown                 json NOT NULL,          -- the new values, personal ones masked
    created_at            timestamptz NOT NULL,
    expires_at            timestamptz NOT NULL,
    decided_at            timestamptz             -- when it left pending
);
-- One pending change per organisation, and one claim on a credit code, at a time.
CREATE UNIQUE INDEX certification_changes_one_pending
    ON certification_changes (organisation_id) WHERE status = 'pending';
CREATE UNIQUE INDEX certification_changes_pending_credit_code
    ON certification_changes (credit_code) WHERE status = 'pending';
CREATE INDEX certification_changes_instance ON certification_changes (instance_id);

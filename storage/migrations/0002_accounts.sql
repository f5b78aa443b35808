-- Accounts of people, organisations (with their agents), supervisors and administrators.
-- ID numbers and phone numbers are sealed (AES-GCM) and found through an HMAC index.

CREATE TABLE accounts (
    id                    uuid PRIMARY KEY,
    kind                  text NOT NULL CHECK (kind IN ('personal', 'organisation',
                                                        'supervisor', 'admin')),
    login_name            text NOT NULL,
    login_key             text NOT NULL UNIQUE,     -- lower-cased login name
    display_name          text NOT NULL,
    password_hash         text NOT NULL,
    must_change_password  boolean NOT NULL DEFAULT false,
    id_number_sealed      bytea,
    id_number_index       bytea,
    phone_sealed          bytea,
    phone_index           bytea,
    created_at            timestamptz NOT NULL,
    password_changed_at   timestamptz NOT NULL
);
-- One personal account per ID number and per mobile number (they log in with either).
CREATE UNIQUE INDEX accounts_personal_id ON accounts (id_number_index)
    WHERE kind = 'personal';
CREATE UNIQUE INDEX accounts_personal_phone ON accounts (phone_index)
    WHERE kind IN ('personal', 'supervisor') AND phone_index IS NOT NULL;

CREATE TABLE organisations (
    account_id            uuid PRIMARY KEY REFERENCES accounts (id),
    name                  text NOT NULL,
    credit_code           text NOT NULL UNIQUE,
    legal_rep_name        text NOT NULL,
    legal_rep_id_sealed   bytea NOT NULL,
    legal_rep_id_index    bytea NOT NULL,
    verified              boolean NOT NULL DEFAULT false,
    verified_at           timestamptz,
    verified_by           text,                    -- face | deposit | admin:<id>
    verification_note     text
);

CREATE TABLE agents (
    id                uuid PRIMARY KEY,
    organisation_id   uuid NOT NULL REFERENCES organisations (account_id),
    name              text NOT NULL,
    id_number_sealed  bytea NOT NULL,
    id_number_index   bytea NOT NULL,
    phone_sealed      bytea NOT NULL,
    phone_index       bytea NOT NULL,
    is_primary        boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL,
    UNIQUE (organisation_id, phone_index)
);
CREATE INDEX agents_phone ON agents (phone_index);
-- Always at most one primary agent per organisation (exactly one: the flows see to it).
CREATE UNIQUE INDEX agents_one_primary ON agents (organisation_id) WHERE is_primary;

-- Who passed face verification: later registrations of the same name and ID skip it.
CREATE TABLE face_passes (
    person_index  bytea PRIMARY KEY,              -- HMAC of name + ID number
    passed_at     timestamptz NOT NULL,
    instance_id   uuid NOT NULL
);

-- What administrators did, and why: append-only like the flow histories.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL,
    reason      text NOT NULL,
    details     json NOT NULL
);
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION flow_events_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION flow_events_append_only();

-- Provider sessions and deposits, to find the flow instance a callback is about.
CREATE TABLE provider_refs (
    provider     text NOT NULL,                   -- face | payment
    ref          text NOT NULL,                   -- session id, deposit id
    instance_id  uuid NOT NULL REFERENCES flow_instances (id),
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (provider, ref)
);

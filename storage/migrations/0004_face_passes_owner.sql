-- A face pass lets only its owner skip the face step of a later registration: the
-- browser that passed it (device:<hash>) or the signed-in account (account:<id>), and
-- only within the face_skip policy's window. One row per person and owner, with the
-- latest pass.
-- Passes recorded before this carry no owner, so they can never let anyone skip again:
-- they are dropped rather than kept as rows nobody can use.
DROP TABLE face_passes;
CREATE TABLE face_passes (
    person_index  bytea NOT NULL,                 -- HMAC of name + ID number
    owner         text NOT NULL,                  -- who started the registration
    passed_at     timestamptz NOT NULL,
    instance_id   uuid NOT NULL,
    PRIMARY KEY (person_index, owner)
);

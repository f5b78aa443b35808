-- Definitions, instances, their hash-chained histories, timers and the outbox.
-- JSON columns are `json`, not `jsonb`: the hashed values must come back byte for byte.

CREATE TABLE flow_definitions (
    version     text PRIMARY KEY,            -- sha256 of the flow's canonical content
    flow        text NOT NULL,
    content     json NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flow_definitions_flow ON flow_definitions (flow, first_seen);

CREATE TABLE flow_instances (
    id                  uuid PRIMARY KEY,
    flow                text NOT NULL,
    definition_version  text NOT NULL REFERENCES flow_definitions (version),
    state               text NOT NULL,
    context             json NOT NULL,
    version             integer NOT NULL,    -- seq of the last event
    status              text NOT NULL CHECK (status IN ('active', 'finished')),
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    deadline_at         timestamptz,         -- the pending state timeout, if any
    last_hash           text NOT NULL,
    owner               text NOT NULL,       -- the actor who started it
    start_key           text UNIQUE          -- Idempotency-Key of the request that started it
);

CREATE TABLE flow_events (
    instance_id         uuid NOT NULL REFERENCES flow_instances (id),
    seq                 integer NOT NULL CHECK (seq >= 1),
    trigger             text NOT NULL,
    from_state          text,
    to_state            text NOT NULL,
    input               json NOT NULL,       -- redacted: secret fields never get here
    facts               json NOT NULL,       -- what the trigger's actions found (guards see it)
    effects             json NOT NULL,       -- what on_enter actions did after the decision
    actor               text NOT NULL,
    at                  text NOT NULL,       -- the recorded time, exactly as hashed
    definition_version  text NOT NULL REFERENCES flow_definitions (version),
    prev_hash           text NOT NULL,
    hash                text NOT NULL,
    idempotency_key     text,
    PRIMARY KEY (instance_id, seq)
);
CREATE UNIQUE INDEX flow_events_idempotency
    ON flow_events (instance_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- History is append-only, whoever connects: refuse UPDATE, DELETE and TRUNCATE.
CREATE FUNCTION flow_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'flow_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER flow_events_no_change BEFORE UPDATE OR DELETE ON flow_events
    FOR EACH ROW EXECUTE FUNCTION flow_events_append_only();
CREATE TRIGGER flow_events_no_truncate BEFORE TRUNCATE ON flow_events
    FOR EACH STATEMENT EXECUTE FUNCTION flow_events_append_only();

CREATE TABLE flow_timers (
    id            bigserial PRIMARY KEY,
    instance_id   uuid NOT NULL REFERENCES flow_instances (id),
    state         text NOT NULL,
    trigger       text NOT NULL,
    due_at        timestamptz NOT NULL,
    leased_until  timestamptz
);
CREATE INDEX flow_timers_due ON flow_timers (due_at);
CREATE INDEX flow_timers_instance ON flow_timers (instance_id);

CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    instance_id      uuid NOT NULL,
    seq              integer NOT NULL,
    topic            text NOT NULL,
    payload          json NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,   -- stable across retries: instance:seq:n
    created_at       timestamptz NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    leased_until     timestamptz,
    sent_at          timestamptz,
    dead_at          timestamptz,            -- given up after too many attempts
    last_error       text
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at)
    WHERE sent_at IS NULL AND dead_at IS NULL;

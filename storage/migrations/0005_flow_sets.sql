-- Every set of flows a server served (at start or reload), as definition versions: a
-- server that finds its flows file invalid at start serves the newest set instead.
CREATE TABLE flow_sets (
    id          bigserial PRIMARY KEY,
    versions    text[] NOT NULL,             -- sorted; each one in flow_definitions
    served_at   timestamptz NOT NULL DEFAULT now()
);

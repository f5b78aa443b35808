-- flowctl audit pages through every instance, oldest first, by (created_at, id).
-- Neither column changes when a step updates an instance, so steps stay HOT updates.
CREATE INDEX flow_instances_created ON flow_instances (created_at, id);

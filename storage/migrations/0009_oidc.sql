-- The OpenID Connect provider: its signing keys and the business systems' client secrets.

-- Signing keys: a key is published (JWKS) while 'next', before it signs; signs while
-- 'current'; stays published while 'retired' until the tokens it signed have expired,
-- then goes. The private part is sealed with the vault (AES-GCM) and dropped at
-- retirement: a retired key never signs again.
CREATE TABLE oidc_signing_keys (
    kid              text PRIMARY KEY,
    alg              text NOT NULL,
    public_jwk       json NOT NULL,
    private_sealed   bytea,
    state            text NOT NULL CHECK (state IN ('next', 'current', 'retired')),
    created_at       timestamptz NOT NULL,
    activated_at     timestamptz,
    retired_at       timestamptz,
    published_until  timestamptz,
    CHECK ((state = 'retired') = (private_sealed IS NULL)),
    CHECK (state <> 'retired' OR published_until IS NOT NULL)
);
-- At most one key signs, and at most one waits to.
CREATE UNIQUE INDEX oidc_signing_keys_one_current ON oidc_signing_keys (state)
    WHERE state = 'current';
CREATE UNIQUE INDEX oidc_signing_keys_one_next ON oidc_signing_keys (state)
    WHERE state = 'next';

-- Client secrets of confidential systems: only a keyed hash (HMAC-SHA256 under the
-- vault's index key) of a 256-bit random secret; several may be valid at once while a
-- system moves to a new one.
CREATE TABLE oidc_client_secrets (
    id           bigserial PRIMARY KEY,
    system_id    text NOT NULL,
    secret_hash  bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX oidc_client_secrets_system ON oidc_client_secrets (system_id)
    WHERE revoked_at IS NULL;

-- Which business systems each platform session entered, so that ending the session
-- logs the person out of them too (OpenID Connect Back-Channel Logout 1.0).
--
-- One row per (session, system): the `sid` the system was told in its ID tokens, the
-- subject it knows the account by, and until when the session could live. When the
-- session ends (sign-out, every session of the account ended, an agent removed) the
-- rows are marked ended and, in the same transaction, one outbox message per system
-- with a back-channel logout URI is queued; the outbox names it by the row's `id`
-- (there is no flow instance behind a sign-out) and its idempotency key by the sid, so
-- a session ending twice notifies a system once.
CREATE TABLE oidc_session_systems (
    id           uuid PRIMARY KEY,
    session_ref  text NOT NULL,          -- sha256 of the session token (flows.sessions.ref)
    system_id    text NOT NULL,
    sid          text NOT NULL UNIQUE,   -- random; what the system sees, never the ref
    account_id   uuid NOT NULL,
    agent_id     uuid,                   -- an organisation's agent who signed in
    subject      text NOT NULL,          -- `sub` as this system knows the account
    entered_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,   -- the session's own end at the latest
    ended_at     timestamptz,
    UNIQUE (session_ref, system_id)
);
CREATE INDEX oidc_session_systems_account ON oidc_session_systems (account_id)
    WHERE ended_at IS NULL;
CREATE INDEX oidc_session_systems_expires ON oidc_session_systems (expires_at);

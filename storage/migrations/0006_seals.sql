-- Seal images of accounts (SPEC 10.1.2, 10.2.1): round for an organisation, square for a
-- person. A seal keeps the text it shows (the organisation's name in force, or the
-- person's, when it was made or last restyled) and its style; content_hash (SHA-256 of
-- the canonical style and text, flows/sealart.py) names what it shows, as the flow
-- histories record it.
--
-- A deleted seal is kept, marked deleted_at, so what a seal looked like can still be
-- told from the hash a document or a history names; nothing serves it any more.
CREATE TABLE seals (
    id            uuid PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts (id),
    kind          text NOT NULL CHECK (kind IN ('round', 'square')),
    text          text NOT NULL,
    style         json NOT NULL,
    content_hash  text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz
);
-- Two seals of one account never show the same thing.
CREATE UNIQUE INDEX seals_distinct ON seals (account_id, content_hash)
    WHERE deleted_at IS NULL;
-- A person holds one seal. (An organisation holds at most a few: storage/seals.py counts
-- them under a lock on the account's row, as a partial index cannot.)
CREATE UNIQUE INDEX seals_one_square ON seals (account_id)
    WHERE kind = 'square' AND deleted_at IS NULL;
CREATE INDEX seals_of_account ON seals (account_id, created_at) WHERE deleted_at IS NULL;

-- An idempotent replay answers with the first response's media type (a success's
-- `application/json`, a refusal's `application/problem+json`, a provider's own format), not a
-- guess. Rows stored before this migration have none: their replay says `application/json`.
ALTER TABLE idempotency_keys ADD COLUMN content_type TEXT;

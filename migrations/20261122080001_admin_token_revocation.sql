-- Issue 8: administrator tokens are revocable like users' (logout: revoked_tokens by jti;
-- password change: every token issued at or before this instant).
ALTER TABLE administrators ADD COLUMN tokens_valid_after TIMESTAMPTZ;

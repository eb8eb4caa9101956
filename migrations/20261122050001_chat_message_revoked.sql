-- Issue 5: a revoked message keeps its row (the log keeps it too) and is marked.
ALTER TABLE chat_messages ADD COLUMN revoked_at TIMESTAMPTZ;

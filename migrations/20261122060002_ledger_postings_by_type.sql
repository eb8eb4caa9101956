-- Issue 6: the admin finance statistics read the ledger: postings of one event type in a period
-- (e.g. the `SessionBilled` lines of a month), and one account's postings of one type.
CREATE INDEX ledger_postings_type_time ON ledger_postings (event_type, recorded_at);

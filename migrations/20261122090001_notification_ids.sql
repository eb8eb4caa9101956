-- Notifications derived from events get deterministic ids (event position × 8 + n), so a
-- rebuild or an audit replay reproduces them, and the table can be swapped blue/green (no column
-- default tying it to a sequence). The few notifications written outside the log (application
-- reviews) take negative ids from a free-standing sequence, so the two never collide.
ALTER TABLE notifications ALTER COLUMN id DROP DEFAULT;
ALTER SEQUENCE notifications_id_seq OWNED BY NONE;
ALTER SEQUENCE notifications_id_seq MINVALUE -9223372036854775808 MAXVALUE -1 INCREMENT BY -1 START WITH -1 RESTART WITH -1;

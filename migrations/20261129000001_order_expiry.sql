-- The order expiry sweep (contract f.9, `projections::expiry`): orders still awaiting payment,
-- oldest first.
CREATE INDEX orders_pending_created ON orders (created_at, id) WHERE status = 0;

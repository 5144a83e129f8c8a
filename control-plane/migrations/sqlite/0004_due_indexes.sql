-- Only open deliveries are indexed for the dispatcher: pending ones by due time, leased ones by
-- lease expiry. Finished deliveries (nearly all rows, over time) leave both indexes, so they stay
-- small, and a delivery leased when published never enters the pending one.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (priority, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'leased';
-- A FIFO delivery is due once no earlier delivery to its endpoint is open: that check reads
-- only the open deliveries of FIFO endpoints, not the endpoint's whole history.
CREATE INDEX deliveries_fifo ON deliveries (endpoint_id, id) WHERE ordered AND status IN ('pending', 'leased');

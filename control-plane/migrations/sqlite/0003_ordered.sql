-- FIFO endpoints: a delivery waits until every earlier delivery to its endpoint has finished.
ALTER TABLE deliveries ADD COLUMN ordered INTEGER NOT NULL DEFAULT 0;

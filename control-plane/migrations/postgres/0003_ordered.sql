-- FIFO endpoints: a delivery waits until every earlier delivery to its endpoint has finished.
ALTER TABLE deliveries ADD COLUMN ordered BOOLEAN NOT NULL DEFAULT FALSE;

-- A rolled-back generation names the generation the stack went back to.
ALTER TABLE generations ADD COLUMN reverted_to INTEGER;

-- Undoes 0001_initial_schema: dependents first.
DROP TABLE cost_ledger;
DROP TABLE documents;
DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE users;

-- Lookup indexes for the paths the assistant reads most: a conversation's messages in
-- order, a user's conversations and documents, documents by content hash and metadata,
-- and spend per user over time (the COST_LIMIT_PER_HOUR / _PER_DAY checks).
-- The embeddings themselves live in ChromaDB; the image is plain PostgreSQL 15 without
-- pgvector, so these are btree and GIN indexes.

CREATE INDEX messages_conversation_created_idx ON messages (conversation_id, created_at);
CREATE INDEX conversations_user_updated_idx ON conversations (user_id, updated_at DESC);
CREATE INDEX documents_user_id_idx ON documents (user_id);
CREATE INDEX documents_sha256_idx ON documents (sha256);
CREATE INDEX documents_metadata_gin_idx ON documents USING GIN (metadata jsonb_path_ops);
CREATE INDEX cost_ledger_user_created_idx ON cost_ledger (user_id, created_at);

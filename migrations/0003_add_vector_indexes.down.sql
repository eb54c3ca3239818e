-- Undoes 0003_add_vector_indexes.
DROP INDEX cost_ledger_user_created_idx;
DROP INDEX documents_metadata_gin_idx;
DROP INDEX documents_sha256_idx;
DROP INDEX documents_user_id_idx;
DROP INDEX conversations_user_updated_idx;
DROP INDEX messages_conversation_created_idx;

-- Undoes 0002_add_user_sessions (its indexes go with the table).
DROP TABLE user_sessions;

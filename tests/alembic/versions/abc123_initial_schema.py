"""initial schema

Revision ID: abc123
Revises:
"""
from alembic import op

revision = "abc123"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.execute(
        """
        CREATE TABLE users (
            id BIGSERIAL PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE conversations (
            id BIGSERIAL PRIMARY KEY,
            user_id BIGINT NOT NULL REFERENCES users (id),
            title TEXT NOT NULL
        );
        """
    )


def downgrade():
    op.execute("DROP TABLE conversations; DROP TABLE users;")

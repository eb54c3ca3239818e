"""add_user_sessions

Revision ID: def456
Revises: abc123
"""
from alembic import op

revision = "def456"
down_revision = "abc123"
branch_labels = None
depends_on = None


def upgrade():
    op.execute(
        """
        CREATE TABLE user_sessions (
            id BIGSERIAL PRIMARY KEY,
            user_id BIGINT NOT NULL REFERENCES users (id),
            expires_at TIMESTAMPTZ NOT NULL
        );
        """
    )


def downgrade():
    op.execute("DROP TABLE user_sessions;")

"""Alembic environment: online migrations against $DATABASE_URL, all pending
revisions in one transaction (PostgreSQL has transactional DDL), so a failed
revision leaves nothing of the upgrade applied."""
import logging.config
import os

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name)

url = os.environ["DATABASE_URL"]

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()

"""The throwaway PostgreSQL database every benchmark builds its data in: created fresh on the
server DATABASE_URL names, migrated with the console's settings, dropped at the end."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]


def database_url(server_url: str, name: str) -> str:
    """The same server, user and options as server_url, with the database `name`."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def _maintenance_connection(server_url: str) -> psycopg.Connection:
    config = dj_database_url.parse(server_url)
    return psycopg.connect(
        dbname="postgres",
        user=config.get("USER") or None,
        password=config.get("PASSWORD") or None,
        host=config.get("HOST") or None,
        port=config.get("PORT") or None,
        autocommit=True,
    )


def drop_database(server_url: str, name: str) -> None:
    with _maintenance_connection(server_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_database(server_url: str, name: str) -> None:
    drop_database(server_url, name)
    with _maintenance_connection(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def setup_django(database_url: str, var_dir: str) -> None:
    """Point the console's settings at the bench database, as production-like as a laptop gets,
    and migrate it."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["CONSOLE_VAR_DIR"] = var_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "console.settings"
    os.environ["DEBUG"] = "false"  # no query log kept on every cursor
    os.environ["ALLOWED_HOSTS"] = "testserver"  # django.test.Client's host
    os.environ["CLUSTER_BACKEND"] = "simulated"  # nodes from deploy/simulated_nodes.json
    os.environ["CELERY_BROKER_URL"] = "memory://"  # nothing is enqueued; never reach a real broker
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("CELERY_RESULT_BACKEND", None)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)

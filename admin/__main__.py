"""Operator commands: `python -m admin create-key USER` prints a new API key for USER once."""

from __future__ import annotations

import argparse
import sys

from pipelines.settings import Settings
from storage.db import Database
from studio.errors import ApiKeyLimitError
from studio.service import Studio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-key", help="create an API key for a user and print it once")
    create.add_argument("user", help="the user id (Hugging Face username on a Space)")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    db = Database(settings.data_dir / "tunes.db")
    try:
        if args.command == "create-key":
            if not args.user.strip():
                parser.error("USER must not be empty")
            try:
                key = Studio(settings, db).create_api_key(args.user.strip())
            except ApiKeyLimitError as error:  # a cap to respect, not a bug: one line, no trace
                print(error, file=sys.stderr)
                return 1
            print(key)
            print(f"API key for {args.user} in {db.path} (shown once; store it now).", file=sys.stderr)
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

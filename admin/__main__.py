"""Operator commands: `python -m admin create-key USER` prints a new API key for USER once;
`python -m admin jobs-cost [--minutes N]` prints what one tune costs on each GPU flavor of Hugging Face Jobs."""

from __future__ import annotations

import argparse
import sys

from admin.operations import JOBS_COST_COLUMNS, TUNE_JOB_MINUTES, jobs_costs
from pipelines.errors import ValidationError
from pipelines.settings import Settings
from storage.db import Database
from studio.errors import ApiKeyLimitError
from studio.service import Studio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-key", help="create an API key for a user and print it once")
    create.add_argument("user", help="the user id (Hugging Face username on a Space)")
    cost = commands.add_parser(
        "jobs-cost", help="the price of each GPU flavor of Hugging Face Jobs and the cost of one tune on it"
    )
    cost.add_argument(
        "--minutes",
        type=float,
        default=TUNE_JOB_MINUTES,
        help=f"one tune's job time, cold start included (default {TUNE_JOB_MINUTES:g}: an estimate, see README)",
    )
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    if args.command == "jobs-cost":
        return _jobs_cost(settings, args.minutes)
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


def _jobs_cost(settings: Settings, minutes: float) -> int:
    """Print the GPU flavors of the Hub's hardware list (its live prices) as a table; 1 when the Hub cannot say."""
    from huggingface_hub import HfApi

    from storage.artifacts import describe_hub_error

    try:
        hardware = HfApi(token=settings.hf_token).list_jobs_hardware()
        costs = jobs_costs(hardware, minutes=minutes)
    except ValidationError as error:
        print(error, file=sys.stderr)
        return 1
    except Exception as error:  # the Hub is unreachable or refused: one line, never the token
        reason = describe_hub_error(error)
        if settings.hf_token:
            reason = reason.replace(settings.hf_token, "hf_***")
        print(f"Could not read the Hugging Face Jobs hardware list: {reason}", file=sys.stderr)
        return 1
    rows = [JOBS_COST_COLUMNS, *(cost.row() for cost in costs)]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(JOBS_COST_COLUMNS))]
    for row in rows:
        print("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
    print(
        f"A tune: {minutes:g} min of job time, cold start included (--minutes). Prices: the Hub's hardware list, "
        f"read now. TUNES_JOBS_FLAVOR: {settings.jobs_flavor}.",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

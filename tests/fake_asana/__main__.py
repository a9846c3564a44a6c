"""Run the fake Asana API standalone (benchmarks, manual runs of the tap).

Example::

    python -m tests.fake_asana --port 0 --workspaces 2 --projects-per-workspace 5 \
        --tasks-per-project 100 --stories-per-task 3 --latency 0.1 --rate-limit 1500

Prints ``KEY=value`` lines (api_url, token_url, authorize_url, pat, client_id,
client_secret, refresh_token, ...) and serves until Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from .dataset import build_dataset
from .server import FakeAsana


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_asana", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--workspaces", type=int, default=2)
    parser.add_argument("--users-per-workspace", type=int, default=4)
    parser.add_argument("--projects-per-workspace", type=int, default=3)
    parser.add_argument("--tasks-per-project", type=int, default=12)
    parser.add_argument("--stories-per-task", type=int, default=2)
    parser.add_argument("--multi-home-every", type=int, default=5)
    parser.add_argument("--archived-every", type=int, default=3)
    parser.add_argument("--subtasks-every", type=int, default=6, help="0 = no subtasks")
    parser.add_argument("--attachments-every", type=int, default=3, help="0 = none")
    parser.add_argument("--time-entries-every", type=int, default=4, help="0 = none")
    parser.add_argument(
        "--non-premium",
        default="",
        help="comma-separated 1-based workspace numbers without paid features (402s)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per API request")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests/minute per token")
    parser.add_argument("--access-token-ttl", type=int, default=3600)
    parser.add_argument("--offset-ttl", type=float, default=None, help="pagination token TTL (s)")
    parser.add_argument("--client-id", default="fake-client-id")
    parser.add_argument("--client-secret", default="fake-client-secret")
    parser.add_argument("--no-cache", action="store_true", help="render every response anew")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Build the dataset, start the server, print its coordinates and serve until stopped."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    dataset = build_dataset(
        workspaces=args.workspaces,
        users_per_workspace=args.users_per_workspace,
        projects_per_workspace=args.projects_per_workspace,
        tasks_per_project=args.tasks_per_project,
        stories_per_task=args.stories_per_task,
        multi_home_every=args.multi_home_every,
        archived_every=args.archived_every,
        subtasks_every=args.subtasks_every,
        attachments_every=args.attachments_every,
        time_entries_every=args.time_entries_every,
        seed=args.seed,
    )
    build_seconds = time.perf_counter() - started
    fake = FakeAsana(
        dataset,
        latency=args.latency,
        rate_limit_per_minute=args.rate_limit,
        access_token_ttl=args.access_token_ttl,
        host=args.host,
        port=args.port,
    )
    fake.offset_ttl = args.offset_ttl
    workspace_gids = list(dataset.workspaces)
    for number in filter(None, (n.strip() for n in args.non_premium.split(","))):
        fake.premium_workspaces.discard(workspace_gids[int(number) - 1])
    # Nothing mutates the data in a standalone run, so cached renderings are always valid.
    fake.cache_responses = not args.no_cache
    fake.register_client(args.client_id, args.client_secret)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with fake:
        lines = {
            "api_url": fake.api_url,
            "token_url": fake.token_url,
            "authorize_url": fake.authorize_url,
            "pat": fake.pat,
            "client_id": args.client_id,
            "client_secret": args.client_secret,
            "refresh_token": fake.issue_refresh_token(args.client_id),
            "workspaces": ",".join(dataset.workspaces),
            "counts": (
                f"users={len(dataset.users)} projects={len(dataset.projects)} "
                f"tasks={len(dataset.tasks)} stories={len(dataset.stories)} "
                f"subtasks={len(dataset.subtasks)} "
                f"subtask_stories={len(dataset.subtask_stories)} "
                f"built_in={build_seconds:.2f}s"
            ),
        }
        for key, value in lines.items():
            print(f"{key}={value}")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

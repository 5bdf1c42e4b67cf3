"""`launchkit event ...`: drive the event's lifecycle on a running origin from a terminal.

It talks to the origin's ops API with LAUNCHKIT_OPS_TOKEN, so it works from anywhere the origin
is reachable (a laptop, a CI job, a Kubernetes CronJob).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from launchkit.auth import Tokens

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TIMEOUT = 10


def add_parser(commands: Any) -> None:
    event = commands.add_parser(
        "event", help="show or change the event's state on a running origin",
        description="Show or change the event's state (scheduled → live → ended) on a running origin. "
                    "Needs LAUNCHKIT_OPS_TOKEN.",
    )
    event.add_argument("action", choices=("status", "schedule", "live", "end"),
                       help="status: print the event; schedule: (re)announce the start; live: go live; end: end "
                            "the event (the replay becomes available)")
    event.add_argument("--origin", default=os.environ.get("LAUNCHKIT_ORIGIN", "http://127.0.0.1:8080"),
                       help="the origin's base URL (env LAUNCHKIT_ORIGIN; default: %(default)s)")
    event.add_argument("--start-at", help="with schedule: the announced start time, ISO 8601 with UTC offset")


def run(args: argparse.Namespace, tokens: Tokens) -> int:
    if tokens.generated and not os.environ.get("LAUNCHKIT_OPS_TOKEN"):
        print("launchkit event: error: set LAUNCHKIT_OPS_TOKEN to the origin's ops token", file=sys.stderr)
        return EXIT_USAGE
    base = args.origin.rstrip("/")
    if args.action == "status":
        request = urllib.request.Request(f"{base}/api/ops/status")
    else:
        body: dict[str, Any] = {"action": args.action}
        if args.start_at:
            body["start_at"] = args.start_at
        request = urllib.request.Request(
            f"{base}/api/ops/event", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
    request.add_header("Authorization", f"Bearer {tokens.ops}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            result = json.loads(response.read())
    except urllib.error.HTTPError as error:
        message = error.read().decode(errors="replace").strip()
        print(f"launchkit event {args.action}: error: {error.code} {message}", file=sys.stderr)
        return EXIT_FAILED
    except (urllib.error.URLError, OSError) as error:
        print(f"launchkit event {args.action}: error: cannot reach {base}: {getattr(error, 'reason', error)}",
              file=sys.stderr)
        return EXIT_FAILED
    event = result.get("event", result)
    print(json.dumps(event, indent=2))
    return EXIT_OK

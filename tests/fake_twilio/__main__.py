"""`python -m tests.fake_twilio`: run the fake Twilio server as its own process (benchmarks).

Prints one JSON line with its base URL once listening; Ctrl-C or SIGTERM stops it.
Standalone controls: GET /_fake/stats, POST /_fake/reset, POST /_fake/fail (to, error, times),
POST /_fake/config (latency, error_rate, error_kind).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from tests.fake_twilio import latency
from tests.fake_twilio.server import FakeTwilio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_twilio", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--account-sid", default="AC" + "0" * 32)
    parser.add_argument("--auth-token", default="fake-auth-token")
    latency.arguments_add(parser, realistic=False)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--error-kind", default="500")
    parser.add_argument("--error-mix", default="", help='error shares, e.g. "500=0.1,429=0.05,timeout=0.02"')
    parser.add_argument("--timeout-sleep", type=float, default=5.0)
    parser.add_argument("--callbacks", choices=("thread", "off"), default="thread")
    parser.add_argument("--callback-statuses", default="sent,delivered")
    parser.add_argument("--callback-delay", type=float, default=0.0)
    parser.add_argument("--out-of-order", action="store_true")
    parser.add_argument("--duplicates", action="store_true")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    fake = FakeTwilio(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        host=args.host,
        port=args.port,
        latency=latency.from_arguments(args),
        error_rate=args.error_rate,
        error_kind=args.error_kind,
        error_mix=error_mix_parse(args.error_mix),
        timeout_sleep=args.timeout_sleep,
        callbacks=args.callbacks,
        callback_statuses=tuple(filter(None, args.callback_statuses.split(","))),
        callback_delay=args.callback_delay,
        out_of_order=args.out_of_order,
        duplicates=args.duplicates,
        seed=args.seed,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with fake:
        print(json.dumps({"fake_twilio": fake.base_url, "account_sid": args.account_sid}), flush=True)
        stop.wait()
        print(json.dumps({"fake_twilio": "stopped", **fake.stats()}), flush=True)
    return 0


def error_mix_parse(text: str) -> dict[str, float]:
    """ "500=0.1,429=0.05" -> {"500": 0.1, "429": 0.05}."""
    mix = {}
    for part in filter(None, (item.strip() for item in text.split(","))):
        name, _, share = part.partition("=")
        mix[name.strip()] = float(share)
    return mix


if __name__ == "__main__":
    sys.exit(main())

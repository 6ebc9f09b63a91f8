"""``python -m byzerllm.workers``: the worker process, as node agents start it.

The spec comes from Redis (the deployment of ``--model``, its secrets
unsealed with the cluster key), or, with ``--spec-stdin``, as JSON on
standard input from the process that started this one: either way no secret
is ever on a command line. Redis is named by ``BYZERLLM_REDIS_URL`` and
``BYZERLLM_PREFIX``. A start error is printed on one line and exits 1, so the
node agent can report it with the worker's log tail. Users start a worker by
hand with ``byzerllm worker``, which takes the deploy flags instead.
"""

from __future__ import annotations

import argparse
import sys

from byzerllm.broker.errors import ByzerLLMError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.liveness import WorkerTiming
from byzerllm.workers.runtime import serve
from byzerllm.workers.startup import configure_logging, run_loop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m byzerllm.workers", description=__doc__)
    parser.add_argument("--model", required=True, help="the alias to serve")
    parser.add_argument(
        "--spec-stdin", action="store_true", help="read the DeploySpec as JSON from stdin"
    )
    parser.add_argument("--heartbeat_interval", type=float, default=WorkerTiming.heartbeat_interval)
    parser.add_argument("--heartbeat_ttl", type=float, default=WorkerTiming.heartbeat_ttl)
    parser.add_argument("--claim_idle", type=float, default=WorkerTiming.claim_idle)
    parser.add_argument("--log_level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    timing = WorkerTiming(
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_ttl=args.heartbeat_ttl,
        claim_idle=args.claim_idle,
    )
    try:
        settings = BrokerSettings.from_env()
        spec = DeploySpec.model_validate_json(sys.stdin.read()) if args.spec_stdin else None
        if spec is not None and spec.alias != args.model:
            raise ByzerLLMError(f"the spec on stdin is for {spec.alias!r}, not {args.model!r}")
        print(f"worker for {args.model} on {settings.safe_url}", file=sys.stderr, flush=True)
        run_loop(serve(spec, settings, timing, alias=args.model))
    except ByzerLLMError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

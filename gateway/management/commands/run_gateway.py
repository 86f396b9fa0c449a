"""`manage.py run_gateway`: serve the inference gateway on GATEWAY_HOST:GATEWAY_PORT.

uvicorn with uvloop and httptools (measured fastest here, see bench/gateway.py). It never uses
$PORT (honcho hands that to the web process). --workers N runs N processes on the same port;
each keeps its own cache and subscribes to invalidations itself.
"""

import os

from django.conf import settings
from django.core.management.base import BaseCommand

from gateway import conf


class Command(BaseCommand):
    help = "Run the inference gateway (the only way into the models)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="Default: GATEWAY_HOST.")
        parser.add_argument("--port", type=int, default=None, help="Default: GATEWAY_PORT.")
        parser.add_argument(
            "--grpc-port", type=int, default=None, help="Default: GATEWAY_GRPC_PORT (0: no gRPC)."
        )
        parser.add_argument(
            "--workers", type=int, default=None, help="Processes (default GATEWAY_WORKERS, 1)."
        )

    def handle(self, *args, host=None, port=None, grpc_port=None, workers=None, **options):
        import uvicorn

        host = host or settings.GATEWAY_HOST
        port = port or settings.GATEWAY_PORT
        grpc_port = settings.GATEWAY_GRPC_PORT if grpc_port is None else grpc_port
        workers = workers or conf.workers()
        # The workers start the gRPC listener themselves (gateway.app): tell them where.
        os.environ["GATEWAY_GRPC_BIND"] = f"{host}:{grpc_port}" if grpc_port else ""
        mode = "Redis" if conf.redis_url() else "embedded (no Redis: in-process limits, polled invalidation)"
        self.stdout.write(f"Gateway: http://{host}:{port}/<service>/...  ({mode}, {workers} worker(s))")
        if grpc_port:
            self.stdout.write(f"Gateway gRPC: {host}:{grpc_port}, service in `x-inference-service` metadata")
        uvicorn.run(
            "gateway.asgi:app",
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,  # one line per call would cost more than the proxying; usage is metered
            server_header=False,  # the model server's own Server and Date headers pass through
            date_header=False,
            log_level="info",
            timeout_keep_alive=30,
            # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any local process could
            # then pose as an allowed network. Only the configured front proxies are believed.
            proxy_headers=bool(conf.forwarded_allow_ips()),
            forwarded_allow_ips=conf.forwarded_allow_ips() or None,
        )

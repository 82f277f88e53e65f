"""`stargan-rt serve REPO`: NVIDIA's tritonserver on a model repository (loopback by default)."""
from __future__ import annotations

import signal

from stargan_rt import options
from stargan_rt.errors import UserError

PORT = options.Number(int, 1, 65535, "a TCP port")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a Triton model repository with tritonserver",
        description="Run NVIDIA's tritonserver on a repository written by `stargan-rt export "
                    "--triton REPO`. Binds 127.0.0.1 unless --host says otherwise; clients use "
                    "--server grpc://HOST:PORT with translate, parity and webcam.")
    p.add_argument("repo", metavar="REPO", help="the model repository")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the server to the "
                        "network: put it behind your own authentication)")
    p.add_argument("--http", type=PORT, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--grpc", type=PORT, default=8001, help="gRPC port (default 8001)")
    p.add_argument("--metrics", type=PORT, default=8002,
                   help="Prometheus metrics port (default 8002)")
    p.add_argument("--log", metavar="FILE", help="write the server's log here (default: this "
                   "terminal)")
    p.add_argument("--ready-timeout", type=options.SECONDS, default=300.0,
                   help="seconds to wait for every model to load (default 300)")
    p.set_defaults(func=run)


def run(args) -> int:
    from stargan_rt.serve.server import Ports, TritonServer

    ports = Ports(args.http, args.grpc, args.metrics)
    if len({ports.http, ports.grpc, ports.metrics}) < 3:
        raise UserError("--http, --grpc and --metrics need three different ports")
    server = TritonServer(args.repo, args.host, ports, log_path=args.log)
    print(f"tritonserver {server.install.binary}: {len(server.models)} models from {server.repo}")
    stopping = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum, _frame):  # only signal here: the main thread is inside process.wait()
        stopping.append(signum)
        server.terminate()
    server.start()
    try:
        for sig in previous:
            signal.signal(sig, stop)
        server.wait_ready(args.ready_timeout)
        print(f"ready: {server.grpc_url} and {server.http_url}, metrics {server.metrics_url}; "
              "Ctrl-C to stop", flush=True)
        code = server.process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    if stopping:
        print("tritonserver stopped")
        return 0
    print(f"tritonserver exited with status {code}")
    return 1 if code else 0

"""The --server options of the verbs that can run their networks on a Triton server
(translate, parity, webcam)."""
from __future__ import annotations

from stargan_rt import options


def add_server_options(parser) -> None:
    """--server and its time-out, shared by translate, parity and webcam."""
    parser.add_argument("--server", metavar="URL",
                        help="run the networks on a Triton server (grpc://HOST:PORT or "
                             "http://HOST:PORT) serving `export --triton` of this --model")
    parser.add_argument("--server-timeout", type=options.SECONDS, default=10.0, metavar="S",
                        help="--server: seconds a request may take before the run stops "
                             "(default 10)")

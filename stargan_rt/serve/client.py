"""The remote engine: a bundle's networks served by Triton, behind the runtime's engine interface.

``remote_translator(model, "grpc://127.0.0.1:8001")`` returns a ``runtime.Translator`` whose
engines are ``RemoteEngine``s: the same per-frame work as a local build (v2 styles computed once,
the FAN per frame), each network call one Triton request that the server's dynamic batcher may
join with other clients' requests. Before any frame, every model the bundle needs is checked on
the server: present and ready, exported from this very bundle (its content hash), and taking
the inputs the export contract names. Server errors, lost connections and time-outs are
``RemoteError``s (a UserError): the CLI prints one line, a stream stops with status 1.
"""
from __future__ import annotations

import threading
from urllib.parse import urlparse

import numpy as np

from stargan_rt.backends.base import Engine, TensorSpec
from stargan_rt.errors import UserError
from stargan_rt.serve.repository import PARAM_PREFIX, TRITON_DTYPES, WIRE_DTYPES, model_name

SCHEMES = ("grpc", "http")
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
NUMPY_TO_TRITON = WIRE_DTYPES
TRITON_TO_NUMPY = {v: k for k, v in TRITON_DTYPES.items()}  # config data types


class RemoteError(UserError):
    """The server failed a request, went away or did not answer in time: a failure of the run
    (exit status 1), not of the user's input."""

    exit_code = 1


def parse_server_url(url: str) -> tuple[str, str]:
    """'grpc://HOST:PORT' or 'http://HOST:PORT' -> (scheme, 'HOST:PORT')."""
    parsed = urlparse(url if "://" in url else f"//{url}")
    if parsed.scheme not in SCHEMES or not parsed.hostname or parsed.path not in ("", "/"):
        raise UserError(f"--server {url}: expected grpc://HOST:PORT or http://HOST:PORT "
                        "(e.g. grpc://127.0.0.1:8001)")
    try:
        port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    except ValueError:
        raise UserError(f"--server {url}: the port is not a number in 1..65535; expected "
                        "grpc://HOST:PORT or http://HOST:PORT") from None
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return parsed.scheme, f"{host}:{port}"


class Connection:
    """One Triton server: a client per thread (the stream's inference workers call at once),
    connect and request time-outs."""

    def __init__(self, url: str, timeout_s: float = 10.0, connect_timeout_s: float = 5.0):
        self.url = url
        self.scheme, self.address = parse_server_url(url)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        try:
            if self.scheme == "grpc":
                import tritonclient.grpc as module
            else:
                import tritonclient.http as module
            from tritonclient.utils import InferenceServerException
        except ImportError as exc:
            raise UserError(f"--server needs tritonclient ({exc}); install it with pip install "
                            "'stargan-rt[serve]'") from None
        self.module = module
        self.server_error = InferenceServerException
        self._local = threading.local()
        self._clients: list = []   # every thread's, to close them all
        self._lock = threading.Lock()

    @property
    def client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.scheme == "grpc":
                client = self.module.InferenceServerClient(self.address)
            else:
                client = self.module.InferenceServerClient(
                    self.address, connection_timeout=self.connect_timeout_s,
                    network_timeout=self.timeout_s)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def call(self, what: str, fn, *args, timeout: float | None = None, **kwargs):
        """Run a client call; its failures become RemoteErrors that name the server."""
        if self.scheme == "grpc":
            kwargs["client_timeout"] = timeout or self.timeout_s
        try:
            return fn(self.client, *args, **kwargs)
        except self.server_error as exc:
            raise RemoteError(f"Triton server {self.url}: {what}: {_reason(exc)}") from None
        except (OSError, ConnectionError) as exc:  # http: refused, reset, timed out
            raise RemoteError(f"Triton server {self.url}: {what}: {exc}") from None

    def check_live(self) -> None:
        live = self.call("not reachable", lambda c, **kw: c.is_server_live(**kw),
                         timeout=self.connect_timeout_s)
        if not live:
            raise RemoteError(f"Triton server {self.url} is not live")

    def model_config(self, model: str):
        """The served model's config (a ModelConfig message)."""
        if self.scheme == "grpc":
            return self.call(f"model {model}", lambda c, **kw: c.get_model_config(
                model, **kw).config)
        from google.protobuf import json_format
        from tritonclient.grpc import model_config_pb2

        data = self.call(f"model {model}", lambda c, **kw: c.get_model_config(model))
        return json_format.ParseDict(data, model_config_pb2.ModelConfig(),
                                     ignore_unknown_fields=True)

    def infer(self, model: str, arrays: dict[str, np.ndarray], outputs: list[str]):
        m = self.module
        inputs = []
        for name, array in arrays.items():
            if array.dtype.name not in NUMPY_TO_TRITON:
                raise UserError(f"model {model}: input {name} is {array.dtype.name}; stargan-rt "
                                f"sends {', '.join(NUMPY_TO_TRITON)}")
            tensor = m.InferInput(name, list(array.shape), NUMPY_TO_TRITON[array.dtype.name])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        wanted = [m.InferRequestedOutput(n) for n in outputs]
        result = self.call(f"model {model}", lambda c, **kw: c.infer(
            model, inputs, outputs=wanted, **kw))
        return {n: result.as_numpy(n) for n in outputs}

    def close(self) -> None:
        """Close every thread's client (idempotent)."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        self._local = threading.local()


def _reason(exc) -> str:
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    text = (text or str(exc)).strip()
    if "Deadline Exceeded" in text or "timed out" in text.lower():
        return f"no answer in time ({text})"
    if "failed to connect" in text.lower() or "unavailable" in text.lower():
        return f"cannot connect ({text}); is the server running? (stargan-rt serve REPO)"
    return text


class RemoteEngine(Engine):
    """One network served by Triton; inputs and outputs from the server's model config."""

    target = "triton"

    def __init__(self, connection: Connection, model: str, config, precision: str):
        self.connection = connection
        self.model = model
        self.precision = precision
        self.max_batch = int(config.max_batch_size) or None
        self.inputs = [self._spec(t) for t in config.input]
        self.outputs = [self._spec(t) for t in config.output]
        # what the server expects per item on the wire (before its reshape)
        self._wire_dims = {t.name: tuple(int(d) for d in t.dims) for t in config.input}

    @staticmethod
    def _spec(tensor) -> TensorSpec:
        from tritonclient.grpc import model_config_pb2

        dtype = model_config_pb2.DataType.Name(tensor.data_type)
        dims = tuple(tensor.reshape.shape) if tensor.HasField("reshape") else tuple(tensor.dims)
        if dtype not in TRITON_TO_NUMPY:
            raise UserError(f"served tensor {tensor.name}: data type {dtype} is not one "
                            "stargan-rt sends")
        return TensorSpec(tensor.name, (None,) + tuple(int(d) for d in dims),
                          np.dtype(TRITON_TO_NUMPY[dtype]))

    def _run(self, feeds):
        arrays = {}
        for name, array in feeds.items():
            spec = self.input(name)
            if array.shape[1:] != spec.shape[1:]:
                raise UserError(f"{self.describe()}: input {name} has shape {array.shape}; the "
                                f"served model takes {spec.describe()}")
            arrays[name] = np.ascontiguousarray(
                array.reshape((len(array),) + self._wire_dims[name]))
        return self.connection.infer(self.model, arrays, [s.name for s in self.outputs])

    def close(self) -> None:
        self.connection.close()

    def describe(self) -> str:
        return f"triton {self.connection.url} {self.model} ({self.precision})"


def check_served(config, model: str, bundle, network: str, url: str) -> None:
    """The served model was exported from this bundle and takes what the contract names."""
    from stargan_rt.export.contract import io_spec

    params = {k: v.string_value for k, v in config.parameters.items()}
    served_hash = params.get(PARAM_PREFIX + "bundle_hash")
    if served_hash != bundle.content_hash:
        raise UserError(f"Triton server {url}: model {model} was exported from bundle "
                        f"{served_hash or '(unknown)'}, but {bundle.path} is "
                        f"{bundle.content_hash}; export the repository from this bundle "
                        "(stargan-rt export --triton REPO --model ...) or pass the --model it "
                        "was made from")
    spec = io_spec(bundle.manifest.arch, network, "uint8", bundle.manifest.image_size,
                   bundle.manifest.config, len(bundle.manifest.domains))
    for side, served in (("inputs", config.input), ("outputs", config.output)):
        want = {(s["name"], s["dtype"]) for s in spec[side]}
        have = {(t.name, RemoteEngine._spec(t).dtype.name) for t in served}
        if want != have:
            raise UserError(f"Triton server {url}: model {model} {side} differ from the export "
                            f"contract: served {sorted(have)}, expected {sorted(want)}; "
                            "re-export the repository with this stargan-rt")


def remote_translator(model, url: str, timeout_s: float = 10.0, log=print):
    """A runtime Translator whose engines run on the Triton server at ``url``."""
    from stargan_rt.build import networks_for
    from stargan_rt.bundle import Bundle
    from stargan_rt.defaults import resolve_model
    from stargan_rt.runtime import Translator

    bundle = Bundle.open(resolve_model(model))
    connection = Connection(url, timeout_s)
    connection.check_live()
    engines = {}
    for network in networks_for(bundle):
        name = model_name(bundle, network)
        try:
            ready = connection.call(f"model {name}", lambda c, n=name, **kw: c.is_model_ready(n, **kw))
        except RemoteError:
            ready = False
        if not ready:
            raise UserError(f"Triton server {url} has no ready model {name}; export it with "
                            f"`stargan-rt export --triton REPO --model {bundle.path}` and serve "
                            "that repository")
        config = connection.model_config(name)
        check_served(config, name, bundle, network, url)
        engines[network] = RemoteEngine(connection, name, config, _param(config, "network_precision"))
        if network == "generator":
            # the served build's own target and precision: parity judges the engines by them
            target, precision = _param(config, "target"), _param(config, "precision")
    log(f"server: {url}, models {', '.join(e.model for e in engines.values())} ({target} "
        f"{precision})")
    return Translator(bundle, target, precision, engines)


def _param(config, key: str) -> str:
    return config.parameters[PARAM_PREFIX + key].string_value

"""gRPC through the gateway: a real grpcio server on 127.0.0.1 as the model's gRPC port (raw
bytes, generic handlers: what Triton's port 8001 looks like to a proxy), called with grpcio's
client through `run_gateway`'s gRPC listener."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import redis
from django.conf import settings as django_settings

from gateway import conf
from gateway.grpc_relay import _peer_address
from gateway.metering import Record
from tests.gateway.upstream import free_port
from tests.stack import wait_for

LIVE = "/inference.GRPCInferenceService/ServerLive"


class GrpcUpstream:
    """Unary `ServerLive` (with initial and trailing metadata), a bidi `Chat` stream, `Fail`
    (NOT_FOUND) and `Slow` (answers after 2 s). Records the metadata of every call."""

    def __init__(self):
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.server = grpc.server(ThreadPoolExecutor(8))
        self.server.add_generic_rpc_handlers([self])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def service(self, details):
        self.seen.append((details.method, dict(details.invocation_metadata)))
        name = details.method.rsplit("/", 1)[-1]
        if name == "Chat":
            return grpc.stream_stream_rpc_method_handler(self.chat)
        if name == "Drip":
            return grpc.unary_stream_rpc_method_handler(self.drip)
        return grpc.unary_unary_rpc_method_handler(getattr(self, name.lower(), self.live))

    def live(self, request: bytes, context) -> bytes:
        context.send_initial_metadata((("x-model-server", "mock"),))
        context.set_trailing_metadata((("x-trailer", "done"),))
        return b"live:" + request

    def chat(self, requests, context):
        for request in requests:
            yield b"echo:" + request

    def drip(self, request: bytes, context):
        """A message every 50 ms until the caller goes away (at most 10 s)."""
        for i in range(200):
            if self.released.wait(0.05) or not context.is_active():
                return
            yield b"%d" % i

    def fail(self, request: bytes, context) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "no model named m")

    def slow(self, request: bytes, context) -> bytes:
        self.released.wait(2)
        return b"late"

    def stop(self) -> None:
        self.released.set()
        self.server.stop(0)


@pytest.fixture
def grpc_upstream():
    server = GrpcUpstream()
    yield server
    server.stop()


@pytest.fixture
def grpc_gateway(start_gateway):
    port = free_port()
    start_gateway(GATEWAY_GRPC_PORT=str(port))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()


def metadata(service: str | None, key: str | None, *extra: tuple[str, str]) -> tuple:
    pairs = [("x-inference-service", service)] if service else []
    if key:
        pairs.append(("authorization", f"Bearer {key}"))
    return (*pairs, *extra)


def test_a_unary_call_passes_with_its_metadata_and_without_the_key(
    grpc_gateway, grpc_upstream, upstream, make_service, make_key
):
    service = make_service("vision", upstream.url, grpc=grpc_upstream.url, runtime="triton")
    _key, plaintext = make_key([service])
    answer, call = grpc_gateway.unary_unary(LIVE).with_call(
        b"ping",
        metadata=metadata("vision", plaintext, ("x-request-id", "r1"), ("host", "elsewhere")),
        timeout=10,
    )
    assert answer == b"live:ping"
    assert ("x-model-server", "mock") in call.initial_metadata()
    assert ("x-trailer", "done") in call.trailing_metadata()
    method, seen = grpc_upstream.seen[-1]
    assert method == LIVE and seen["x-request-id"] == "r1"
    assert (
        "authorization" not in seen and "x-inference-service" not in seen and seen.get("host") != "elsewhere"
    )
    assert seen["x-forwarded-for"] == "127.0.0.1"
    # The namespace-qualified name reaches the same service.
    qualified = metadata(f"vision.{service.namespace}", plaintext)
    assert grpc_gateway.unary_unary(LIVE)(b"x", metadata=qualified, timeout=10) == b"live:x"


def test_a_bidi_stream_relays_every_message_in_order(
    grpc_gateway, grpc_upstream, upstream, make_service, make_key
):
    service = make_service("vision", upstream.url, grpc=grpc_upstream.url, runtime="triton")
    _key, plaintext = make_key([service])
    chat = grpc_gateway.stream_stream("/demo.Echo/Chat")
    answers = list(chat(iter([b"a", b"b", b"c"]), metadata=metadata("vision", plaintext), timeout=10))
    assert answers == [b"echo:a", b"echo:b", b"echo:c"]


def test_refusals_are_grpc_statuses_and_never_reach_the_model(
    grpc_gateway, grpc_upstream, upstream, make_service, make_key
):
    vision = make_service("vision", upstream.url, grpc=grpc_upstream.url, runtime="triton")
    other = make_service("other", upstream.url, grpc=grpc_upstream.url, runtime="triton")
    chat = make_service("chat", upstream.url)  # vLLM: no gRPC port
    _key, plaintext = make_key([vision, chat])
    _other_key, other_plaintext = make_key([other], name="other")
    live = grpc_gateway.unary_unary(LIVE)
    cases = [
        (metadata(None, plaintext), grpc.StatusCode.INVALID_ARGUMENT, "x-inference-service"),
        (metadata("nosuch", plaintext), grpc.StatusCode.NOT_FOUND, "nosuch"),
        (metadata("vision", None), grpc.StatusCode.UNAUTHENTICATED, "Missing API key"),
        (metadata("vision", plaintext + "x"), grpc.StatusCode.UNAUTHENTICATED, "Invalid API key"),
        (metadata("vision", other_plaintext), grpc.StatusCode.PERMISSION_DENIED, "not allowed"),
        (metadata("chat", plaintext), grpc.StatusCode.UNIMPLEMENTED, "over HTTP"),
    ]
    for sent, code, words in cases:
        with pytest.raises(grpc.RpcError) as refused:
            live(b"x", metadata=sent, timeout=10)
        assert refused.value.code() == code, (sent, refused.value.details())
        assert words in refused.value.details()
    assert grpc_upstream.seen == []


def test_statuses_and_deadlines_of_the_model_pass_through(
    grpc_gateway, grpc_upstream, upstream, make_service, make_key
):
    service = make_service("vision", upstream.url, grpc=grpc_upstream.url, runtime="triton")
    _key, plaintext = make_key([service])
    with pytest.raises(grpc.RpcError) as failed:
        grpc_gateway.unary_unary("/demo.Echo/Fail")(b"x", metadata=metadata("vision", plaintext), timeout=10)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert failed.value.details() == "no model named m"
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as late:
        grpc_gateway.unary_unary("/demo.Echo/Slow")(b"x", metadata=metadata("vision", plaintext), timeout=0.5)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5  # the caller's deadline, not the model's 2 s


def test_a_request_limit_is_resource_exhausted_with_retry_after(
    grpc_gateway, grpc_upstream, upstream, make_service, make_key
):
    service = make_service("vision", upstream.url, grpc=grpc_upstream.url, runtime="triton")
    _key, plaintext = make_key([service], rpm_limit=2)
    live = grpc_gateway.unary_unary(LIVE)
    for _ in range(2):
        assert live(b"x", metadata=metadata("vision", plaintext), timeout=10) == b"live:x"
    with pytest.raises(grpc.RpcError) as refused:
        live(b"x", metadata=metadata("vision", plaintext), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(refused.value.trailing_metadata())
    assert 1 <= int(trailing["retry-after"]) <= 120
    assert trailing["x-ratelimit-limit"] == "2"
    assert len(grpc_upstream.seen) == 2


def test_a_model_whose_grpc_port_is_down_is_unavailable(grpc_gateway, upstream, make_service, make_key):
    service = make_service("vision", upstream.url, grpc=f"http://127.0.0.1:{free_port()}", runtime="triton")
    _key, plaintext = make_key([service])
    with pytest.raises(grpc.RpcError) as down:
        grpc_gateway.unary_unary(LIVE)(b"x", metadata=metadata("vision", plaintext), timeout=10)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_calls_are_metered_per_key_with_their_status(
    grpc_gateway, grpc_upstream, upstream, make_service, make_key
):
    service = make_service("vision", upstream.url, grpc=grpc_upstream.url, runtime="triton")
    key, plaintext = make_key([service])
    assert grpc_gateway.unary_unary(LIVE)(b"x", metadata=metadata("vision", plaintext), timeout=10)
    with pytest.raises(grpc.RpcError):
        grpc_gateway.unary_unary("/demo.Echo/Fail")(b"x", metadata=metadata("vision", plaintext), timeout=10)
    client = redis.Redis.from_url(django_settings.REDIS_URL)

    def records() -> list[Record]:
        entries = client.xrange(conf.usage_stream())
        return [Record(*row) for _id, fields in entries for row in json.loads(fields[b"records"])]

    metered = wait_for(lambda: records() if len(records()) >= 2 else None, timeout=5, what="usage records")
    assert sorted((r.key_id, r.service_id, r.status) for r in metered) == [
        (key.id, service.id, 200),
        (key.id, service.id, 404),
    ]


def test_a_caller_that_hangs_up_mid_stream_is_metered_as_gone(
    grpc_gateway, grpc_upstream, upstream, make_service, make_key
):
    service = make_service("vision", upstream.url, grpc=grpc_upstream.url, runtime="triton")
    _key, plaintext = make_key([service])
    stream = grpc_gateway.unary_stream("/demo.Echo/Drip")(
        b"", metadata=metadata("vision", plaintext), timeout=20
    )
    assert [next(stream), next(stream)] == [b"0", b"1"]
    stream.cancel()
    client = redis.Redis.from_url(django_settings.REDIS_URL)

    def statuses() -> list[int]:
        entries = client.xrange(conf.usage_stream())
        return [Record(*row).status for _id, fields in entries for row in json.loads(fields[b"records"])]

    assert wait_for(lambda: statuses() or None, timeout=5, what="the call's usage record") == [499]


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.1.2.3:5000", ("10.1.2.3", 5000)),
        ("ipv6:%5B::1%5D:41234", ("::1", 41234)),  # as grpcio writes it
        ("ipv6:[fe80::1%25eth0]:80", ("fe80::1", 80)),
        ("unix:/tmp/socket", None),
        (None, None),
    ],
)
def test_peer_addresses_as_grpcio_reports_them(peer, address):
    assert _peer_address(peer) == address

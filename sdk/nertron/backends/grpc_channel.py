"""The gRPC plumbing of the Triton clients (``pip install "nertron[triton]"``): which failures are the
transport's, a channel that knows who closed it, and sending a request.

A transport failure (the server is down, restarting, overloaded or late, or the channel was closed under the
request) may be retried or computed by a fallback; any other status (INVALID_ARGUMENT, INTERNAL from a model
bug, ...) is an answer that a fallback must not hide.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from nertron.errors import TritonUnavailable
from nertron.extras import require

_FEATURE = "Triton inference (backend=Triton(...))"
grpcclient = require("tritonclient.grpc", _FEATURE)
InferenceServerException = require("tritonclient.utils", _FEATURE).InferenceServerException
grpc = require("grpc", _FEATURE)

# gRPC statuses of transport failures.
TRANSPORT = (
    "StatusCode.UNAVAILABLE",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.CANCELLED",
)
# Those worth sending again (the server is restarting or overloaded). A request that timed out is not sent
# again: the caller has already waited ``timeout``.
RETRYABLE = ("StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED")


def grpc_status(error: BaseException) -> str | None:
    """The gRPC status of a tritonclient or grpc error, as ``"StatusCode.NAME"`` (None for other errors)."""
    if isinstance(error, InferenceServerException):
        return None if error.status() is None else str(error.status())
    if isinstance(error, grpc.RpcError) and callable(getattr(error, "code", None)):
        return str(error.code())
    return None


def is_transport_error(error: BaseException) -> bool:
    """Whether ``error`` is a transport failure: one that may be retried or computed by a fallback."""
    return isinstance(error, TritonUnavailable) or grpc_status(error) in TRANSPORT


class ChannelClosed(Exception):
    """A request could not be sent because this side closed the channel (``disconnect``, ``close``)."""


class ChannelReplaced(Exception):
    """A request failed because a reconnect replaced its channel with one checked anew: send it again there."""


class Channel:
    """A tritonclient gRPC client and whether this side closed it: grpc raises a plain ``ValueError`` for a
    request on a closed channel, a transport failure only when it was us who closed it. ``replaced``: it was
    closed for a newer, checked channel (``TritonClient.connect``), so its requests are sent again there."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.closed = False
        self.replaced = False

    def close(self, *, replaced: bool = False) -> None:
        self.replaced = replaced
        self.closed = True
        self.client.close()

    def failure(self, error: Exception) -> Exception:
        """What a request on this channel failed with: ``ChannelReplaced`` for a transport failure after the
        channel was replaced, else ``error``."""
        return ChannelReplaced() if self.replaced and is_transport_error(error) else error


def dispatch(
    channel: Channel, request: dict[str, Any], done: Callable[..., None], future: Future[Any], blocking: bool
) -> Future[Any]:
    """Sends ``request`` (tritonclient's ``infer`` keywords); ``done`` gets the reply, in this thread when
    ``blocking``, else in a gRPC thread. A request refused by the server, or not sent because this side
    closed the channel, fails ``future``; any other exception is a bug here or in tritonclient and
    propagates."""

    def replied(result: Any = None, error: Exception | None = None) -> None:  # tritonclient's keyword names
        done(result=result, error=None if error is None else channel.failure(error))

    try:
        if blocking:
            done(result=channel.client.infer(**request))
        else:
            channel.client.async_infer(callback=replied, **request)
    except (InferenceServerException, grpc.RpcError) as error:
        future.set_exception(channel.failure(error))
    except Exception:
        if not channel.closed:
            raise
        future.set_exception(ChannelReplaced() if channel.replaced else ChannelClosed())
    return future


def channel_args() -> list[tuple[str, Any]]:
    """tritonclient's defaults plus a short reconnect backoff: after a blip, gRPC reconnects within ~1 s
    instead of after its default backoff of up to 2 minutes."""
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]

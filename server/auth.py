"""Optional bearer-token authentication (``--auth-token`` or ``$STQA_AUTH_TOKEN``).

Every call must carry the metadata ``authorization: Bearer <token>`` or it is answered
UNAUTHENTICATED, except the standard health service: orchestrators probe health without credentials,
and it reveals nothing but SERVING / NOT_SERVING. Reflection is protected like the service itself.
Tokens are compared in constant time. Use TLS as well, or the token crosses the network in clear.
"""

from __future__ import annotations

import hmac

import grpc

from .metrics import ServerMetrics

#: Methods callable without a token (prefix match on the full method name).
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _deny_handler(handler: grpc.RpcMethodHandler, method: str, metrics: ServerMetrics | None):
    """A handler of the same streaming kind as ``handler`` that aborts with UNAUTHENTICATED."""

    async def deny(_request_or_iterator, context: grpc.aio.ServicerContext):
        if metrics is not None:
            metrics.requests.labels(method=method.rsplit("/", 1)[-1], code="UNAUTHENTICATED").inc()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "missing or wrong bearer token (metadata 'authorization: Bearer <token>')")

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(deny, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without the right ``authorization: Bearer`` metadata."""

    def __init__(self, token: str, metrics: ServerMetrics | None = None) -> None:
        if not token or not token.strip():
            raise ValueError("the auth token must not be empty")
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics

    def _authorized(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if self._authorized(handler_call_details.invocation_metadata):
            return handler
        return _deny_handler(handler, method, self._metrics)

"""What botocore raises when the network, not the service, failed: always worth a retry.

botocore retries these itself (its retry modes count them as transient), so one reaching
our code means an outage longer than those retries. They are `BotoCoreError`s, not
`ClientError`s: an adapter that catches only `ClientError` lets them escape as a crash of
the whole invocation, with paid-for images unrecorded.
"""

from __future__ import annotations

from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError

# ConnectionError: EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError,
# SSLError. HTTPClientError: ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
# (the request may have reached AWS: callers retry only what is safe to repeat).
NETWORK_ERRORS: tuple[type[Exception], ...] = (BotoConnectionError, HTTPClientError)

"""The endpoint's instance time, observed and attributed (functions/endpoint_observer).

Each run looks at the endpoint as AWS reports it (DescribeEndpoint), records the counts when
they changed, and attributes every window that has closed since the last one attributed
(costs.overhead): each batch's cold start and idle in its summary, day rollup and an
`OVERHEAD#` record, the rest as the endpoint's unattributed idle, which /costs shows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from imagebatch.aws.ports import EndpointInstancesPort, EndpointUsagePort
from imagebatch.costs.overhead import (
    InstanceSample,
    Window,
    attribute_window,
    sessions_from_samples,
    windows,
)
from imagebatch.costs.prices import InstancePrice

logger = Logger(child=True)


class ObserverRun(BaseModel):
    sample: InstanceSample
    recorded: bool
    attributed: list[Window]


def observe_endpoint(
    instances: EndpointInstancesPort,
    usage: EndpointUsagePort,
    price: InstancePrice,
    now: Callable[[], datetime],
    settle: timedelta = timedelta(0),
) -> ObserverRun:
    """One look; every window closed at least `settle` ago is attributed."""
    endpoint = instances.endpoint_name
    sample = instances.sample(now())
    last = usage.last_sample(endpoint)
    changed = last is None or (last.desired, last.current) != (sample.desired, sample.current)
    if changed:
        usage.record_sample(endpoint, sample)
    since = usage.last_window_end(endpoint)
    closed, still_open = sessions_from_samples(usage.samples_since(endpoint, since), sample.at)
    attributed = []
    for window in windows(closed, still_open):
        if not window.closed or window.end > sample.at - settle:
            continue
        requests = usage.requests_between(endpoint, window.start, window.end)
        charged = usage.commit_window(endpoint, attribute_window(window, requests, price))
        logger.info(
            "endpoint window attributed",
            extra={
                "start": window.start.isoformat(),
                "end": window.end.isoformat(),
                "billed_micro_usd": charged.billed_micro_usd,
                "by_batch": charged.by_batch(),
            },
        )
        attributed.append(charged)
    return ObserverRun(sample=sample, recorded=changed, attributed=attributed)

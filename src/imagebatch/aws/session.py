"""AWS for a person at a terminal (the CLI): a session with their --profile and --region,
its clients, SigV4-signed requests to the query API, and botocore's errors in words to act on.

The Lambdas build their clients in clients.py from the function's environment; this module is
for the laptop side, where a missing region or expired credentials is the common case and
deserves one clear line, not a traceback.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import boto3
import botocore.exceptions
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config

from imagebatch.errors import AwsAccessError

if TYPE_CHECKING:
    from mypy_boto3_bedrock import BedrockClient
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_service_quotas import ServiceQuotasClient
    from mypy_boto3_sqs import SQSClient

    from imagebatch.aws.cost_explorer import CostExplorerClient
    from imagebatch.aws.price_list import PricingClient

_CLI_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30
)
_INVOKE_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=910
)
_NO_REGION = (
    "no AWS region: pass --region, set AWS_REGION, or give your AWS profile a region "
    "(`aws configure`)"
)
_NO_CREDENTIALS = (
    "no AWS credentials found: pass --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or sign in (`aws configure` or `aws sso login`)"
)


def explain_aws_error(exc: BaseException, doing: str = "") -> AwsAccessError:  # noqa: PLR0911 - one wording per error kind
    """One line a person can act on, for anything botocore raises."""
    prefix = f"{doing}: " if doing else ""
    errors = botocore.exceptions
    if isinstance(exc, errors.NoRegionError):
        return AwsAccessError(prefix + _NO_REGION)
    if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError):
        return AwsAccessError(prefix + _NO_CREDENTIALS)
    if isinstance(exc, errors.ProfileNotFound):
        return AwsAccessError(
            f"{prefix}AWS profile {exc.kwargs.get('profile')!r} is not in your AWS config"
        )
    if isinstance(exc, errors.TokenRetrievalError | errors.SSOError):
        return AwsAccessError(f"{prefix}your AWS sign-in has expired ({exc}): `aws sso login`")
    if isinstance(exc, errors.EndpointConnectionError | errors.ConnectTimeoutError):
        return AwsAccessError(
            f"{prefix}cannot reach {exc.kwargs.get('endpoint_url', 'AWS')}: check --region "
            "and your network"
        )
    if isinstance(exc, errors.ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "") or "request"
        return AwsAccessError(
            f"{prefix}AWS refused {operation}: {error.get('Code', 'Error')}: "
            f"{error.get('Message', '')}".rstrip(": ")
        )
    return AwsAccessError(f"{prefix}{type(exc).__name__}: {exc}")


@contextmanager
def aws_errors(doing: str = "") -> Iterator[None]:
    """Run AWS calls; a botocore error leaves as an AwsAccessError."""
    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise explain_aws_error(exc, doing) from exc


@dataclass(frozen=True)
class SignedResponse:
    status: int
    body: str


class AwsSession:
    """One boto3 session with the person's profile and region; clients are made from it."""

    def __init__(
        self,
        profile: str | None = None,
        region: str | None = None,
        *,
        default_region: str | None = None,
        endpoint_url: str | None = None,
        access_key: tuple[str, str] | None = None,
    ) -> None:
        """`region` wins; else the environment's or the profile's; else `default_region`
        (the region samconfig.toml deploys to). `endpoint_url` and `access_key` (id, secret)
        point every client at one endpoint with those credentials: `imagebatch local up`'s
        local AWS, which a person's own profile must never reach."""
        key_id, secret = access_key if access_key is not None else (None, None)
        with aws_errors("AWS profile"):
            self._session = boto3.Session(
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                profile_name=profile,
                region_name=region,
            )
        self._default_region = default_region
        self._endpoint_url = endpoint_url

    @property
    def region(self) -> str:
        region = self._session.region_name or self._default_region
        if not region:
            raise AwsAccessError(_NO_REGION)
        return region

    def _client(self, service: str, region: str | None = None, config: Config = _CLI_CONFIG) -> Any:
        region = region or self.region
        with aws_errors(f"AWS {service}"):
            make: Any = self._session.client  # typed per literal service name; this takes any
            return make(service, region_name=region, config=config, endpoint_url=self._endpoint_url)

    def boto3_session(self) -> boto3.Session:
        """The session itself, for an SDK built on boto3 (the sagemaker SDK of
        `imagebatch endpoint compile`) that makes its own clients from it."""
        return self._session

    def cost_explorer(self) -> CostExplorerClient:
        """Cost Explorer answers in us-east-1 whatever the stack's region."""
        client: CostExplorerClient = self._client("ce", "us-east-1")
        return client

    def pricing(self) -> PricingClient:
        """The Price List API from its us-east-1 endpoint (it answers for every region)."""
        client: PricingClient = self._client("pricing", "us-east-1")
        return client

    def s3(self) -> S3Client:
        client: S3Client = self._client("s3")
        return client

    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self._client("dynamodb")
        return client

    def cloudformation(self) -> CloudFormationClient:
        client: CloudFormationClient = self._client("cloudformation")
        return client

    def bedrock(self) -> BedrockClient:
        client: BedrockClient = self._client("bedrock")
        return client

    def ecr(self) -> ECRClient:
        client: ECRClient = self._client("ecr")
        return client

    def sqs(self) -> SQSClient:
        client: SQSClient = self._client("sqs")
        return client

    def lambda_invoker(self) -> LambdaClient:
        """For a synchronous Invoke of a function that may run its whole Timeout (ingest: 900
        s), sent once: botocore resending an Invoke whose reply was slow would run it again."""
        client: LambdaClient = self._client("lambda", config=_INVOKE_CONFIG)
        return client

    def service_quotas(self) -> ServiceQuotasClient:
        client: ServiceQuotasClient = self._client("service-quotas")
        return client

    def signed_get(
        self, url: str, query: Mapping[str, str] | None = None, *, timeout_s: float = 30
    ) -> SignedResponse:
        """GET `url` signed with SigV4 for execute-api (API Gateway IAM authorization)."""
        full = url + (f"?{urlencode(query)}" if query else "")
        scheme = urlsplit(full).scheme
        if scheme not in {"https", "http"}:
            raise AwsAccessError(f"{url} is not an http(s) URL (the stack output QueryApiUrl)")
        with aws_errors("signing the query API request"):
            credentials = self._session.get_credentials()
            if credentials is None:
                raise AwsAccessError(_NO_CREDENTIALS)
            request = AWSRequest(method="GET", url=full)
            SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(
                request
            )
        prepared = urllib.request.Request(full, headers=dict(request.headers.items()))  # noqa: S310 - scheme checked above
        try:
            with urllib.request.urlopen(prepared, timeout=timeout_s) as response:  # noqa: S310
                return SignedResponse(response.status, response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            return SignedResponse(exc.code, exc.read().decode("utf-8", errors="replace"))
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AwsAccessError(
                f"cannot reach the query API at {urlsplit(full).netloc}: {reason}"
            ) from exc


def json_body(response: SignedResponse) -> Any:
    """The JSON a 200 carried; anything else names its status."""
    try:
        return json.loads(response.body)
    except ValueError as exc:
        raise AwsAccessError(f"the query API answered {response.status} with no JSON") from exc

"""What `imagebatch doctor` asks AWS about an account before its first batch: facts only.

Each method makes one kind of call through a client it was given and returns what AWS said
as a small model; judging the facts (pass, or what to do) is the CLI's (commands/doctor.py).
A call AWS refuses or cannot answer leaves as an AwsAccessError (session.aws_errors), so a
check the person may not run is reported as such instead of ending the command.

The calls (shapes from botocore's service models):
- bedrock GetFoundationModelAvailability: offered in the region, authorized, entitled (the
  Marketplace subscription), agreement status; ListFoundationModelAgreementOffers: the offer
  token `aws bedrock create-foundation-model-agreement` needs.
- service-quotas ListServiceQuotas (bedrock, sagemaker): applied quota values.
- ecr DescribeImages: the endpoint's image; s3 HeadObject: the model archive.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from imagebatch.aws.session import aws_errors

if TYPE_CHECKING:
    from mypy_boto3_bedrock import BedrockClient
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_ecr.type_defs import ImageIdentifierTypeDef
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_service_quotas import ServiceQuotasClient

AgreementStatus = Literal["AVAILABLE", "PENDING", "NOT_AVAILABLE", "ERROR"]
# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>(:<tag>|@<digest>)
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


class ModelAccess(BaseModel):
    """GetFoundationModelAvailability's answer; offered=False when Bedrock does not know
    the model in this region (ResourceNotFoundException)."""

    model_config = ConfigDict(frozen=True)
    model_id: str
    offered: bool
    region_available: bool = False
    authorized: bool = False
    entitled: bool = False
    agreement: AgreementStatus = "NOT_AVAILABLE"
    agreement_error: str | None = None


class Quota(BaseModel):
    model_config = ConfigDict(frozen=True)
    code: str
    name: str
    value: float
    # "MINUTE" for a rate (requests per minute); None for a count (instances)
    period: str | None = None


class EcrImage(BaseModel):
    model_config = ConfigDict(frozen=True)
    uri: str
    account: str
    region: str
    repository: str
    tag: str | None = None
    digest: str | None = None


def parse_ecr_image(uri: str) -> EcrImage | None:
    """An ECR image URI in its parts; None for anything else (another registry, `unset`)."""
    match = ECR_IMAGE.match(uri)
    if match is None:
        return None
    return EcrImage(uri=uri, **match.groupdict())


class AccountProbe:
    """The account-level calls doctor makes, with the clients of the stack's region."""

    def __init__(
        self,
        bedrock: BedrockClient,
        quotas: ServiceQuotasClient,
        ecr: ECRClient,
        s3: S3Client,
    ) -> None:
        self._bedrock = bedrock
        self._quotas = quotas
        self._ecr = ecr
        self._s3 = s3

    def model_access(self, model_id: str) -> ModelAccess:
        with aws_errors(f"bedrock GetFoundationModelAvailability {model_id}"):
            try:
                got = self._bedrock.get_foundation_model_availability(modelId=model_id)
            except self._bedrock.exceptions.ResourceNotFoundException:
                return ModelAccess(model_id=model_id, offered=False)
        agreement = got["agreementAvailability"]
        return ModelAccess(
            model_id=model_id,
            offered=True,
            region_available=got["regionAvailability"] == "AVAILABLE",
            authorized=got["authorizationStatus"] == "AUTHORIZED",
            entitled=got["entitlementAvailability"] == "AVAILABLE",
            agreement=agreement["status"],
            agreement_error=agreement.get("errorMessage"),
        )

    def offer_token(self, model_id: str) -> str | None:
        """The public offer's token, for `aws bedrock create-foundation-model-agreement`."""
        with aws_errors(f"bedrock ListFoundationModelAgreementOffers {model_id}"):
            offers = self._bedrock.list_foundation_model_agreement_offers(
                modelId=model_id, offerType="PUBLIC"
            )["offers"]
        return offers[0]["offerToken"] if offers else None

    def service_quotas(self, service_code: str) -> list[Quota]:
        """Every applied quota of the service (ListServiceQuotas, all pages)."""
        quotas: list[Quota] = []
        with aws_errors(f"service-quotas ListServiceQuotas {service_code}"):
            pages = self._quotas.get_paginator("list_service_quotas")
            for page in pages.paginate(ServiceCode=service_code):
                for quota in page.get("Quotas", []):
                    if "Value" not in quota:
                        continue
                    quotas.append(
                        Quota(
                            code=quota.get("QuotaCode", ""),
                            name=quota.get("QuotaName", ""),
                            value=quota["Value"],
                            period=quota.get("Period", {}).get("PeriodUnit"),
                        )
                    )
        return quotas

    def image_exists(self, image: EcrImage) -> bool:
        # An image URI without a tag or digest means :latest, as docker pull reads it.
        image_id: ImageIdentifierTypeDef = (
            {"imageDigest": image.digest} if image.digest else {"imageTag": image.tag or "latest"}
        )
        with aws_errors(f"ecr DescribeImages {image.uri}"):
            try:
                found = self._ecr.describe_images(
                    registryId=image.account,
                    repositoryName=image.repository,
                    imageIds=[image_id],
                )
            except (
                self._ecr.exceptions.ImageNotFoundException,
                self._ecr.exceptions.RepositoryNotFoundException,
            ):
                return False
        return bool(found.get("imageDetails"))

    def object_exists(self, bucket: str, key: str) -> bool:
        with aws_errors(f"s3 HeadObject s3://{bucket}/{key}"):
            try:
                self._s3.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                # HeadObject has no error body to name the code, only the status
                if status == 404:
                    return False
                raise
        return True


__all__ = [
    "AccountProbe",
    "EcrImage",
    "ModelAccess",
    "Quota",
    "parse_ecr_image",
]

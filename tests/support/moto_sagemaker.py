"""An endpoint in moto's SageMaker, as the template deploys it: one variant, one initial
instance (DescribeEndpoint reports it), for the endpoint observer's tests."""

from __future__ import annotations

import boto3

# An instance type moto's SageMaker accepts for an endpoint config.
INSTANCE_TYPE = "ml.g4dn.xlarge"


def deploy_moto_endpoint(name: str, *, region: str, account: str = "123456789012") -> None:
    sagemaker = boto3.client("sagemaker", region_name=region)
    sagemaker.create_model(
        ModelName="images",
        ExecutionRoleArn=f"arn:aws:iam::{account}:role/sagemaker",
        PrimaryContainer={"Image": f"{account}.dkr.ecr.{region}.amazonaws.com/serving:1"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "images",
                "InstanceType": INSTANCE_TYPE,
                "InitialInstanceCount": 1,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def scale_to_zero(name: str, *, region: str) -> None:
    """What Application Auto Scaling does to the variant (UpdateEndpointWeightsAndCapacities)."""
    boto3.client("sagemaker", region_name=region).update_endpoint_weights_and_capacities(
        EndpointName=name,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}],
    )

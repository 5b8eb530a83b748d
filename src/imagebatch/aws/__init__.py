"""The AWS adapters: the only package that imports boto3 or botocore.

Client factories, the S3 store, the ledger (writes, queries, DynamoDB item helpers), catalog
state, endpoint usage, Step Functions (starter and task tokens), and the Bedrock and SageMaker
runtime calls. Domain code receives these objects; it never builds a client.
"""

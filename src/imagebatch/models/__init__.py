"""Pure data shared across the package: image records, the Bedrock model specs
(`data/bedrock_models.json`) and the SageMaker wire contract shared with the serving container.

Nothing here imports another part of imagebatch: every other package may depend on it.
"""

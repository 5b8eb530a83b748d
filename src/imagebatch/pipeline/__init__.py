"""One module per use case of the batch pipeline, each called by one thin Lambda handler:
ingest, generate (Bedrock chunk), sagemaker_submit and
sagemaker_result (the SageMaker chunk's two halves), finalize, contact sheet.

The batch pipeline knows nothing of catalogs: finalize offers an extension point instead."""

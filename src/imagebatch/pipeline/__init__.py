"""One module per use case of the batch pipeline, each called by one thin Lambda handler:
ingest, generate (Bedrock chunk), sagemaker_chunk (submit + record), finalize, contact sheet.

The batch pipeline knows nothing of catalogs: finalize offers an extension point instead."""

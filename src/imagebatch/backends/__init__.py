"""Image backends: Bedrock request families, retry with adaptive concurrency, quota-derived
concurrency plans, and the SageMaker endpoint's shape buckets and estimates."""

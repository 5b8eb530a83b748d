"""Helpers the test tiers share: moto fixtures (moto_fixtures), a moto SageMaker endpoint
(moto_sagemaker) and a simulated endpoint day (endpoint_day). Imported as `support.<module>`:
tests/ is on sys.path (pytest's rootdir conftest, mypy's mypy_path)."""

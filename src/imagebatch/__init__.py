"""imagebatch: batch image generation on AWS, priced per image.

This package is the domain shared by the Lambda functions (as a SAM layer) and the CLI.
It imports boto3, pydantic and Powertools only: torch and diffusers never reach a Lambda.
"""

__version__ = "0.1.0"

# Before any module makes its logger: settings.py defaults the Powertools service name.
from imagebatch import settings as _settings  # noqa: F401

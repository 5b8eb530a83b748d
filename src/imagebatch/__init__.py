"""imagebatch: batch image generation on AWS, priced per image.

This package is the domain shared by the Lambda functions (as a SAM layer) and the CLI.
It imports boto3, pydantic and Powertools only: torch and diffusers never reach a Lambda.
"""

import os

__version__ = "0.1.0"

# Every function's environment names the Powertools service (template.yaml Globals), and a
# module's `Logger(child=True)` binds to the service named when it is imported. A process that
# imports this package before such an environment is set (the CLI, which runs the handlers
# in-process; the tests) would otherwise bind those loggers to "service_undefined", whose
# lines never reach the functions' JSON handler: the template's name is the default here.
SERVICE_NAME = "imagebatch"
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", SERVICE_NAME)

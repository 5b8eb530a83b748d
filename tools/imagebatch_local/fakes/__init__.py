"""What cannot run here, played locally in its real wire format: Bedrock, a SageMaker async
endpoint, and the tiny model behind both."""

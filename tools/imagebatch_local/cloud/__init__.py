"""The local AWS: moto plays the services, template.yaml says what to create (docs/local-aws.md)."""

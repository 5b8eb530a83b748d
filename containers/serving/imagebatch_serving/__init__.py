"""The SageMaker serving application shared by the Neuron and the diffusers images."""

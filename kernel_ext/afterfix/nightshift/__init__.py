"""The simulated night shift: a Kubernetes API simulator with workloads that behave, a
deterministic reference SRE agent, and the incident scenarios it meets."""

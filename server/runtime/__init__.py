"""The process around the requests: startup adapters, drain on SIGTERM, exit on engine death."""

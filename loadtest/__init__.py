"""Load testing of any OpenAI-compatible server over HTTP: the `wattserve-bench` harness."""

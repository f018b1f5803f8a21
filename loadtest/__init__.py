"""Load testing and benchmarks that drive any OpenAI-compatible server over HTTP."""

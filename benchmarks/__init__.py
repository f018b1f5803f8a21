"""The project's own benchmarks, each run as `python -m benchmarks.<name>`; not part of the published wheel.

They drive wattserve (and vLLM's own server for comparison) through the published harness's public
modules (`loadtest`) and read GPU energy through the server's NVML meter. Nothing in `server`, `adapters`
or `loadtest` imports this package.
"""

__all__: list[str] = []

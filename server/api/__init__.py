"""The HTTP layer: the app, its lifespan, middleware, error handlers, SSE and the routes.

The only layer that imports the web framework (FastAPI, Starlette, uvicorn).
"""

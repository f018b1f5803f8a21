"""Contract checks: wattserve's wire shapes against OpenAI's published OpenAPI document."""

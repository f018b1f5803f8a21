"""Durable state in embedded SQLite: stored responses of the Responses API."""

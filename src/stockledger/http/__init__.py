"""The HTTP API: the app factory, authentication, strict request reading, problem+json
answers, the OpenAPI document, and the routes (one blueprint per resource)."""

"""Authentication and authorisation: credentials, tokens, budgets, the middleware, the auth routes."""

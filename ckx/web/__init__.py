"""The JSON web API over the action table."""

"""`ttc serve`: an OpenAI-compatible server with test-time compute behind it (see app.py)."""

"""CLI verbs: each module holds thin typer commands over library calls and a ``register(app)``."""

"""Placeholder: replaced by the broker helper."""
def register(app):
    pass

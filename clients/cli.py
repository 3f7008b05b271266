"""Placeholder: replaced by its owner."""


def register(app):
    pass

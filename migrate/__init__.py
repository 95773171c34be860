"""migrate: move a BIM 360 Field project into Procore."""

__version__ = "0.1.0"

"""newsletter: weekly essays from Markdown + YAML to responsive email, delivered through SendGrid."""

__version__ = "0.1.0"

"""whisperkd: distil OpenAI Whisper models into smaller, faster students."""

__version__ = "0.1.0"

"""PrefixScope: observability for prefix-tuned and LoRA variants of one frozen base model."""

__version__ = "0.1.0"

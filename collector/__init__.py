"""PrefixScope collector."""

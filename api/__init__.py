"""PrefixScope api."""

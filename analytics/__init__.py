"""PrefixScope analytics."""

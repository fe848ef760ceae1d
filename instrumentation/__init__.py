"""PrefixScope instrumentation."""

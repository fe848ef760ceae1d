"""What tests share: the real server as a subprocess, OTLP bodies and fixtures, stores and
lakes to read back, the browser. No test module imports another test module."""

"""Fixtures of the security tests: a test CA made with openssl, per-user credentials."""

"""The project's fake Twilio HTTP server (tests and benchmarks); see server.py."""

from tests.fake_twilio.server import ERRORS, TIMEOUT, Callback, FakeTwilio

__all__ = ["ERRORS", "TIMEOUT", "Callback", "FakeTwilio"]

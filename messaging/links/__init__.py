"""Tracked links: short per-recipient codes in message bodies, the redirect, and the clicks it records."""

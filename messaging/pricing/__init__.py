"""Prices: what the provider charged for each message (``fetch``), and the price table estimates read (``table``)."""

"""Tests run without the shared feature cache (each test's extraction really encodes) unless a test sets it."""

import os

os.environ.setdefault("BIVREC_FEATURE_CACHE", "off")

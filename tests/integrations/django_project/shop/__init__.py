"""The test project's one app: items in stock."""

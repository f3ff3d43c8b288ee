"""Taking models and datasets out of the app: exports and publishing."""

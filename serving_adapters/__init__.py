"""The request-time scorer: model bundles, feature fetch, dynamic batching, scoring service."""

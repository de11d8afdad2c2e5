"""quasar: serving_adapters."""

"""quasar: training_adapters."""

"""quasar: examples."""

"""quasar: registry."""

"""quasar: store."""

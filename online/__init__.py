"""quasar: online."""

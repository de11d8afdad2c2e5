"""quasar: quasar."""

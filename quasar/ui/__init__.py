"""The web catalog (``quasar ui``): every signal, request-time signal and feature service of a project, with
its versions, schema, owner, lineage (drawn), freshness against its target, recent runs with their validation
and quarantined batches, the last consistency or skew report and per-feature statistics of the last backfill.

``quasar.ui.app.create_app(platform)`` builds the FastAPI app (server-rendered pages, nothing fetched from
elsewhere); ``quasar.ui.catalog`` gathers what each page shows; ``quasar.ui.graph`` lays the lineage out and
draws it; ``quasar.ui.stats`` computes and caches the statistics; ``quasar.ui.charts`` draws them;
``quasar.ui.auth`` checks the services' bearer tokens, with a cookie for browsers.
"""

"""Dashboard: routes, templates, static files, auth, JSON API, live feed."""

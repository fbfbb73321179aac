"""`promptlab view`: a read-only local web app over the store.

    queries.py the read-only connection and the queries the pages need beyond the report's facts
    guard.py   loopback by default, a token anywhere else, the Content-Security-Policy
    app.py     the routes: templates/ (jinja2, autoescaped) that import the HTML report's macros
    static/    view.js, the one script: results filter, live counters and chart (polling)

The pages show what the HTML report shows, from the same facts and the same
templates (promptlab/reports/templates, one jinja2 environment from
promptlab.reports.to_html.environment), so the two never drift apart.
"""

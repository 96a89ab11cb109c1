"""The rollout report: one self-contained HTML file telling what a rollout did and why.

- :mod:`controller.report.data`: what the report shows, read from a store's records (pure).
- :mod:`controller.report.charts`: the plotly figures (pure).
- :mod:`controller.report.page`: the HTML page (pure; every text from data escaped).
- :mod:`controller.report.collect`: reading the store and the comparator's admin API, and
  writing the file (I/O).
"""

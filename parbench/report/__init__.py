"""The report: configurations from the store, statistics on stored draws, tables, plots and the HTML page."""

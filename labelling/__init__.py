"""Expert labelling of micrograph columns in the browser, consensus by majority vote, and models scored against
it (paper section 6 and Fig. 6: three experts labelled every column; majority voting gave the reference).

=================  ==========================================================================================
module             what it does
=================  ==========================================================================================
``db``             the project's SQLite database (WAL, one transaction per change): annotators, images, sites,
                   labels, the event log (audit and undo), finished images, model suggestions
``project``        the project directory; adding micrographs (any format ``inference`` reads) with candidate
                   sites from ``inference classify``'s sites.csv or the column finder; registering predictions
``server``         the FastAPI app and ``serve`` (uvicorn); the page is plain HTML/CSS/JS in ``static/``
``agreement``      Fleiss' kappa and pairwise Cohen's kappa (pure)
``consensus``      majority vote per site with ties and thin votes listed; truth files ``inference score`` reads
``report``         every registered model scored against the consensus: table and figure
``demo``           the ``make label`` demo project from a small simulated full field
=================  ==========================================================================================
"""

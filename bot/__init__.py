"""stylebot: the Discord front end of nst_engine."""

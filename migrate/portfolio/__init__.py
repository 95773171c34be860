"""A portfolio: many projects moved under one Procore quota (issue 18).

:mod:`.config` reads ``portfolio.toml``; :mod:`.project` runs one project's stages on the
shared quota; :mod:`.local` runs several at once on one machine (``migrate portfolio``).
"""

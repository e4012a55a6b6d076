"""The control room: the second seed's six panels, the outcome join and the leverage score.

`model` holds the shapes every surface renders (web page, `governor report`, JSON); the panel
queries compute them from the ledger.
"""

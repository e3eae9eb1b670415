"""The farm: reservations of pico boards for clients, state methods, events (control + worker).

Imports nothing heavy here: a plain pico driver imports :mod:`.registry` without pulling in
aiohttp or sqlite.
"""

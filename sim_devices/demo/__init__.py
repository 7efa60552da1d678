"""The demo and the community harness: a street of real gateways (``gateway.home``) on the
simulated world, the day's summary and its HTML report (``gridpeer demo``, the day tests).

The one room of ``sim_devices`` that imports the gateway; the gateway never imports it (the CLI's
``demo`` command does, inside the command). ``tests/test_layering.py`` holds both rules.
"""

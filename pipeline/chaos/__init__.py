"""Fault injection for the whole pipeline: scripted event streams, scenarios that kill, cut and
slow down real brokers and processes, a TCP proxy, and an MQTT packet fuzzer.

The scenario functions (:mod:`pipeline.chaos.scenarios`) are shared by ``pipeline chaos`` and
``tests/faults``; see ``docs/faults.md`` for what each one shows.
"""

"""Every use of a library's private internals, fenced: one module per library, each with the
exact versions it was verified on (a :class:`~pipeline.compat.versions.Fence`), a start-up check,
the private names it uses (checked to exist by ``tests/compat``) and when it can go.

- ``faust_app``: faust-streaming 0.15.3 + aiokafka 0.14.0. The consumer's commit (only what the
  agent processed), post-assignment seek report and fetch wait; ``faust.streams._current_event``.
  Another version: refuses to start.
- ``paho_uplink``: paho-mqtt 2.2.0. The uplink's client subclass overriding five private methods
  (lean receive path, batched PUBACKs); ``Client._out_messages`` length for chaos measurements.
  Another version: paho's plain client, no queue measurement.
- ``kafka_python``: kafka-python 3.0.12 (+ aiokafka's compiled CRC). ``KafkaProducer._metadata``
  read for the partition cache; the record-batch CRC function replaced by a compiled one.
  Another version: ``send()`` partitions itself, kafka-python's own CRC.

Nothing outside this package touches those private names (``tests/compat`` greps for them).
"""

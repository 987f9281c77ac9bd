"""Every exception this project raises, in one place.

Each class says whether retrying the same operation can succeed (``retriable``), the way
aiokafka's ``errors.py`` does: callers branch on that flag, never on message text. Retry loops
that read it: a camera source's reopen loop (``edge_stage/capture.py``), the verifier's wait for
the heavy model (``cloud_stage/verification.py``: a wrong model is not waited for), the topic
set-up's wait for Kafka (``local_stack/kafka_topics.py``). A failure inside a loop that is worth
another attempt but is not an exception is a value of its own (``model_download.Transient``).

    PipelineError
    ├── ConfigError            (not retriable: fix the config)
    ├── SchemaError            (not retriable: the record is bad; dead-letter it)
    │   ├── UnknownSchemaVersion
    │   └── PayloadTooLarge
    ├── SourceError            (retriable: reopen the camera with backoff)
    ├── ModelError             (not retriable: wrong or missing model files / metadata mismatch)
    ├── InferenceUnavailable   (retriable: model server down, slow or circuit open)
    ├── BrokerUnavailable      (retriable: MQTT or Kafka unreachable)
    └── LocalStackError        (not retriable: a local broker could not start)
"""

from __future__ import annotations


class PipelineError(Exception):
    retriable: bool = False


class ConfigError(PipelineError):
    retriable = False


class SchemaError(PipelineError):
    """A record does not match the shared schema; ``reason`` is a short machine-readable code."""

    retriable = False

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UnknownSchemaVersion(SchemaError):
    pass


class PayloadTooLarge(SchemaError):
    pass


class SourceError(PipelineError):
    retriable = True


class ModelError(PipelineError):
    retriable = False


class InferenceUnavailable(PipelineError):
    retriable = True


class BrokerUnavailable(PipelineError):
    retriable = True


class LocalStackError(PipelineError):
    retriable = False

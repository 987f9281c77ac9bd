"""Cloud stage: Kafka events -> heavy-model verification -> rules -> alerts (a Faust worker).

Data path, one module per step: ``consume`` (decode, dead-letter, dedupe) -> ``escalation``
(which events get a second opinion) -> ``inference_client`` + ``micro_batcher`` +
``circuit_breaker`` (TF Serving) -> ``verification`` (cloud score, fusion, verdict) ->
``rules_engine`` -> ``alerting`` (one alert per incident). ``app`` wires them into Faust
(:func:`~pipeline.cloud_stage.app.build_app`, :func:`~pipeline.cloud_stage.app.run_worker`);
``command`` adds ``pipeline cloud`` and ``pipeline config set``.
"""

#!/bin/bash
# Create the project's Kafka topics with the partition count the apps expect (idempotent).
# Run by the kafka-init service of docker-compose.yml (apache/kafka image) once the broker is
# healthy; the bridge and the cloud workers start only after it succeeded. The names and counts
# come from the same PIPELINE_KAFKA__* variables the apps read, so they cannot disagree.
#
#   KAFKA_BOOTSTRAP                  broker to talk to (default kafka:9092)
#   PIPELINE_KAFKA__EVENTS_TOPIC     default vision.events     (key = camera id)
#   PIPELINE_KAFKA__ALERTS_TOPIC     default vision.alerts
#   PIPELINE_KAFKA__CONFIG_TOPIC     default vision.config     (compacted: latest config per camera)
#   PIPELINE_KAFKA__DEAD_LETTER_TOPIC default vision.deadletter
#   PIPELINE_KAFKA__PARTITIONS       default 12: the most cloud workers (and bridges' producers'
#                                    parallelism) that can share the events topic
#   PIPELINE_KAFKA__REPLICATION_FACTOR default 1 (3 with deploy/compose/kafka-replicated.yml)
#   KAFKA_MIN_INSYNC_REPLICAS        default 1 (2 with three brokers)
# An existing topic with another partition count is an error, as in pipeline.local_stack.
set -euo pipefail

bootstrap=${KAFKA_BOOTSTRAP:-kafka:9092}
partitions=${PIPELINE_KAFKA__PARTITIONS:-12}
replication=${PIPELINE_KAFKA__REPLICATION_FACTOR:-1}
min_isr=${KAFKA_MIN_INSYNC_REPLICAS:-1}
topics_sh=${KAFKA_TOPICS_SH:-/opt/kafka/bin/kafka-topics.sh}

create() {  # name [extra --config ...]
  local name=$1; shift
  "$topics_sh" --bootstrap-server "$bootstrap" --create --if-not-exists --topic "$name" \
    --partitions "$partitions" --replication-factor "$replication" \
    --config "min.insync.replicas=$min_isr" "$@"
  local have
  have=$("$topics_sh" --bootstrap-server "$bootstrap" --describe --topic "$name" \
    | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n1)
  if [ "$have" != "$partitions" ]; then
    echo "create-topics: $name has $have partitions, expected $partitions" >&2
    exit 1
  fi
  echo "create-topics: $name ok ($partitions partitions, replication $replication, min.insync.replicas $min_isr)"
}

create "${PIPELINE_KAFKA__EVENTS_TOPIC:-vision.events}"
create "${PIPELINE_KAFKA__ALERTS_TOPIC:-vision.alerts}"
create "${PIPELINE_KAFKA__CONFIG_TOPIC:-vision.config}" --config cleanup.policy=compact
create "${PIPELINE_KAFKA__DEAD_LETTER_TOPIC:-vision.deadletter}" --config retention.ms=1209600000

"""The incident orchestrator's side of the Kafka door, with confluent-kafka.

Usage:
  kafka_orchestrator.py produce BROKER TOPIC < messages.jsonl
      each line {"key": "...", "value": <JSON, or a string sent as is>}; waits for every ack.
  kafka_orchestrator.py statuses BROKER TOPIC TIMEOUT KEY...
      reads TOPIC from the beginning until every KEY has a final status and 2 s more pass
      without a message (or TIMEOUT seconds), prints one JSON line per message:
      {"key", "partition", "offset", "value"}.
  kafka_orchestrator.py messages BROKER TOPIC COUNT TIMEOUT
      reads TOPIC from the beginning until COUNT messages (or TIMEOUT seconds), prints one JSON
      line per message: {"key", "value"} with the value as text.
  kafka_orchestrator.py lag BROKER TOPIC GROUP END
      prints the group's lag on TOPIC's partition 0: END (the offset after the last message
      produced) minus the committed offset. (tansu 0.6 reports a high watermark per batch,
      not per message, so the broker's own end offset cannot be used.)
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

FINAL = {"success", "failed", "timed_out", "cancelled", "rolled_back", "interrupted", "rejected", "dry_run"}


def produce(broker: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": broker, "enable.idempotence": True})
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    for line in sys.stdin:
        if not line.strip():
            continue
        item = json.loads(line)
        value = item["value"]
        payload = value if isinstance(value, str) else json.dumps(value)
        producer.produce(topic, key=item.get("key"), value=payload.encode(), on_delivery=delivered)
    producer.flush(30)
    if failures:
        sys.exit("delivery failed: " + "; ".join(failures))


def statuses(broker: str, topic: str, timeout: float, keys: list) -> None:
    consumer = Consumer({
        "bootstrap.servers": broker,
        "group.id": f"orchestrator-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    pending = set(keys)
    deadline = time.time() + timeout
    quiet = 0
    # Until every key has a final status, then on until the topic has been quiet for 2 s:
    # anything published after a final status (a repeat) is read too.
    while (pending or quiet < 4) and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            quiet += 1
            continue
        quiet = 0
        key = msg.key().decode() if msg.key() else None
        value = json.loads(msg.value())
        print(json.dumps({"key": key, "partition": msg.partition(), "offset": msg.offset(), "value": value}), flush=True)
        if value.get("status") in FINAL:
            pending.discard(key)
    consumer.close()


def messages(broker: str, topic: str, count: int, timeout: float) -> None:
    consumer = Consumer({
        "bootstrap.servers": broker,
        "group.id": f"reader-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen = 0
    deadline = time.time() + timeout
    while seen < count and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        key = msg.key().decode() if msg.key() else None
        print(json.dumps({"key": key, "value": msg.value().decode(errors="replace")}), flush=True)
        seen += 1
    consumer.close()


def lag(broker: str, topic: str, group: str, end: int) -> None:
    consumer = Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False})
    committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    consumer.close()
    print(end - (committed if committed >= 0 else 0))


def main() -> None:
    command = sys.argv[1]
    if command == "produce":
        produce(sys.argv[2], sys.argv[3])
    elif command == "statuses":
        statuses(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5:])
    elif command == "messages":
        messages(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif command == "lag":
        lag(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()

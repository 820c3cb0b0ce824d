"""Notifications that reach people (docs/monitoring.md, "Notifications"):
events.py (what to notify, pure), sender.py (which agent sends, pure),
ledger.py (the shared cursor and outbox in ZooKeeper), webhook.py (delivery
with retries and a dead-letter file), delivery.py (a thread per receiver),
notifier.py (the threads in the agent)."""

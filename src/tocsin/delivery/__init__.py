"""Gateway deliveries: Web Push, FCM, APNs and CAP forwarding (docs/delivery.md).

A phone in a pocket holds no connection; an alert reaches it through its platform's push
service, and downstream systems take CAP over HTTP. These deliveries are planned once per
cluster, never by every node's follower (that would send N copies on N nodes):

- the **planner** (`planner.py`) runs on every node on one durable consumer of the alert
  stream that all nodes share, so each alert is planned by one node. It waits until its own
  follower holds the alert (the cover, the references, the expiry are the follower's), asks
  the audience index for the push devices the cover reaches, and enqueues one message per
  device and per CAP route on the DELIVERIES work queue, each with the message id
  `<alert>.<channel>.<destination>`: a planner that dies mid-alert is replaced by another
  node's, which enqueues everything again and JetStream keeps none twice;
- **dispatchers** (`dispatcher.py`) on every node pull from the queue with explicit acks,
  urgent work first, read the device's push fields from the device bucket, and hand each
  delivery to its channel's `Sender` (channels/webpush.py, fcm.py, apns.py; CAP routes in
  `routes.py`, one ordered consumer per route). A sender answers a `Result`: sent, retry,
  rate-limited, permanent or token-gone; the dispatcher acks, naks with a full-jitter
  backoff (at least any Retry-After), gives up at the alert's expiry, or removes the
  registration;
- **progress** (`progress.py`): planned, sent, failed by reason and receipts, per alert and
  channel, summed over the nodes for `GET /api/v1/alerts/{id}`, metrics and `tocsin status`.
"""

"""The distributed harness's transport: feed shards, their tick batches in Redis, sessions.

Design (docs/deployment.md tells the whole story):

- A feed task holds one market-data shard under a Redis lease: a simulated market played at a
  chosen speed (or flat out), or one live Upstox V3 connection. It cuts the shard's ticks into
  numbered batches, stores each in Redis (fenced by the lease), puts a note on the account's
  wake stream and enqueues the batch's ingest (sampled ticks into PostgreSQL).
- The account's kernel lives in the one worker holding the account's lease (runtime/holder.py):
  woken by the note, it applies the batch tick by tick exactly as the embedded loop does, and
  commits with its checkpoint (each shard's cursor). Controls reach it on its control stream.
- A batch is kept by its feed until it is applied and ingested: if Redis loses batches, notes
  or tasks (a restart, a flush), the feed stores and announces them again; duplicates change
  nothing.

The result: one seed gives the same orders, trades and positions as the embedded harness.

The modules: `resources` (one worker process's settings, database and Redis), `shards` (a
shard's spec and progress in Redis, the note and ingest task per batch), `sim_feed` and
`live_feed` (the two kinds of feed task), `sessions` (starting a session and supervising its
feeds) and `ingest` (a batch's sampled ticks into the database).
"""

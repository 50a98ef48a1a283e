"""The real Redis: plain writes and a transactional pipeline, read back."""

from __future__ import annotations

import redis


def test_write_and_read(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(f"{redis_prefix}h", mapping={"a": "1.00", "b": "2.50"})
    assert client.hgetall(f"{redis_prefix}h") == {"a": "1.00", "b": "2.50"}


def test_transactional_pipeline_is_all_or_nothing(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = f"{redis_prefix}counter"
    with client.pipeline(transaction=True) as pipe:
        pipe.set(key, 10)
        pipe.incrby(key, 5)
        pipe.hset(f"{redis_prefix}other", "x", "y")
        assert pipe.execute() == [True, 15, 1]
    # A watched key changed by someone else aborts the whole transaction.
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(key)
        client.set(key, 99)
        pipe.multi()
        pipe.set(key, 0)
        try:
            pipe.execute()
            raised = False
        except redis.WatchError:
            raised = True
    assert raised and client.get(key) == "99"
